"""diagnose: planted bug patterns are named with their parameters; correct gradients get none.

Each property plants one mistake into a random reference gradient and checks that ``diagnose``
names its kind and parameters. References are drawn from a seeded generator (Hypothesis draws
the seed and the shapes), so "random" means generic: no accidental symmetries or equal
elements. Many draws add the numeric oracle's relative noise of 1e-8 to the reference.
"""

import json
import warnings

import numpy as np
import pytest
from hypothesis import assume, currently_in_test_context, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.diagnose import KINDS, diagnose

seeds = st.integers(0, 2**32 - 1)
noise_levels = st.sampled_from([0.0, 1e-8])  # exact (torch) or numeric-oracle reference
fast = settings(deadline=None)


def matrix(seed, rows, cols):
    """A generic reference gradient: normal values, none close to zero."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, cols))
    return np.sign(values) * (0.05 + np.abs(values))


def with_noise(r, noise, seed):
    return r * (1 + noise * np.random.default_rng([seed, 1]).standard_normal(r.shape))


def run(analytic, reference, *, inputs=None, usable=None, wrong=None, extra=None):
    """``diagnose`` on one input ``g`` (plus reference gradients of other inputs in ``extra``)."""
    if usable is None:
        usable = np.ones(reference.shape, dtype=bool)
    if wrong is None:
        wrong = usable & ~np.isclose(analytic, reference, rtol=1e-7, atol=1e-12)
    refs = {"g": reference, **(extra or {})}
    found = diagnose({"g": analytic}, refs, {"g": usable}, {"g": wrong}, inputs or {})
    if currently_in_test_context():
        note(repr(found.get("g")))
    return found.get("g")


def proportional(x, y, rtol=1e-4):
    """Whether ``x`` is (nearly) a multiple of ``y``: then a factor explains it first."""
    c = float(np.dot(x.ravel(), y.ravel()) / np.dot(y.ravel(), y.ravel()))
    return np.allclose(x, c * y, rtol=rtol, atol=rtol * np.abs(y).max())


# --- factors -------------------------------------------------------------------------------

SMALL = [(2.0, "2"), (0.5, "1/2"), (3.0, "3"), (1 / 3, "1/3"), (10.0, "10"), (-2.0, "-2"), (-0.5, "-1/2")]


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6), st.sampled_from(SMALL), noise_levels)
def test_small_factor_is_named(seed, rows, cols, factor_name, noise):
    factor, name = factor_name
    r = matrix(seed, rows, cols)
    d = run(factor * r, with_noise(r, noise, seed))
    assert d.kind == "scale"
    assert d.params["named"] == name
    assert d.params["factor"] == pytest.approx(factor)
    assert "fits" in d.evidence


@fast
@given(seeds, st.integers(11, 300), st.sampled_from([1, -1]), st.booleans(), noise_levels)
def test_batch_size_factor_is_named_after_its_axis(seed, m, sign, reciprocal, noise):
    r = matrix(seed, 4, 3)
    factor = sign * (1 / m if reciprocal else m)
    inputs = {"X": np.zeros((m, 4)), "y": np.zeros(m, dtype=np.int64), "W": r}
    d = run(factor * r, with_noise(r, noise, seed), inputs=inputs)
    expected = ("-" if sign < 0 else "") + ("1/m" if reciprocal else "m") + f" (X.shape[0] = {m})"
    assert d.kind == "scale" and d.params["named"] == expected
    assert d.params["axes"] == ["X.shape[0]"]


@fast
@given(seeds, st.integers(2, 99), st.integers(2, 1000))
def test_actual_over_nominal_batch_size_is_named(seed, actual, nominal):
    assume(nominal > actual)
    r = matrix(seed, 3, 4)
    d = run(actual / nominal * r, r, inputs={"X": np.zeros((actual, 1))})
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(actual / nominal)
    if nominal == actual * actual and actual >= 3:
        expected = f"1/m (X.shape[0] = {actual})"
    elif nominal % actual == 0 and nominal // actual <= 10:
        expected = f"1/{nominal // actual}"
    else:
        expected = f"{actual}/{nominal} (X.shape[0] = {actual} over {nominal})"
    assert d.params["named"] == expected


@fast
@given(seeds, st.floats(1.05, 9.5).filter(lambda c: all(abs(c - k) > 0.02 for k in range(2, 10))))
def test_unnamed_factor_is_reported_with_its_value(seed, factor):
    r = matrix(seed, 3, 4)
    d = run(factor * r, r)
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(factor)


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6), noise_levels)
def test_sign_flip(seed, rows, cols, noise):
    r = matrix(seed, rows, cols)
    d = run(-r, with_noise(r, noise, seed))
    assert d.kind == "sign" and d.params == {"factor": -1.0, "named": "-1"}


# --- layout and mix-ups --------------------------------------------------------------------


@fast
@given(seeds, st.integers(2, 7), noise_levels, st.booleans())
def test_transpose_of_a_square_matrix(seed, n, noise, with_kinks):
    r = matrix(seed, n, n)
    assume(not proportional(r.T, r, rtol=1e-3))  # symmetric or antisymmetric: a factor fits
    usable = np.ones(r.shape, dtype=bool)
    if with_kinks and n > 2:
        usable[0, 1] = False  # a kink: the oracle's value there is meaningless
    reference = np.where(usable, with_noise(r, noise, seed), 1e6)
    d = run(r.T, reference, usable=usable)
    assert d.kind == "transpose" and d.params == {"axes": [1, 0], "layout": "transposed"}


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_transposed_values_reshaped_into_a_non_square_shape(seed, rows, cols):
    assume(rows != cols)
    r = matrix(seed, rows, cols)
    d = run(r.T.reshape(r.shape), r)
    assert d.kind == "transpose" and d.params["layout"] == "transposed, then reshaped"


@fast
@given(seeds, st.integers(2, 6), st.integers(1, 6), noise_levels)
def test_gradients_swapped_between_two_inputs(seed, rows, cols, noise):
    g, h = matrix(seed, rows, cols), matrix(seed + 1, rows, cols)
    assume(not proportional(h, g) and not proportional(g, h))
    refs = {"g": with_noise(g, noise, seed), "h": h}
    mask = {"g": np.ones(g.shape, dtype=bool), "h": np.ones(g.shape, dtype=bool)}
    found = diagnose({"g": h, "h": g}, refs, mask, mask, {})
    note(repr(found))
    assert found["g"].kind == "swapped" and found["g"].params["with"] == "h"
    assert found["h"].kind == "swapped" and found["h"].params["with"] == "g"


# --- zeros and subsets ---------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6))
def test_zero_everywhere(seed, rows, cols):
    d = run(np.zeros((rows, cols)), matrix(seed, rows, cols))
    assert d.kind == "zero" and d.params["fraction"] == 1.0


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6), st.data())
def test_zero_on_a_subset(seed, rows, cols, data):
    r = matrix(seed, rows, cols)
    zeroed = data.draw(hnp.arrays(bool, r.shape))
    assume(zeroed.any() and not zeroed.all())
    d = run(np.where(zeroed, 0.0, r), r)
    assert d.kind == "zero"
    assert d.params["count"] == zeroed.sum()
    assert d.params["fraction"] == pytest.approx(zeroed.mean())


@fast
@given(seeds, st.integers(3, 6), st.integers(3, 6), st.data(), st.sampled_from(["rows", "columns"]),
       st.sampled_from([("x", 1.5), ("x", 2.0), ("+", 0.7)]))
def test_wrong_rows_or_columns_are_a_mask(seed, rows, cols, data, axis, change):
    r = matrix(seed, rows, cols)
    size = rows if axis == "rows" else cols
    picked = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=size - 1)))
    hit = np.isin(np.arange(size), picked)
    sel = hit[:, None] if axis == "rows" else hit[None, :]
    op, value = change
    a = np.where(sel, r * value if op == "x" else r + value, r)
    d = run(a, r)
    assert d.kind == "mask"
    assert d.params[axis] == picked
    if op == "x":
        assert d.params["factor"] == pytest.approx(value)
    else:
        assert d.params["offset"] == pytest.approx(value)


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_missing_relu_mask_is_described_by_the_input(seed, rows, cols):
    rng = np.random.default_rng([seed, 2])
    x = rng.normal(size=(rows, cols))
    upstream = matrix(seed, rows, cols)
    assume((x > 0).any() and (x < 0).any())
    d = run(upstream, upstream * (x > 0), inputs={"x": x})  # backward forgot the ReLU mask
    assert d.kind == "mask"
    assert d.params["where"][0] == "where x < 0"
    assert "where the reference is zero" in d.params["where"]


@fast
@given(seeds, st.integers(10, 40), st.integers(0, 10**6))
def test_scattered_minority_is_a_mask_with_its_fraction(seed, n, pick):
    r = matrix(seed, 1, n)[0]
    rng = np.random.default_rng(pick)
    bad = rng.random(n) < 0.3
    assume(4 <= bad.sum() <= n // 2)
    a = np.where(bad, r + rng.normal(size=n), r)
    d = run(a, r)
    assert d.kind == "mask" and d.params["fraction"] == pytest.approx(bad.mean())


# --- additive terms ------------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(3, 6), st.floats(0.1, 5) | st.floats(-5, -0.1))
def test_constant_term(seed, rows, cols, k):
    r = matrix(seed, rows, cols)
    d = run(r + k, r)
    assert d.kind == "additive" and d.params["term"] == "constant"
    assert d.params["value"] == pytest.approx(k)


@fast
@given(seeds, st.integers(3, 6), st.integers(3, 6), noise_levels)
def test_rank_one_term(seed, rows, cols, noise):
    rng = np.random.default_rng([seed, 3])
    r = matrix(seed, rows, cols)
    term = np.outer(rng.normal(size=rows) + 2, rng.normal(size=cols) + 2)
    d = run(r + term, with_noise(r, noise, seed))
    assert d.kind == "additive" and d.params["term"] == "rank one"
    assert d.params["size"] == pytest.approx(np.abs(term).max(), rel=1e-6)


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_bias_term_per_column(seed, rows, cols):
    rng = np.random.default_rng([seed, 4])
    r = matrix(seed, rows, cols)
    offsets = rng.normal(size=cols) + 3
    d = run(r + offsets[None, :], r)
    assert d.kind == "additive" and d.params["term"] == "per column"


@fast
@given(seeds, st.integers(3, 40), st.integers(2, 6))
def test_missing_minus_one_hot_labels(seed, m, classes):
    rng = np.random.default_rng([seed, 5])
    p = rng.random((m, classes))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, classes, m)
    onehot = np.eye(classes)[y]
    reference = (p - onehot) / m
    d = run(p / m, reference, inputs={"scores": p, "y": y})
    assert d.kind == "additive" and d.params["term"] == "one-hot(y)"
    assert d.params["factor"] == pytest.approx(1 / m)


@fast
@given(seeds, st.floats(1e-3, 1.0))
def test_missing_regularization_term(seed, lam):
    W = matrix(seed + 7, 4, 3)
    r = matrix(seed, 4, 3) + 2 * lam * W
    assume(not proportional(r - 2 * lam * W, r))
    d = run(r - 2 * lam * W, r, inputs={"W": W, "X": np.zeros((16, 4))})
    assert d.kind == "additive" and d.params["term"] == "proportional to W"
    assert d.params["factor"] == pytest.approx(-2 * lam)


# --- no diagnosis --------------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6))
def test_correct_gradient_gets_no_diagnosis(seed, rows, cols):
    r = matrix(seed, rows, cols)
    a = with_noise(r, 1e-10, seed)
    assert run(a, r, wrong=np.zeros(r.shape, dtype=bool)) is None
    # Flagged by another oracle, but equal to the reference: no bug to name either.
    assert run(a, r, wrong=np.ones(r.shape, dtype=bool)) is None


@fast
@given(seeds, st.integers(1, 6), st.integers(2, 6))
def test_unrelated_values_get_no_entry(seed, rows, cols):
    r, a = matrix(seed, rows, cols), matrix(seed + 1, rows, cols)
    inputs = {"X": np.zeros((rows, cols)), "y": np.zeros(rows, dtype=np.int64)}
    assert run(a, r, inputs=inputs, wrong=np.ones(r.shape, dtype=bool)) is None


# --- robustness ----------------------------------------------------------------------------


def test_an_odd_oracle_value_is_an_outlier_not_a_different_bug():
    r = matrix(0, 10, 10)
    reference = r.copy()
    reference[3, 4] *= 1.3  # the oracle failed at one element
    d = run(2 * r, reference)
    assert d.kind == "scale" and d.params["named"] == "2"
    assert "fits 99/100" in d.evidence and "(3, 4)" in d.evidence


def test_float32_gradients_are_diagnosed_at_float32_precision():
    r = matrix(1, 5, 4)
    a = (4 * r).astype(np.float32).astype(np.float64) * (1 + 1e-5)
    d = run(a, r, inputs={"X": np.zeros((4, 5), dtype=np.float32)})
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(4, rel=1e-4)
    assert d.params["named"] == "m (X.shape[0] = 4)"


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
wild = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)


@fast
@given(shapes, st.data())
def test_never_raises_and_returns_json_ready_diagnoses(shape, data):
    a = data.draw(hnp.arrays(np.float64, shape, elements=wild))
    r = data.draw(hnp.arrays(np.float64, shape, elements=st.one_of(wild, st.just(0.0))))
    usable = data.draw(hnp.arrays(bool, shape))
    wrong = data.draw(hnp.arrays(bool, shape))
    other = data.draw(hnp.arrays(np.float64, shape, elements=wild))
    labels = data.draw(hnp.arrays(np.int64, shape[:-1] if shape else (), elements=st.integers(-1, 4)))
    inputs = {"g": a, "h": other, "y": labels, "f": np.zeros(shape, dtype=np.float32)}
    with np.errstate(over="ignore"):
        doubled = other * 2  # may overflow to inf: a non-finite reference is part of the test
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = diagnose({"g": a, "h": other}, {"g": r, "h": doubled}, {"g": usable},
                         {"g": wrong, "h": np.ones(shape, dtype=bool)}, inputs)
    assert set(found) <= {"g", "h"}
    if not wrong.any():
        assert "g" not in found
    for d in found.values():
        assert d.kind in KINDS and d.summary and d.evidence
        json.dumps(d.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda: diagnose({}, {}, {}, {}, {}),
        lambda: diagnose({"g": np.ones(3)}, {"g": np.ones(4)}, {}, {"g": np.ones(3, bool)}, {}),
        lambda: diagnose({"g": np.ones(3)}, {}, {}, {"g": np.ones(3, bool)}, {}),
        lambda: diagnose({"g": np.float64(2.0)}, {"g": np.float64(1.0)}, {}, {"g": np.True_}, {}),
    ],
    ids=["empty", "shapes differ", "no reference", "0-d"],
)
def test_degenerate_calls_give_an_answer(call):
    found = call()
    assert all(d.kind in KINDS for d in found.values())


# --- through the harness -------------------------------------------------------------------


def test_diagnosis_reaches_the_result_its_text_and_its_json():
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
    with pytest.raises(gradcheck.GradientMismatch, match="off by a factor of 2"):
        gradcheck.assert_gradients(forward, backward, {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))})


def test_transposed_weight_gradient_of_a_square_layer_through_the_harness():
    rng = np.random.default_rng(2)
    W, X = rng.normal(size=(4, 4)), rng.normal(size=(4, 6))

    def forward(W, X):
        return ((W @ X) ** 2).sum()

    def backward(dout, W, X):
        dD = 2 * (W @ X)
        return {"W": X @ dD.T, "X": W.T @ dD}  # dW should be dD @ X.T

    result = gradcheck.check_gradients(forward, backward, {"W": W, "X": X})
    (summary,) = [s for s in result.inputs if not s.ok]
    assert summary.diagnosis.kind == "transpose"


def test_correct_and_unrelated_gradients_through_the_harness():
    rng = np.random.default_rng(3)
    inputs = {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))}

    def forward(W, X):
        return (W @ X).sum()

    def backward(dout, W, X):
        d = np.full((3, 2), dout)  # the upstream gradient of every element of W @ X
        return {"W": d @ X.T, "X": W.T @ d}

    ok = gradcheck.check_gradients(forward, backward, inputs)
    assert ok.ok and all(s.diagnosis is None for s in ok.inputs)
    noise = rng.normal(size=(3, 4))
    bad = gradcheck.check_gradients(forward, lambda d, W, X: {**backward(d, W, X), "W": noise}, inputs)
    assert not bad.ok and bad.inputs[0].diagnosis is None
    assert "likely bug: no simple pattern" in str(bad)
