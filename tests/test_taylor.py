"""The Taylor test: the remainder of a first-order expansion shrinks as h^2 along a right gradient
and as h along a wrong one; it clears a mismatch only the numeric oracle saw where it shows that
oracle wrong, and confirms one where it does not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import gradcheck
from gradcheck.evaluate import Evaluator
from gradcheck.numeric import machine_eps, step_sizes
from gradcheck.render import taylor_text
from gradcheck.result import TaylorEvidence
from gradcheck.taylor import observed_order, remainder_test
from gradcheck.tolerance import TAYLOR_START, TAYLOR_STEPS

EPS = float(np.finfo(np.float64).eps)
STEPS = TAYLOR_START * 0.5 ** np.arange(TAYLOR_STEPS)


@pytest.mark.parametrize(
    ("remainders", "floor", "order"),
    [
        (3.0 * STEPS**2, 0.0, 2.0),
        (0.5 * STEPS, 0.0, 1.0),
        (0.1 * STEPS**3, 0.0, 3.0),
        # curvature at the larger steps, a first-order error at the smaller: the smallest steps decide
        (10 * STEPS**2 + 1e-2 * STEPS, 0.0, 1.0),
        # under the floor from the fourth step on: the slope over the three above it
        (3.0 * STEPS**2, 3.0 * STEPS[3] ** 2 * 1.01, 2.0),
        (1e-20 * STEPS, 1e-12, None),  # all at the noise floor
    ],
    ids=["h^2", "h", "h^3", "h^2 then h", "some under the floor", "all noise"],
)
def test_the_observed_order_is_the_slope_over_the_smallest_steps_above_the_floor(remainders, floor, order):
    found = observed_order(STEPS, remainders, np.full(STEPS.shape, floor))
    assert (found is None and order is None) or found == pytest.approx(order, abs=0.02)


def quadratic_and_sine(a, b):
    def forward(x):
        return np.sum(a * x * x + np.sin(b * x))

    def gradient(x):
        return 2 * a * x + b * np.cos(b * x)

    return forward, gradient


POINTS = st.integers(1, 6).flatmap(lambda n: st.tuples(*[
    st.lists(st.floats(lo, hi), min_size=n, max_size=n).map(np.array)
    for lo, hi in ((-2.0, 2.0), (-2.0, 2.0), (0.5, 3.0), (-1.0, 1.0))
]))


def _away_from_zero(v):
    """A direction with every coordinate at least 0.1 in size."""
    return v + np.where(v >= 0, 0.1, -0.1)


def _taylor(x, a, b, v, error):
    forward, gradient = quadratic_and_sine(a, b)
    ev = Evaluator(forward, {"x": x})
    f0 = ev.value()
    slope = float(np.dot(gradient(x), v)) + error
    return remainder_test(ev, {"x": v}, slope, f0, EPS * max(1.0, abs(f0)), EPS, input="x", label="random")


@given(POINTS)
def test_a_right_gradient_has_order_two_or_leaves_only_noise(drawn):
    x, a, b, v = drawn
    evidence = _taylor(x, a, b, _away_from_zero(v), 0.0)
    note(f"order {evidence.order}, remainders {evidence.remainders}")
    assert evidence.verdict in ("right", "noise")


@given(POINTS, st.floats(0.01, 1.0), st.sampled_from([-1.0, 1.0]))
def test_a_gradient_off_by_a_percent_along_the_direction_has_order_one(drawn, relative, sign):
    x, a, b, v = drawn
    v = _away_from_zero(v)
    _, gradient = quadratic_and_sine(a, b)
    size = float(np.sum(np.abs(gradient(x) * v))) + float(np.sum(np.abs(v)))  # the directional slope's scale
    evidence = _taylor(x, a, b, v, sign * relative * size)
    note(f"order {evidence.order}, remainders {evidence.remainders}")
    assert evidence.verdict == "wrong" and evidence.order == pytest.approx(1.0, abs=0.05)


# A forward that is wrong exactly where the numeric oracle steps (x0 +- h): x^2 there moved up and
# down by h, so the central difference reads 3 instead of 2 and its Richardson estimate 3.33
# with an error estimate of 1. Nothing else evaluates there.
X0 = 1.0
H = float(step_sizes(np.array([X0]), machine_eps(np.float64))[0])


def trapped_square(x):
    x = float(np.asarray(x))
    return x * x + (H if x == X0 + H else -H if x == X0 - H else 0.0)


def square_backward(dout, x):
    return {"x": dout * 2.0 * np.asarray(x)}


def test_a_false_failure_only_the_numeric_oracle_sees_is_cleared_with_a_note():
    result = gradcheck.check_gradients(trapped_square, square_backward, {"x": np.float64(X0)})
    assert result.ok and result.verdict == "pass", str(result)
    assert result.oracles == ("numeric",)  # numpy-only: no exact oracle to say otherwise
    cleared = [e for e in result.taylor if e.cleared]
    assert [(e.input, e.direction, e.verdict) for e in cleared] == [("x", "x", "right")]
    assert cleared[0].order == pytest.approx(2.0, abs=0.05)
    assert any("cleared by the Taylor test" in n for n in result.notes)
    assert "x: remainder order 2.00 (right); cleared" in str(result)


def cubic(x):
    return np.sum(np.asarray(x) ** 3)


def test_a_failure_only_the_numeric_oracle_sees_is_confirmed_when_the_order_is_one():
    result = gradcheck.check_gradients(cubic, lambda dout, x: {"x": dout * 3.3 * np.asarray(x) ** 2},
                                       {"x": np.array([1.0, -2.0])})
    assert not result.ok and result.oracles == ("numeric",)
    assert result.taylor and all(e.verdict == "wrong" and not e.cleared for e in result.taylor)
    assert {e.direction for e in result.taylor} >= {"random"}
    assert "Taylor test: x along a random direction: remainder order 1.00 (wrong)" in str(result)


def test_an_exact_oracle_failure_gets_evidence_but_is_never_cleared():
    def forward(x):
        return (x**3).sum()

    result = gradcheck.check_gradients(forward, lambda dout, x: {"x": dout * 3.3 * x**2}, {"x": np.array([1.0, -2.0])})
    assert not result.ok and "torch" in result.oracles
    assert result.taylor and not any(e.cleared for e in result.taylor)


@pytest.mark.parametrize(("relative", "shown"), [(2e-8, True), (1e-13, False)])
def test_evidence_stands_next_to_marginal_passes_only(relative, shown):
    result = gradcheck.check_gradients(cubic, lambda dout, x: {"x": dout * 3 * (1 + relative) * np.asarray(x) ** 2},
                                       {"x": np.array([1.0, 2.0])})
    assert result.ok
    assert bool(result.taylor) is shown
    if shown:
        assert result.taylor[0].verdict == "right"  # an error of 2e-8 is far below what it resolves
        assert result.to_dict()["taylor"][0]["order"] == pytest.approx(2.0, abs=0.05)


def test_the_evidence_reads_as_an_order_and_a_verdict():
    assert taylor_text(TaylorEvidence("W", "random", 1.0, "wrong")) == (
        "W along a random direction: remainder order 1.00 (wrong)")
    assert taylor_text(TaylorEvidence("W", "W[1, 2]", 2.004, "right")) == "W[1, 2]: remainder order 2.00 (right)"
    assert taylor_text(TaylorEvidence("b", "random", None, "noise")) == (
        "b along a random direction: remainder at the noise floor (noise)")


def test_where_an_exact_oracle_ran_a_pass_is_marginal_by_its_error_not_the_numeric_oracles():
    """The notes' two-layer net at a random point: torch agrees to rounding, and the numeric
    oracle's own error (here above a tenth of rtol 1e-7, within its error estimate) is no sign of
    a marginal pass, so no Taylor test runs."""
    from gradcheck_reference import twolayer

    rng = np.random.default_rng(0)
    inputs = {"X": rng.normal(size=(16, 32)), "y": rng.integers(0, 10, 16),
              "W1": rng.normal(size=(32, 16)) * 0.3, "W2": rng.normal(size=(16, 10)) * 0.3}
    result = gradcheck.check_gradients(twolayer.softmax_net, twolayer.softmax_net_backward, inputs, wrt=("W1", "W2"))
    assert result.ok and "torch" in result.oracles
    numeric = max(s.worst["numeric"] for s in result.inputs)
    assert numeric * 10 >= 1e-7, numeric  # the numeric oracle alone would call it marginal
    assert not result.taylor


def test_a_pass_below_float64_is_held_to_its_budget_and_gets_no_taylor_test():
    """A float32 gradient's tolerance has no rtol (its measured budget replaces it), so no pass
    of it is marginal to an rtol."""
    from gradcheck_reference import twolayer

    rng = np.random.default_rng(0)
    inputs = {"X": rng.normal(size=(8, 16)).astype(np.float32), "y": rng.integers(0, 4, 8),
              "W1": (rng.normal(size=(16, 8)) * 0.3).astype(np.float32),
              "W2": (rng.normal(size=(8, 4)) * 0.3).astype(np.float32)}
    def float32_only(dout, **given):  # a kernel that runs in float32 only: its budget alone holds it
        if given["W1"].dtype != np.float32:
            raise TypeError("float32 only")
        return twolayer.softmax_net_backward(dout, **given)

    result = gradcheck.check_gradients(twolayer.softmax_net, float32_only, inputs, wrt=("W1", "W2"))
    assert result.ok and all(s.budget for s in result.inputs)
    assert not result.taylor
