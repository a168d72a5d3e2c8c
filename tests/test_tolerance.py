"""The tolerance rule, a row per rule: inputs, the allowance expected, and why.

The expected values are written out by hand (not from the module's constants), so changing any
constant or term of a rule fails its row. Below the table: what the rules are for, end to end
(a kink found by the jump test, directional sensitivity over 30 seeds, the rounding allowed
against torch, the noise term of the Richardson error, the diagnosis' agreement filter).
"""

from __future__ import annotations

import sys
import warnings

import array_api_compat
import numpy as np
import pytest

import gradcheck
import gradcheck.check
import gradcheck.full
from gradcheck.diagnose import diagnose
from gradcheck.numeric import central_pass, richardson
from gradcheck.result import Tolerance
from gradcheck.tolerance import (
    MAX_REPEATS,
    REPEATS,
    TAYLOR_FIT_POINTS,
    TAYLOR_START,
    TAYLOR_STEPS,
    absolute_floor,
    allowed,
    batch_agreement_limit,
    batching_pays,
    condition_allowance,
    condition_magnitude,
    consistency_allowance,
    coupling_limit,
    default_tolerance,
    detectable_error,
    determinism_limit,
    directional_allowance,
    dtype_eps,
    fit_rtol,
    forward_precision_lost,
    jump_limit,
    jvp_rounding,
    kink_found,
    low_precision_allowance,
    low_precision_tolerance,
    marginal,
    noise_error,
    one_sided_noise,
    outputs_differ,
    own_run_limit,
    precision,
    relative_error,
    reorder_limit,
    taylor_clears,
    taylor_floor,
    taylor_verdict,
    torch_rounding,
)

EPS64, EPS32, EPS16 = 2.0**-52, 2.0**-23, 2.0**-10
F64 = Tolerance(rtol=1e-7, atol=None, floor=1e-12, rounding=0.0)


def one(x):
    return float(np.asarray(x).reshape(-1)[0])


# (rule, value computed, value expected, why)
RULES = [
    # -- per-dtype tolerances
    ("float64 defaults", lambda: default_tolerance(8), Tolerance(1e-7, None, 1e-12, 0.0),
     "a float64 gradient wrong by a relative 1e-6 must fail: rtol ten times below"),
    ("float32 defaults", lambda: default_tolerance(4), Tolerance(1e-3, None, 1e-4, 0.0),
     "~8000 float32 roundoff units: room for a float32 backward's sums"),
    ("float16 defaults", lambda: default_tolerance(2), Tolerance(3e-2, None, 1e-2, 0.0),
     "~30 float16 roundoff units, 4 of bfloat16's"),
    ("below 4 bytes is float16", lambda: default_tolerance(1), Tolerance(3e-2, None, 1e-2, 0.0),
     "an 8-bit float is at least as coarse as float16"),
    ("other sizes are float64", lambda: default_tolerance(16), Tolerance(1e-7, None, 1e-12, 0.0),
     "an extended or unknown precision is held to float64's"),
    ("unit roundoff per dtype", lambda: tuple(precision(n).eps for n in (8, 4, 2)), (EPS64, EPS32, EPS16),
     "the rounding floors scale with the dtype's roundoff"),
    ("rounding floor, float64", lambda: default_tolerance(8, global_scale=3.0).rounding, 64 * EPS64 * 3.0,
     "64 roundoff units of the largest gradient over all inputs, for a gradient that is exactly 0"),
    ("rounding floor, float32", lambda: default_tolerance(4, global_scale=3.0).rounding, 64 * EPS32 * 3.0,
     "the floor follows the dtype's roundoff"),
    ("no rounding floor from an infinite scale", lambda: default_tolerance(8, global_scale=np.inf).rounding, 0.0,
     "an overflowing gradient sets no floor (it is a fault elsewhere)"),
    ("rtol=0 is zero, not the default", lambda: default_tolerance(8, rtol=0.0, atol=0.0),
     Tolerance(0.0, 0.0, 1e-12, 0.0),
     "None means the default; 0 means 0"),
    ("scaled floor", lambda: absolute_floor(F64, 5.0), 5e-12,
     "the floor is relative to the input's largest gradient"),
    ("rounding floor wins when larger", lambda: absolute_floor(Tolerance(1e-7, None, 1e-12, 1e-9), 5.0), 1e-9,
     "an input whose gradient is exactly 0 has no scale of its own"),
    ("atol replaces both floors", lambda: absolute_floor(Tolerance(1e-7, 0.0, 1e-12, 1e-9), 5.0), 0.0,
     "a caller's atol is the floor, 0 included"),
    ("the allowance", lambda: one(allowed(np.array([2.0]), np.array([-3.0]), 1e-9, F64, 4.0)),
     1e-7 * 3.0 + 1e-12 * 4.0 + 1e-9,
     "rtol of the larger magnitude, plus the floor, plus the oracle's own error"),
    ("the allowance, per element", lambda: tuple(allowed(np.array([1.0, 0.0]), np.array([0.0, 0.0]),
                                                         np.array([0.0, 2e-9]), F64, 1.0)),
     (1e-7 + 1e-12, 1e-12 + 2e-9), "element-wise, with an error per element"),
    ("relative error", lambda: one(relative_error(np.array([1.0]), np.array([1.25]), 1.0)), 0.25 / 1.25,
     "measured against the larger magnitude"),
    ("relative error of a tiny element", lambda: one(relative_error(np.array([1e-6]), np.array([0.0]), 2.0)),
     1e-6 / 2e-3, "against a thousandth of the largest gradient, not its own size"),
    ("relative error of zeros", lambda: one(relative_error(np.array([0.0]), np.array([0.0]), 0.0)), 0.0,
     "nothing to measure is no error"),
    ("diagnosis fit per dtype", lambda: tuple(fit_rtol(n) for n in (8, 4, 2, 1, 16)),
     (1e-6, 1e-3, 3e-2, 3e-2, 1e-6), "a fit survives the numeric oracle's own error (~1e-8 in float64)"),
    # -- the numeric oracle's error
    ("central difference error", lambda: noise_error(1e-16, 1e-5), 4e-11,
     "4 sigma/h: about four standard deviations of the rounding in the difference"),
    ("jump limit", lambda: jump_limit(2.0, 1e-16, 1e-5), 2e-3 + 1.6e-10,
     "a thousandth of the gradient's size plus 16 sigma/h: h L'' stays below it where L is smooth"),
    ("Richardson error of pure noise", lambda: one(richardson(0.0, *np.zeros((4, 1)), np.array([1e-5]), 1e-16)[1]),
     4e-11, "with D(h) == D(2h) the error is still the noise's"),
    ("Richardson error of a truncation", lambda: one(richardson(0.0, np.array([3e-5]), np.array([-1e-5]),
                                                                np.array([2e-5]), np.array([-2e-5]),
                                                                np.array([1e-5]), 0.0)[1]),
     1.0, "|D(h) - D(2h)|: D(h) = 2, D(2h) = 1"),
    # -- kinks and ties
    ("one-sided noise", lambda: one_sided_noise(1e-16, 1e-5), 5e-11,
     "2 r(h) - r(2h): 2*2 + 1 rounding units of sigma/h"),
    ("a gap above 12 noise units is a kink", lambda: bool(kink_found(12.5, 0.0, 1.0)), True,
     "the two one-sided slopes carry at most 10 units"),
    ("a gap of 12 noise units is not", lambda: bool(kink_found(12.0, 0.0, 1.0)), False,
     "12 units is the margin over rounding"),
    ("a gap above a quarter of the move is a kink", lambda: bool(kink_found(1.0, 3.9, 1e-3)), True,
     "at a kink the slopes hardly move between h and 2h"),
    ("a gap of a quarter of the move is not", lambda: bool(kink_found(1.0, 4.0, 1e-3)), False,
     "where L is curved the slopes move by |L''| h; their gap is O(h^3)"),
    ("Richardson finds the kink of |t|", lambda: bool(richardson(0.0, np.array([1e-5]), np.array([1e-5]),
                                                                 np.array([2e-5]), np.array([2e-5]),
                                                                 np.array([1e-5]), 1e-17)[2][0]),
     True, "slopes -1 | 1, unmoved between the steps"),
    ("coupling limit", lambda: coupling_limit(10.0, 1e-9), 1e-2 + 1e-9,
     "a thousandth of the slopes' size plus their noise"),
    # -- against torch
    ("torch rounding of the noise", lambda: one(torch_rounding(1e-13, eps=EPS64, sensitivity=1.0, dout_size=1.0,
                                                               xscale=np.array([2.0]))),
     16 * 1e-13 / 2.0, "16 units of the forward's noise over the input's scale"),
    ("torch rounding of the terms", lambda: one(torch_rounding(0.0, eps=EPS64, sensitivity=1e4, dout_size=1.0,
                                                               xscale=np.array([2.0]))),
     16 * EPS64 * 1e4 / 2.0, "or of the terms a backward adds up, when those are larger"),
    ("torch rounding of the upstream gradient", lambda: one(torch_rounding(0.0, eps=EPS64, sensitivity=0.0,
                                                                           dout_size=3.0, xscale=np.array([0.5]))),
     16 * EPS64 * 3.0 / 0.5, "below eps |dout| / |x| a gradient moves L by less than rounding"),
    # -- a gradient computed in a low precision
    ("low precision: twice the trusted error", lambda: list(low_precision_allowance(
        np.array([3e-6, 4e-6, 0.0, 0.0]), 0.0, eps=EPS32)),
     [2 * 3e-6, 2 * 4e-6, 2 * 2.5e-6, 2 * 2.5e-6],
     "k = 2 times the same-dtype error; an element that rounded exactly gets the rms (2.5e-6)"),
    ("low precision: the ulps floor", lambda: one(low_precision_allowance(np.zeros(3), np.array([8.0]), eps=EPS32)),
     4 * EPS32 * 8.0, "4 roundoff units of the magnitudes summed where the trusted one is exact"),
    ("roundoff per dtype, by name", lambda: tuple(dtype_eps(n) for n in ("float64", "float32", "float16", "bfloat16",
                                                                        "int64")),
     (EPS64, EPS32, EPS16, 2.0**-7, EPS64), "bfloat16 keeps 8 bits; any other name is held to float64's"),
    ("magnitudes summed, estimated", lambda: list(condition_magnitude(np.array([3.0, -4.0, 0.0]))),
     [2 * (3.0 + np.sqrt(25 / 3)), 2 * (4.0 + np.sqrt(25 / 3)), 2 * np.sqrt(25 / 3)],
     "2 x (|g_j| + rms(g)): an element below the rms is a sum of terms that cancel"),
    ("condition budget: the change next to the point", lambda: one(condition_allowance(
        np.array([1.0]), np.array([1e-5]), eps=EPS32)), 2 * 1e-5 + 4 * EPS32 * 2 * (1.0 + 1.0),
     "twice the gradient's own largest change over the neighbours, plus 4 ulps of the magnitudes"),
    ("condition budget: its floor", lambda: one(condition_allowance(np.array([1.0]), np.array([0.0]), eps=EPS16)),
     4 * EPS16 * 2 * 2.0, "16 ulps of |g| + rms(g) where the gradient does not move"),
    ("low-precision tolerance", lambda: low_precision_tolerance(EPS32, global_scale=3.0),
     Tolerance(0.0, None, 0.0, 4 * EPS32 * 3.0), "no rtol or scaled floor (the budget replaces them); "
     "4 ulps of the largest gradient for an exact zero"),
    ("low-precision tolerance, the caller's", lambda: low_precision_tolerance(EPS16, rtol=0.1, atol=0.0),
     Tolerance(0.1, 0.0, 0.0, 0.0), "rtol and atol given still apply"),
    ("forward precision: half the digits kept", lambda: (forward_precision_lost(3.4e-4, EPS32),
                                                         forward_precision_lost(3.5e-4, EPS32)),
     (False, True), "sqrt(eps32) = 3.45e-4: more is precision loss"),
    ("forward precision in bfloat16", lambda: (forward_precision_lost(0.088, 2.0**-7),
                                               forward_precision_lost(0.089, 2.0**-7)),
     (False, True), "sqrt(2^-7) = 0.0884"),
    ("a low-dtype run against its own float64 run", lambda: list(own_run_limit(np.array([3.0, -4.0, 0.0]),
                                                                               eps=EPS32)),
     [EPS32**0.5 * 2 * (3.0 + np.sqrt(25 / 3)), EPS32**0.5 * 2 * (4.0 + np.sqrt(25 / 3)),
      EPS32**0.5 * 2 * np.sqrt(25 / 3)],
     "past half the dtype's digits (sqrt(eps32) = 3.45e-4) of 2 (|g| + rms(g)): a low-dtype-only bug"),
    ("... in bfloat16", lambda: one(own_run_limit(np.array([1.0]), eps=2.0**-7)), 2.0**-3.5 * 2 * 2.0,
     "sqrt(2^-7) = 0.088 of the magnitudes"),
    ("low precision: another factor", lambda: one(low_precision_allowance(np.array([1e-3]), 0.0, eps=EPS16,
                                                                          factor=3.0)),
     3e-3, "the caller's k"),
    # -- directional derivatives
    ("directional allowance", lambda: directional_allowance(F64, 2.0, 1.0, -1.5, 1e-9, 3.0),
     (1e-7 * 1.5 + 1e-12 * 2.0 * 3.0 + 1e-9, 2.5 / 1.5),
     "the floor of each of the coordinates moved (sum |v_i| = 3) adds up"),
    ("directional relative error of a tiny derivative",
     lambda: directional_allowance(F64, 1.0, 0.0, 1e-6, 0.0, 10.0)[1],
     1e-6 / 1e-2, "measured against a thousandth of the scale summed over the coordinates"),
    ("single-element error a +-1 direction catches",
     lambda: detectable_error(F64, 2.0, 1.5, 3.0, 1e-9, 0.5),
     (1e-7 * (1.5 + 1e-9) + 1e-12 * 2.0 * 3.0 + 3 * 1e-9) / ((1 - 1e-7) * 0.5),
     "rtol of |a . v| (the correct rest), the floor of each coordinate moved, three units of noise; "
     "over the smallest scale an element moves by"),
    ("... with the caller's atol", lambda: detectable_error(Tolerance(1e-7, 1e-8, 1e-12), 2.0, 0.0, 4.0, 0.0, 2.0),
     1e-8 * 4.0 / ((1 - 1e-7) * 2.0), "atol replaces the scaled floor, per coordinate moved"),
    ("... where noise dominates", lambda: detectable_error(F64, 0.0, 0.0, 1.0, 2e-6, 1.0),
     (1e-7 * 2e-6 + 3 * 2e-6) / (1 - 1e-7), "a zero gradient: only the noise is left"),
    ("... with a low-precision budget along the direction",
     lambda: detectable_error(F64, 0.0, 0.0, 1.0, 0.0, 0.5, slack=3e-4), 3e-4 / ((1 - 1e-7) * 0.5),
     "the budget of a gradient computed below float64 widens the allowance it must exceed"),
    # -- the forward at the point
    ("determinism", lambda: determinism_limit(EPS64, 3.0), 64 * EPS64 * 3.0,
     "64 roundoff units of the output's size: a reordered sum, not a random forward"),
    ("batched values", lambda: batch_agreement_limit(EPS64, 2.0), 1e3 * EPS64 * 2.0,
     "vmap's kernels round differently, by far less than 1000 units"),
    ("batched values of a zero output", lambda: batch_agreement_limit(EPS64, 0.0), 1e3 * EPS64 * 1e-300,
     "agree exactly"),
    ("batched values of a small output", lambda: batch_agreement_limit(EPS64, 1e-6), 1e3 * EPS64 * 1e-6,
     "relative to the output's own size, however small"),
    ("batching that costs 0.7 of the loop pays", lambda: batching_pays(1.4, 2.0), True,
     "a clear saving"),
    ("batching that costs more does not", lambda: batching_pays(1.42, 2.0), False,
     "timing noise could make it slower"),
    ("torch and numpy outputs within 1e-8 agree", lambda: outputs_differ(4e-8, 4.0), False,
     "relative to the output's size, 1e-8 itself included"),
    ("past 1e-8 they differ", lambda: outputs_differ(3.1e-8, 3.0), True,
     "a different function: torch's gradient is no oracle"),
    # -- the same gradient computed again (layouts, repeats)
    ("reorder limit", lambda: one(reorder_limit(np.array([-2.0]), np.array([1e-15]), eps=EPS64)),
     64 * EPS64 * 2.0 + 1e-15, "64 roundoff units of the element, plus the rounding of the terms it adds up"),
    ("reorder limit in float32", lambda: one(reorder_limit(np.array([3.0]), 0.0, eps=EPS32)), 64 * EPS32 * 3.0,
     "in the roundoff of the gradient's dtype"),
    ("a backward's spread widens the floor",
     lambda: absolute_floor(Tolerance(1e-7, None, 1e-12, 0.0, spread=3e-12), 5.0), 5e-12 + 3e-12,
     "a nondeterministic backward's measured spread is added to the allowance"),
    ("... and a caller's atol", lambda: absolute_floor(Tolerance(1e-7, 1e-9, 1e-12, 0.0, spread=3e-12), 5.0),
     1e-9 + 3e-12, "added, not replaced"),
    ("repeats of the backward", lambda: (REPEATS, MAX_REPEATS), (3, 8),
     "at least 3 runs (torch's gradcheck compares 2); 8 to measure a spread once the runs differ"),
    ("a small output is measured against 1", lambda: (outputs_differ(0.9e-8, 0.01), outputs_differ(1.1e-8, 0.01)),
     (False, True), "an absolute 1e-8 below size 1"),
    # -- forward mode
    ("a JVP against an exact oracle's", lambda: one(jvp_rounding(np.array([1e-15]), 2.0, EPS64)), 16 * 1e-15 * 2.0,
     "16 units of each output element's noise per unit of the tangent's relative moves, summed (2)"),
    ("a JVP's crumbs", lambda: one(jvp_rounding(np.array([0.0]), 2.0, EPS64)), 16 * EPS64 * 2.0,
     "an output that rounds to 0 still allows eps: below it two correct JVPs may disagree entirely"),
    ("jvp against backward", lambda: consistency_allowance(F64, 2.0, -3.0, 10.0, EPS64), 1e-7 * 3.0 + 64 * EPS64 * 10.0,
     "rtol of the larger <v, J u>, plus 64 roundoff units of the products summed on both sides"),
    ("jvp against backward with an atol", lambda: consistency_allowance(Tolerance(1e-7, 1e-9, 1e-12), 2.0, 1.0,
                                                                        10.0, EPS64, 1e-3),
     1e-7 * 2.0 + 1e-9, "a caller's atol replaces the rounding floor and the elements' floors"),
    ("jvp against backward, the elements' floors", lambda: consistency_allowance(F64, 0.0, 2e-19, 0.0, EPS64, 3e-16),
     1e-7 * 2e-19 + 3e-16, "a gradient that should be 0 may carry its floor's rounding along each unit of the tangent"),
    # -- the Taylor test
    ("Taylor steps", lambda: (TAYLOR_STEPS, TAYLOR_START, TAYLOR_FIT_POINTS), (8, 1e-3, 3),
     "eight halvings from a move of 1e-3 of the scale: the smallest, 7.8e-6, stays above the numeric step"),
    ("Taylor noise floor", lambda: one(taylor_floor(1e-16, EPS64, np.array([-2.0]))), 16 * (2e-16 + 2 * EPS64),
     "16 times the rounding of L(x + h v), L(x) and h <g, v>"),
    ("order 1.75 is a right gradient", lambda: taylor_verdict(1.75), "right", "h^2, give or take a quarter"),
    ("order 1.74 is unclear", lambda: taylor_verdict(1.74), "unclear", "between the thresholds"),
    ("order 1.25 is a wrong gradient", lambda: taylor_verdict(1.25), "wrong", "h, give or take a quarter"),
    ("order 1.26 is unclear", lambda: taylor_verdict(1.26), "unclear", "between the thresholds"),
    ("no order is noise", lambda: taylor_verdict(None), "noise", "no remainder above the floor"),
    ("a pass within 10 of rtol is marginal", lambda: (marginal(1e-8, 1e-7), marginal(0.99e-8, 1e-7),
                                                      marginal(None, 1e-7)),
     (True, False, False), "a relative error a tenth of the tolerance or more"),
    ("Taylor clears at 10 times the remainder", lambda: (taylor_clears("right", 1e-9, 1e-5, 1e-3),
                                                         taylor_clears("right", 1.01e-9, 1e-5, 1e-3)),
     (True, False), "the claimed error would leave h |claimed| = 1e-8, ten times the 1e-9 seen"),
    ("Taylor clears on noise, never on order 1",
     lambda: (taylor_clears("noise", 0.0, 1e-5, 1.0), taylor_clears("wrong", 0.0, 1e-5, 1.0),
              taylor_clears("unclear", 0.0, 1e-5, 1.0)),
     (True, False, False), "only evidence that no first-order error shows clears"),
]


@pytest.mark.parametrize("rule, value, expected, why", RULES, ids=[r[0] for r in RULES])
def test_each_rule_gives_its_allowance(rule, value, expected, why):
    got = value()
    exact = isinstance(expected, bool | str | Tolerance) or (isinstance(expected, tuple)
                                                              and isinstance(expected[0], bool))
    if exact:
        assert got == expected, why
    else:
        assert np.asarray(got, dtype=float) == pytest.approx(np.asarray(expected, dtype=float), rel=1e-12, abs=0.0), why


def test_relative_errors_of_zeros_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rel = relative_error(np.array([0.0, 1.0, np.inf]), np.array([0.0, 0.0, np.inf]), 0.0)
    assert rel[:2].tolist() == [0.0, 1.0] and np.isnan(rel[2])


def test_a_relative_error_of_1e_6_exceeds_the_float64_allowance():
    """The sensitivity the defaults promise, with the numeric oracle's typical error added."""
    a = np.array([0.3, -2.0, 5.0])
    tol = default_tolerance(8, global_scale=5.0)
    wrong = a * (1 + 1e-6)
    assert np.all(np.abs(wrong - a) > allowed(wrong, a, 1e-10 * np.abs(a), tol, 5.0))
    right = a * (1 + 1e-8)
    assert np.all(np.abs(right - a) <= allowed(right, a, 1e-10 * np.abs(a), tol, 5.0))


def test_the_detection_noise_holds_with_the_stated_probability():
    """Each of the ``DETECTION_NOISE`` noise terms in a single-element detection is at most one
    ``CENTRAL_NOISE`` unit of sigma/h except with Gaussian odds: the worst of them, the Richardson
    estimate's rounding, has a standard deviation of 0.95 sigma/h. Together they stay below
    ``POWER_DELTA``, the probability the statement gives."""
    from math import erfc, sqrt

    from gradcheck.tolerance import CENTRAL_NOISE, DETECTION_NOISE, POWER_DELTA

    assert POWER_DELTA == 1e-3
    tail = erfc(CENTRAL_NOISE / 0.95 / sqrt(2))  # P(|N(0, 0.95)| > CENTRAL_NOISE)
    assert DETECTION_NOISE * tail < POWER_DELTA / 10


# -- a kink found by the jump test --------------------------------------------------------------

def abs_sum(x):
    return np.abs(x).sum()


def sign_backward(dout, x):
    return {"x": dout * np.sign(x)}


def test_abs_at_zero_with_a_sign_backward_is_a_kink_found_by_the_jump_test(monkeypatch):
    x = np.array([0.0, 1.5, -2.0])
    result = gradcheck.check_gradients(abs_sum, sign_backward, {"x": x}, mode="full")
    assert result.verdict == "pass", str(result)
    assert not result.mismatches
    assert [k.index for k in result.kinks] == [(0,)]
    assert (result.kinks[0].left, result.kinks[0].right) == pytest.approx((-1.0, 1.0))
    # Only the second difference tells: the central difference at 0 is sign(0) = 0 exactly.
    from gradcheck.evaluate import Evaluator

    ev = Evaluator(abs_sum, {"x": x})
    central = central_pass(ev, "x", ev.value(), EPS64)
    assert central.gradient[0] == 0.0
    assert abs(central.jump[0]) > jump_limit(2.0, EPS64 * 3.5, central.step[0])
    # Without the jump test the kink goes unseen (and its element is compared as smooth).
    monkeypatch.setattr(gradcheck.full, "jump_limit", lambda *args: np.inf)
    blind = gradcheck.check_gradients(abs_sum, sign_backward, {"x": x}, mode="full")
    assert not blind.kinks


# -- directional sensitivity, 30 seeds ----------------------------------------------------------

def test_directional_mode_catches_a_random_sign_error_of_1e_6_in_every_seed():
    """A gradient off by a relative 1e-6 with random signs, per element, on a small ReLU net:
    each of W1 and W2 is flagged at all 30 seeds. One direction instead of three misses it at
    6 of them (an error spread over every element shows only through ``a . v``), so this pins
    ``directional.DIRECTIONS`` above one (30 checks of 48 parameters: ~1.5 s)."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from relu_net import WRT, backward, forward, inputs

    missed = []
    for seed in range(30):
        rng = np.random.default_rng([seed, 7])
        point = inputs(seed, m=4, n=6, d=4, k=3)
        signs = {name: rng.choice([-1.0, 1.0], size=point[name].shape) for name in WRT}

        def wrong(dout, signs=signs, **kw):
            return {name: g * (1 + 1e-6 * signs[name]) for name, g in backward(dout, **kw).items()}

        result = gradcheck.check_gradients(forward, wrong, point, mode="directional", wrt=WRT, seed=seed)
        missed += [(seed, s.name) for s in result.inputs if s.ok]
    assert missed == []


# -- the rounding allowed against torch ---------------------------------------------------------

def quiet_x(x, y):
    """L = sum(y^2) / 2, with x in it at zero weight: x's exact gradient is 0."""
    xp = array_api_compat.array_namespace(x, y)
    return xp.sum(y * y) / 2 + xp.sum(x * 0.0)


@pytest.mark.parametrize("units, verdict", [(4, "pass"), (64, "fail")])
def test_a_gradient_that_should_be_zero_may_carry_rounding_crumbs(units, verdict):
    """x's gradient is exactly 0; a backward that adds up the 100 terms of L in another order
    than torch may leave crumbs of a few rounding units of those terms over x's scale
    (eps * sum y^2 / |x|, the allowance's unit). Up to 16 of them pass; 64 do not."""
    pytest.importorskip("torch")
    y = np.linspace(0.5, 1.5, 100)
    x = np.full(2, 1e-3)
    unit = EPS64 * float(np.sum(y * y)) / 1e-3

    def backward(dout, x, y):
        return {"x": np.full(2, units * unit), "y": dout * y}

    result = gradcheck.check_gradients(quiet_x, backward, {"x": x, "y": y}, mode="full")
    assert result.oracles == ("numeric", "torch")
    assert result.verdict == verdict, str(result)
    if verdict == "fail":
        assert {m.input for m in result.mismatches} == {"x"}
        assert all(m.against == ("torch",) for m in result.mismatches)


# -- the Richardson error covers the forward's noise ------------------------------------------

def test_the_richardson_error_estimate_covers_the_noise():
    """A linear function read through noise of level sigma: the extrapolated estimate stays
    within its error estimate in every draw (without the 4 sigma/h term, in about 2 of 3)."""
    rng = np.random.default_rng(0)
    n, sigma, slope = 10_000, 1e-10, 0.7
    h = np.full(n, 1e-5)

    def noisy(t):
        return slope * t + rng.uniform(-1.0, 1.0, size=n) * sigma * np.sqrt(3.0)

    gradient, error, kink, _, _ = richardson(0.0, noisy(h), noisy(-h), noisy(2 * h), noisy(-2 * h), h, sigma)
    assert np.all(np.abs(gradient - slope) <= error)
    assert not kink.any()


# -- the diagnosis leaves out elements that agree with the reference -------------------------

def test_no_diagnosis_for_mismatches_that_agree_with_the_reference():
    """An element flagged against another oracle, where the analytic value agrees with the
    reference to 1e-12, is no bug to name: the mismatch lies with that oracle."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 3))
    a = r * (1 + 1e-12)
    usable = np.ones(r.shape, dtype=bool)
    wrong = np.zeros(r.shape, dtype=bool)
    wrong[1, 2] = True
    found = diagnose({"W": a}, {"W": r}, {"W": usable}, {"W": wrong}, {"W": rng.normal(size=(4, 3))})
    assert found == {}


# -- the range a gradient at a kink may take ------------------------------------------------------

def test_slope_hull_spans_every_slope_measured_widened_by_its_noise():
    """Element 0 (h = 1): one-sided slopes 1, 1.5 (right) and 2, 1.5 (left), extrapolated to
    0.5 and 2.5, whose sum 3 belongs in the range. Element 1 (h = 0.5): |t| at 0, slopes -1 | 1.
    Each end is widened by 5 sigma / h."""
    from gradcheck.numeric import slope_hull

    f0 = 1.0
    plus1, plus2 = np.array([2.0, 1.5]), np.array([4.0, 2.0])
    minus1, minus2 = np.array([-1.0, 1.5]), np.array([-2.0, 2.0])
    low, high = slope_hull(f0, plus1, minus1, plus2, minus2, np.array([1.0, 0.5]), 0.1)
    assert low.tolist() == pytest.approx([0.0 - 0.5, -1.0 - 1.0], abs=1e-15)
    assert high.tolist() == pytest.approx([3.0 + 0.5, 1.0 + 1.0], abs=1e-15)


def test_estimates_of_a_forward_that_overflows_warn_nothing():
    from gradcheck.numeric import slope_hull

    values = (0.0, np.array([np.inf]), np.array([-1.0]), np.array([np.inf]), np.array([-2.0]), np.array([1.0]), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = slope_hull(*values)
        gradient = richardson(*values)[0]
    assert np.isnan(low[0]) and np.isnan(high[0]) and np.isnan(gradient[0])


# -- ties: kinks moved together -----------------------------------------------------------------

T = 2.0**-7  # a dyadic step: every value below is exact
C = 2.0**-11  # a slight coupling, under a thousandth of the slopes


def tie_move(forward, x, left, right, analytic, sigma=0.0):
    from gradcheck.evaluate import Evaluator
    from gradcheck.ties import check_ties

    ev = Evaluator(forward, {"x": np.asarray(x, dtype=float)})  # the first two elements move
    n = len(x)
    (move,) = check_ties(ev, ev.value(), sigma, {"x": np.arange(2)}, {"x": np.full(n, T)},
                         {"x": np.asarray(left, dtype=float)}, {"x": np.asarray(right, dtype=float)},
                         {"x": np.asarray(analytic, dtype=float)}, {"x": (n,)}, F64)
    return move


def tied_max(x):
    return max(x[0], x[1])


def mixed_relus(x):
    return max(x[0], 0.0) - max(x[1], 0.0)


def max_and_a_slight_kink(x):
    return max(x[0], x[1]) + C * max(x[0] + x[1], 0.0)


def cancelling_abs_and_a_slight_max(x):
    return abs(x[0]) - abs(x[1]) + C * max(x[0], x[1])


def max_and_a_kink(x):
    return max(x[0], x[1]) + 8 * C * max(x[0] + x[1], 0.0)


# (forward, point, left, right, analytic, sigma, judged, why)
TIE_RULES = [
    (tied_max, [0.0, 0.0], [0, 0], [1, 1], [1, 0], 0.0, True,
     "a tie: the slopes along the move (1) differ from the summed ones (0 | 2)"),
    (mixed_relus, [0.0, 0.0], [0, 0], [1, -1], [1, 0], 0.0, False,
     "separate kinks that cancel: smooth along the move, but not coupled"),
    (mixed_relus, [0.0, 0.0], [0, 0], [1, -1], [1, 0], 1e-5, False,
     "not coupled either with noise as large as the slopes' thousandth (their noise is added)"),
    (cancelling_abs_and_a_slight_max, [0.0, 0.0], [-1, 1], [1 + C, -1 + C], [C, 0], 0.0, False,
     "kinks coupled by C, under a thousandth of the slopes' size (|-1| + |1 + C| + |1| + |-1 + C| = 4)"),
    (max_and_a_slight_kink, [0.0, 0.0], [0, 0], [1 + C, 1 + C], [1, 2 * C], 0.0, True,
     "slopes 1 + 2C | 1 along the move: one slope, to a thousandth of their size"),
    (max_and_a_kink, [0.0, 0.0], [0, 0], [1 + 8 * C, 1 + 8 * C], [1, 16 * C], 3.75e-6, False,
     "slopes 1 + 16C | 1: apart by more than a thousandth and twice their noise"),
]


@pytest.mark.parametrize("forward, x, left, right, analytic, sigma, judged, why", TIE_RULES,
                         ids=[r[-1] for r in TIE_RULES])
def test_a_move_is_judged_only_where_the_kinks_are_coupled_and_the_move_smooth(forward, x, left, right, analytic,
                                                                               sigma, judged, why):
    move = tie_move(forward, x, left, right, analytic, sigma)
    assert bool(move.judged) is judged, why
    assert move.mismatch is None, why


def test_a_tie_given_the_whole_gradient_twice_is_a_mismatch_held_to_the_slope_along_the_move():
    from gradcheck.result import Mismatch

    sigma = 1e-10
    noise = 5 * sigma / T
    move = tie_move(tied_max, [0.0, 0.0, -1.0], [0, 0, 0], [1, 1, 0], [1, 1, 0], sigma)
    assert (move.elements, move.analytic, move.low, move.high, move.judged) == ((("x", 0), ("x", 1)), 2.0, 1.0,
                                                                                1.0, True)
    nearest = 1.0 + noise  # the slope, plus its noise
    allowance = 1e-7 * 2.0 + 1e-12 * nearest
    exactly = dict(rel=1e-12, abs=0.0)
    assert move.mismatch == Mismatch("x", (0,), 2.0, {}, {}, pytest.approx((2.0 - nearest) / 2.0, **exactly),
                                     pytest.approx(allowance, **exactly), ("numeric",),
                                     difference=pytest.approx(2.0 - nearest, **exactly), slopes=(1.0, 1.0),
                                     tied=("x[0]", "x[1]"))
    none = tie_move(tied_max, [0.0, 0.0], [0, 0], [1, 1], [0, 0], sigma)
    assert none.mismatch.difference == pytest.approx(1.0 - noise, rel=1e-12)  # held to the slope less its noise


def test_ties_across_inputs_are_moved_together_and_per_input():
    from gradcheck.evaluate import Evaluator
    from gradcheck.ties import check_ties

    def forward(x, y):
        return max(x[0], x[1]) + max(y[0], y[1])

    ev = Evaluator(forward, {"x": np.zeros(2), "y": np.zeros(2)})
    both = {"x": np.arange(2), "y": np.arange(2)}
    flat = {"x": np.full(2, T), "y": np.full(2, T)}
    moves = check_ties(ev, ev.value(), 0.0, both, flat, {n: np.zeros(2) for n in both}, {n: np.ones(2) for n in both},
                       {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 1.0])}, {"x": (2,), "y": (2,)}, F64)
    assert [m.elements for m in moves] == [(("x", 0), ("x", 1), ("y", 0), ("y", 1)), (("x", 0), ("x", 1)),
                                           (("y", 0), ("y", 1))]
    assert all(m.judged and m.mismatch is None for m in moves)


def test_a_tie_of_two_scalars_is_labelled_by_name():
    from gradcheck.evaluate import Evaluator
    from gradcheck.ties import check_ties

    ev = Evaluator(lambda x, y: max(x, y), {"x": np.float64(0.0), "y": np.float64(0.0)})
    both = {"x": np.array([0]), "y": np.array([0])}
    ones, zeros = {n: np.ones(1) for n in both}, {n: np.zeros(1) for n in both}
    (move,) = check_ties(ev, ev.value(), 0.0, both, {n: np.full(1, T) for n in both}, zeros, ones, ones,
                         {"x": (), "y": ()}, F64)
    assert move.mismatch.tied == ("x", "y") and move.mismatch.index == ()

    ev = Evaluator(lambda x: max(x[0, 0], x[0, 1]), {"x": np.zeros((1, 2))})
    (move,) = check_ties(ev, ev.value(), 0.0, {"x": np.arange(2)}, {"x": np.full(2, T)}, {"x": np.zeros(2)},
                         {"x": np.ones(2)}, {"x": np.ones(2)}, {"x": (1, 2)}, F64)
    assert move.mismatch.tied == ("x[0, 0]", "x[0, 1]") and move.mismatch.index == (0, 0)


def test_kink_range_keeps_floats_floats_and_arrays_float_arrays():
    from gradcheck.numeric import kink_range

    low, high = kink_range(1.0, -3.0)
    assert (type(low), type(high), low, high) == (float, float, -3.0, 1.0)
    low, high = kink_range(np.array([1.0, 2.0]), np.array([-3.0, 0.5]))
    assert low.dtype == high.dtype == np.float64
    assert (low.tolist(), high.tolist()) == ([-3.0, 0.0], [1.0, 2.5])


def test_a_tie_along_which_the_loss_is_flat_is_still_judged():
    """max(x0, x1) - (x0 + x1) / 2 at a tie: flat along the move (slope 0 exactly, no noise), so
    a backward giving each tied element 1/2 sums to 1, not 0."""
    def flat_along_the_tie(x):
        return max(x[0], x[1]) - (x[0] + x[1]) / 2

    move = tie_move(flat_along_the_tie, [0.0, 0.0], [-0.5, -0.5], [0.5, 0.5], [0.5, 0.5])
    assert (move.low, move.high, bool(move.judged)) == (0.0, 0.0, True)
    assert move.mismatch is not None and move.mismatch.analytic == 1.0


def test_a_gradient_at_a_kink_may_lie_kink_margin_times_the_ranges_size_beyond_it():
    from gradcheck.tolerance import KINK_MARGIN, kink_allowance

    assert KINK_MARGIN == 16
    assert kink_allowance(0.0, 1.0) == 16.0
    assert kink_allowance(-3.0, 2.0) == 48.0  # the range's largest magnitude
    assert np.array_equal(kink_allowance(np.array([0.0, -1.0]), np.array([0.5, 0.0])), [8.0, 16.0])
