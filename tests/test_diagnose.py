"""diagnose: planted bug patterns are named with their parameters; correct gradients get none."""

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.diagnose import diagnose

elements = st.floats(-10, 10, allow_nan=False).filter(lambda v: abs(v) > 1e-2)


@st.composite
def reference_matrices(draw, square=False):
    rows = draw(st.integers(2, 6))
    cols = rows if square else draw(st.integers(2, 6))
    return draw(hnp.arrays(np.float64, (rows, cols), elements=elements))


def run(analytic, reference, wrong=None, inputs=None, extra=None):
    """diagnose on one input ``g`` (plus ``extra`` reference gradients of other inputs)."""
    if wrong is None:
        wrong = ~np.isclose(analytic, reference, rtol=1e-9, atol=0)
    refs = {"g": reference, **(extra or {})}
    return diagnose(
        {"g": analytic}, refs, {"g": np.ones(reference.shape, bool)}, {"g": wrong}, inputs or {}
    ).get("g")


@settings(max_examples=40, deadline=None)
@given(reference_matrices(), st.sampled_from([2.0, 0.5, 3.0, 0.25]))
def test_constant_factor_is_named(r, factor):
    d = run(factor * r, r)
    note(repr(d))
    assert d.kind == "scale"
    assert d.params["factor"] == pytest.approx(factor)
    assert d.params["named"] == ("1/" + str(int(1 / factor)) if factor < 1 else str(int(factor)))


@settings(max_examples=30, deadline=None)
@given(reference_matrices())
def test_batch_size_factor_is_named_after_the_axis(r):
    m = 7
    d = run(r / m, r, inputs={"X": np.zeros((m, 3))})
    assert d.kind == "scale" and "X.shape[0]" in d.params["named"]


@settings(max_examples=30, deadline=None)
@given(reference_matrices())
def test_sign_flip(r):
    assert run(-r, r).kind == "sign"


@settings(max_examples=30, deadline=None)
@given(reference_matrices(square=True))
def test_transpose_of_square_matrices(r):
    if np.allclose(r, r.T, rtol=1e-3) or np.allclose(r, -r.T, rtol=1e-3):
        return  # symmetric: a transpose is indistinguishable from the right answer or a sign
    c = float(np.dot(r.T.ravel(), r.ravel()) / np.dot(r.ravel(), r.ravel()))
    if np.allclose(r.T, c * r, rtol=1e-4, atol=1e-4):
        return
    assert run(r.T, r).kind == "transpose"


@settings(max_examples=30, deadline=None)
@given(reference_matrices())
def test_swapped_with_another_input_of_the_same_shape(r):
    other = r[::-1, ::-1] + 1.0
    c = float(np.dot(other.ravel(), r.ravel()) / np.dot(r.ravel(), r.ravel()))
    assume(not np.allclose(other, c * r, rtol=1e-4, atol=1e-4))  # else a factor explains it
    d = run(other, r, extra={"h": other})
    assert d.kind == "swapped" and d.params["with"] == "h"


@settings(max_examples=30, deadline=None)
@given(reference_matrices(), st.data())
def test_a_wrong_row_is_a_mask(r, data):
    row = data.draw(st.integers(0, r.shape[0] - 1))
    a = r.copy()
    a[row] *= 1.5
    d = run(a, r)
    assert d.kind == "mask" and d.params["rows"] == [row]


@settings(max_examples=30, deadline=None)
@given(reference_matrices())
def test_zero_everywhere(r):
    assert run(np.zeros_like(r), r).kind == "zero"


@settings(max_examples=30, deadline=None)
@given(reference_matrices(), hnp.arrays(np.float64, 6, elements=elements))
def test_additive_term_per_column(r, offsets):
    a = r + offsets[None, : r.shape[1]]
    d = run(a, r)
    assert d.kind == "additive"


@settings(max_examples=30, deadline=None)
@given(reference_matrices())
def test_correct_gradient_gets_no_diagnosis(r):
    noisy = r * (1 + 1e-10)
    assert run(noisy, r, wrong=np.zeros(r.shape, bool)) is None


def test_unrelated_values_get_no_simple_pattern():
    rng = np.random.default_rng(0)
    r, a = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    assert run(a, r) is None


def test_diagnosis_reaches_the_result_and_its_text():
    def forward(W, X):
        return W @ X

    def backward(dout, W, X):
        return {"W": 2 * dout @ X.T, "X": W.T @ dout}

    rng = np.random.default_rng(1)
    result = gradcheck.check_gradients(forward, backward, {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))})
    (summary,) = [s for s in result.inputs if not s.ok]
    assert summary.diagnosis.kind == "scale" and summary.diagnosis.params["named"] == "2"
    assert "likely bug (scale)" in str(result)
    assert result.to_dict()["inputs"][0]["diagnosis"]["kind"] == "scale"
