"""Structured upstream gradients: the backward at distinct-row, zero-row, one-hot and masked
``dout``s, held to the numeric vector-Jacobian product; and the reading of ``dout`` named behind
a mismatch (a scalar, the wrong axis, ignored) as diagnosis kind "upstream"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from custom_functions import first_sin, linear, row_scale, scalar_sin

import gradcheck
from gradcheck.evaluate import Evaluator
from gradcheck.upstream import STRUCTURES, numeric_jvp, structured

RNG = np.random.default_rng(1)
X = torch.tensor(RNG.normal(size=(4, 3)))
W = torch.tensor(RNG.normal(size=(3, 5)))
S = torch.tensor(RNG.normal(size=4))


# -- the structures ---------------------------------------------------------------------------

def rows(d):
    return d.reshape(d.shape[0], -1)


STRUCTURE_RULES = [
    ("distinct rows", lambda d: all(len(set(r)) == 1 for r in rows(d)) and len({r[0] for r in rows(d)}) == len(d)),
    ("zero rows", lambda d: rows(d)[0].all() and not rows(d)[1::2].any()),
    ("one-hot rows", lambda d: all(np.count_nonzero(r) == 1 for r in rows(d))),
    ("masked", lambda d: {float(v) for v in np.unique(d)} == {0.0, 1.0 / np.count_nonzero(rows(d)[:, 0])}
     and all(len(set(r)) == 1 for r in rows(d))),
]


@pytest.mark.parametrize("shape", [(4, 3), (6,), (3, 2, 2)])
@pytest.mark.parametrize("structure, holds", STRUCTURE_RULES, ids=[r[0] for r in STRUCTURE_RULES])
def test_each_structured_dout_has_its_structure(shape, structure, holds):
    douts = structured(shape, seed=0)
    assert set(douts) == set(STRUCTURES)
    assert douts[structure].shape == shape
    assert holds(douts[structure])


def test_a_one_row_output_gets_the_structures_of_one_row():
    assert set(structured((1, 5), seed=0)) == {"distinct rows", "one-hot rows"}


def test_the_numeric_jvp_is_the_forward_s_directional_derivative():
    A = RNG.normal(size=(3, 4))
    x = RNG.normal(size=4)
    ev = Evaluator(lambda x: np.tanh(A @ x), {"x": x})
    jvp = numeric_jvp(ev, "x", ev.output(), 2.0**-52, np.random.default_rng(0))
    exact = (1 - np.tanh(A @ x) ** 2) * (A @ jvp.direction)
    assert np.all(np.abs(jvp.value - exact) <= jvp.error)
    assert np.max(jvp.error) < 1e-8
    assert np.array_equal(ev.work["x"], x)  # the point is restored


def test_a_direction_across_a_kink_is_drawn_again_then_given_up():
    ev = Evaluator(lambda x: np.abs(x), {"x": np.zeros(3)})
    assert numeric_jvp(ev, "x", ev.output(), 2.0**-52, np.random.default_rng(0)) is None


# -- the reading of dout behind a mismatch ----------------------------------------------------

READINGS = [
    # (forward, inputs, reading, axes, words in the summary)
    (scalar_sin, {"x": X}, "sum", "all", "treats the upstream gradient as a scalar"),
    (first_sin, {"x": X}, "first", "all", "constant dout equal to its first element"),
    (row_scale, {"x": X, "s": S}, "mean", [0], "broadcasts the upstream gradient along the wrong axis"),
]


@pytest.mark.parametrize("forward, inputs, reading, axes, words", READINGS, ids=[r[2] for r in READINGS])
def test_a_backward_reading_dout_through_a_reduction_is_named(forward, inputs, reading, axes, words):
    result = gradcheck.check_gradients(forward, None, inputs)
    assert not result.ok
    for summary in result.inputs:
        assert summary.diagnosis.kind == "upstream", str(result)
        assert summary.diagnosis.params["reading"] == reading and summary.diagnosis.params["axes"] == axes
        assert words in summary.diagnosis.summary
    assert "likely bug (upstream)" in str(result)


def square(x):
    return x * x


def test_a_backward_that_ignores_dout_is_named():
    result = gradcheck.check_gradients(square, lambda dout, x: {"x": 2 * x}, {"x": X.numpy()})
    (summary,) = result.inputs
    assert summary.diagnosis.kind == "upstream" and summary.diagnosis.params["reading"] == "ignored"


@pytest.mark.parametrize("backward, kind", [
    (lambda dout, x: {"x": 3 * x * dout}, "scale"),
    (lambda dout, x: {"x": 0 * x}, "zero"),  # reads no dout either, but zero says more
])
def test_a_wrong_gradient_that_reads_dout_whole_keeps_its_own_diagnosis(backward, kind):
    result = gradcheck.check_gradients(square, backward, {"x": X.numpy()})
    (summary,) = result.inputs
    assert summary.diagnosis.kind == kind, str(result)


def skips_zero_rows(dout, x):
    """Right wherever ``dout``'s rows are nonzero; where a row is all zero it returns ones there
    (a kernel that skips the row and leaves its output buffer as it was)."""
    g = 2 * x * dout
    g[~np.asarray(dout).any(axis=1)] = 1.0
    return {"x": g}


def test_a_backward_wrong_only_at_a_structured_dout_fails_there():
    result = gradcheck.check_gradients(square, skips_zero_rows, {"x": X.numpy()})
    assert not result.ok
    (summary,) = result.inputs
    assert summary.diagnosis.kind == "upstream" and summary.diagnosis.params["structure"] == "zero rows"
    (mismatch,) = result.mismatches
    assert mismatch.index == () and mismatch.against == ("numeric",)
    assert "wrong at a structured upstream gradient (zero rows) though right at a random one" in str(result)


@pytest.mark.parametrize("forward, backward, inputs", [
    (linear, None, {"x": X, "W": W}),
    (square, lambda dout, x: {"x": 2 * x * dout}, {"x": X.numpy()}),
    (lambda x: np.abs(x), lambda dout, x: {"x": np.sign(x) * dout}, {"x": np.array([[0.0, 1.0], [-2.0, 0.0]])}),
])
def test_correct_backwards_pass_the_structured_douts(forward, backward, inputs):
    result = gradcheck.check_gradients(forward, backward, inputs)
    assert result.ok, str(result)
    assert all(s.diagnosis is None for s in result.inputs)
