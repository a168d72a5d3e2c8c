"""The tolerance rule, whole: every allowance and limit the engine holds a difference to.

An analytic gradient element passes against an oracle's value when

    |analytic - reference| <= rtol * max(|analytic|, |reference|) + floor + error

(``allowed``): ``rtol`` and the absolute floor come per dtype (``PRECISIONS``, overridable by
the caller), and ``error`` is what the oracle says of itself: the numeric oracle's error
estimate, or the rounding allowed between two exact gradients (``torch_rounding``). The other
limits say when a measured difference is noise and when it is a finding:

* the numeric oracle's error at step ``h`` (``noise_error``) and the second-difference jump
  that makes an element suspect (``jump_limit``);
* the kink test on one-sided slopes (``kink_found``, ``one_sided_noise``) and the coupling of
  kinks moved together (``coupling_limit``);
* the directional allowance, summed over the coordinates a direction moves
  (``directional_allowance``), and the smallest single-element error a direction catches
  (``detectable_error``, with probability ``1 - POWER_DELTA``);
* the checks on the forward at the point: determinism (``determinism_limit``), vmap-batched
  values (``batch_agreement_limit``, ``batching_pays``) and torch against numpy outputs
  (``outputs_differ``);
* the fit tolerance of the diagnosis (``fit_rtol``);
* forward mode: the rounding allowed between a JVP and an exact oracle's (``jvp_rounding``) and
  between ``<v, J u>`` computed by the jvp and by the backward (``consistency_allowance``);
* the Taylor test: its steps, the remainder's noise floor (``taylor_floor``), the observed
  order's verdict (``taylor_verdict``), which passes are marginal (``marginal``) and when its
  evidence clears a numeric-only mismatch (``taylor_clears``);
* the same gradient computed again, under other strides (``layouts``) or in a repeated run
  (``repeats``): how far a reordered sum may move it (``reorder_limit``), and the repeats a
  backward gets (``REPEATS``, ``MAX_REPEATS``);
* the symmetry a backward's Jacobian must have, as a Hessian does (``symmetry_limit``).

``sigma`` is the noise level of the contracted forward ``L`` (see ``numeric.estimate_noise``)
and ``h`` a step, so ``sigma / h`` is one unit of rounding in a difference quotient. Every
constant is named here with its reason, and ``tests/test_tolerance.py`` pins each rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.result import Tolerance

__all__ = [
    "BATCH_AGREEMENT_ULPS",
    "BATCH_MAX_COST",
    "CENTRAL_NOISE",
    "CONDITION_ROUNDINGS",
    "CONSISTENCY_ULPS",
    "COUPLING_RTOL",
    "DETECTION_NOISE",
    "DETERMINISM_ULPS",
    "DTYPE_EPS",
    "FORWARD_DIGITS_KEPT",
    "JITTER_POINTS",
    "JUMP_NOISE",
    "JUMP_RTOL",
    "KINK_MOVED",
    "KINK_NOISE",
    "LOW_PRECISION_FACTOR",
    "LOW_PRECISION_ULPS",
    "MAX_REPEATS",
    "ONE_SIDED_NOISE",
    "OUTPUT_RTOL",
    "OWN_RUN_DIGITS_KEPT",
    "POWER_DELTA",
    "PRECISIONS",
    "RELATIVE_FLOOR",
    "REORDER_ULPS",
    "REPEATS",
    "ROUNDING_ULPS",
    "SYMMETRY_RESOLVED",
    "SYMMETRY_ULPS",
    "TAYLOR_CLEAR_MARGIN",
    "TAYLOR_FIT_POINTS",
    "TAYLOR_MARGINAL",
    "TAYLOR_NOISE",
    "TAYLOR_RIGHT_ORDER",
    "TAYLOR_START",
    "TAYLOR_STEPS",
    "TAYLOR_WRONG_ORDER",
    "TORCH_ROUNDING",
    "Precision",
    "Tolerance",
    "absolute_floor",
    "allowed",
    "batch_agreement_limit",
    "batching_pays",
    "condition_allowance",
    "condition_magnitude",
    "consistency_allowance",
    "coupling_limit",
    "default_tolerance",
    "detectable_error",
    "determinism_limit",
    "directional_allowance",
    "dtype_eps",
    "fit_rtol",
    "forward_precision_lost",
    "jump_limit",
    "jvp_rounding",
    "kink_found",
    "low_precision_allowance",
    "low_precision_tolerance",
    "marginal",
    "noise_error",
    "one_sided_noise",
    "outputs_differ",
    "own_run_limit",
    "precision",
    "relative_error",
    "reorder_limit",
    "symmetry_limit",
    "symmetry_resolved",
    "taylor_clears",
    "taylor_floor",
    "taylor_verdict",
    "torch_rounding",
]


# -- per-dtype tolerances ----------------------------------------------------------------------

@dataclass(frozen=True)
class Precision:
    """The tolerances for gradients computed at one float precision.

    Attributes:
        eps: unit roundoff of the dtype.
        rtol: relative tolerance of the comparison (``allowed``).
        floor: absolute floor, relative to the input's largest gradient.
        fit_rtol: relative tolerance of a diagnosis' pattern fit (``diagnose``).
    """

    eps: float
    rtol: float
    floor: float
    fit_rtol: float


# By itemsize, the lowest precision involved (the input's or its gradient's).
PRECISIONS = {
    # float64: a gradient wrong by a relative 1e-6 must fail (rtol ten times below it); the
    # floor is ~4500 roundoff units of the largest gradient; a fit must survive the numeric
    # oracle's own error of about 1e-8, so it gets a looser 1e-6.
    8: Precision(float(np.finfo(np.float64).eps), rtol=1e-7, floor=1e-12, fit_rtol=1e-6),
    # float32: ~8000 roundoff units (1.2e-7), room for a float32 backward's long sums.
    4: Precision(float(np.finfo(np.float32).eps), rtol=1e-3, floor=1e-4, fit_rtol=1e-3),
    # float16 / bfloat16: ~30 float16 roundoff units (9.8e-4), 4 of bfloat16's (7.8e-3).
    2: Precision(float(np.finfo(np.float16).eps), rtol=3e-2, floor=1e-2, fit_rtol=3e-2),
}

ROUNDING_ULPS = 64  # roundoff units of the largest gradient allowed in an exactly-zero one
RELATIVE_FLOOR = 1e-3  # relative errors of elements this much below the largest are measured against it


def precision(itemsize: int) -> Precision:
    """The tolerances for ``itemsize`` bytes of float precision: below 4 bytes as float16,
    any other size as float64."""
    return PRECISIONS.get(itemsize, PRECISIONS[2] if itemsize < 4 else PRECISIONS[8])


def fit_rtol(itemsize: int) -> float:
    """The diagnosis' fit tolerance, relative to an element's magnitude, for ``itemsize``."""
    return precision(itemsize).fit_rtol


def default_tolerance(
    itemsize: int, *, rtol: float | None = None, atol: float | None = None, global_scale: float = 0.0
) -> Tolerance:
    """The tolerance for a gradient computed at ``itemsize`` bytes of float precision.

    ``rtol``/``atol`` override the defaults; None keeps the default (0 means zero).
    ``global_scale`` is the largest reference gradient magnitude over all checked inputs: it
    sets the rounding floor (see ``Tolerance.rounding``), ``ROUNDING_ULPS`` units of it.
    """
    p = precision(itemsize)
    rounding = ROUNDING_ULPS * p.eps * global_scale if np.isfinite(global_scale) else 0.0
    return Tolerance(rtol=p.rtol if rtol is None else rtol, atol=atol, floor=p.floor, rounding=rounding)


def absolute_floor(tol: Tolerance, scale: float) -> float:
    """``atol`` if given, else the floor relative to the input's largest gradient ``scale``
    (at least the rounding floor); plus the backward's measured spread over repeated runs."""
    return (tol.atol if tol.atol is not None else max(tol.floor * scale, tol.rounding)) + tol.spread


def allowed(
    analytic: np.ndarray, reference: np.ndarray, error: np.ndarray | float, tol: Tolerance, scale: float
) -> np.ndarray:
    """Per-element allowance ``rtol * max(|a|, |ref|) + atol + error`` (the one rule)."""
    magnitude = np.maximum(np.abs(analytic), np.abs(reference))
    return tol.rtol * magnitude + absolute_floor(tol, scale) + error


def relative_error(analytic: np.ndarray, reference: np.ndarray, scale: float) -> np.ndarray:
    """``|a - ref| / max(|a|, |ref|, RELATIVE_FLOOR * scale)``: elements far smaller than the
    input's largest gradient ``scale`` are measured against a thousandth of it, so rounding in
    near-zero elements does not read as a large relative error (0 where all three are 0)."""
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(reference)), RELATIVE_FLOOR * scale)
    with np.errstate(invalid="ignore"):  # 0 / 0 where all three are 0 (denom is 0 only there)
        rel = np.abs(analytic - reference) / denom
    return np.where(denom > 0, rel, 0.0)


# -- the numeric oracle's error ----------------------------------------------------------------

# Rounding of sigma in each value of L puts a standard deviation of 0.71 sigma/h in the central
# difference (L(x+h) - L(x-h)) / 2h and 0.95 sigma/h in its Richardson extrapolation: 4 sigma/h
# bounds either at about four standard deviations.
CENTRAL_NOISE = 4
# The second difference (L(x+h) - 2 L(x) + L(x-h)) / h carries 2.4 sigma/h of rounding: 16 is
# over six standard deviations, so rounding alone never makes an element suspect.
JUMP_NOISE = 16
# Where L is smooth the second difference is h L'' (h ~ eps**(1/3) = 6e-6 relative to x), far
# below a thousandth of the largest gradient; a kink makes it the jump in slope, far above.
JUMP_RTOL = 1e-3


def noise_error(sigma: Any, h: Any) -> Any:
    """The error a noise level ``sigma`` puts in a (Richardson-extrapolated) central difference
    at step ``h`` (array or float): ``CENTRAL_NOISE * sigma / h``."""
    return CENTRAL_NOISE * sigma / h


def jump_limit(size: Any, sigma: float, h: Any) -> Any:
    """The largest second difference ``(L(x+h) - 2 L(x) + L(x-h)) / h`` of a smooth ``L``:
    ``JUMP_RTOL`` of ``size`` (the input's largest gradient, or along a direction the sum of
    ``|a_i v_i|``) plus ``JUMP_NOISE`` units of rounding. Above it, an element is suspect:
    a kink within the step, or a gradient to look at more closely."""
    return JUMP_RTOL * size + JUMP_NOISE * sigma / h


# -- kinks ------------------------------------------------------------------------------------

# The one-sided Richardson slope 2 r(h) - r(2h), with r(h) = (L(x+h) - L(x)) / h, carries at most
# (2*2 + 1) sigma/h of rounding: 2 sigma/h in r(h) twice, sigma/h in r(2h).
ONE_SIDED_NOISE = 5
# The gap between the two one-sided slopes carries at most 2 * ONE_SIDED_NOISE = 10 sigma/h of
# rounding; a kink is a gap above 12 (a margin of 2).
KINK_NOISE = 12
# Where L is smooth the one-sided slopes agree to O(h^3) while each moves by about |L''| h
# between h and 2h; at a kink they differ by the jump and hardly move. A gap above a quarter
# of how far they moved leaves room for a kink crossed between h and 2h, which moves them.
KINK_MOVED = 0.25
# Directional slopes this far (relative to the elements' summed slopes) from those sums are
# coupled: one tie among a few hundred ReLU kinks still shows, and the slopes' truncation
# (O(h^2), about eps**(2/3) relative) stays far below it.
COUPLING_RTOL = 1e-3


# An element that moves several kinks across at once (ReLU inputs at exactly 0 in several
# examples: integer-valued data, a unit dead for part of a batch) has one-sided slopes that mix
# them, and a correct gradient there (one convention per kink) can lie outside the range they
# allow: in correct ReLU nets with integer weights and data it lay up to 4.3 times the range's
# size beyond it, and cancellations between examples leave no bound in principle. So a
# gradient at a kink is a mismatch only far beyond the range (a constant 123 where the slopes
# are 0 and 1); a wrong value close to the slopes there goes unflagged.
KINK_MARGIN = 16


def kink_allowance(low: Any, high: Any) -> Any:
    """How far beyond the range ``[low, high]`` a slope's range allows a gradient at a kink may
    lie (arrays or floats), before the rtol and floor: ``KINK_MARGIN`` times the range's size
    (its largest magnitude)."""
    return KINK_MARGIN * np.maximum(np.abs(low), np.abs(high))


def one_sided_noise(sigma: float, h: Any) -> Any:
    """The rounding in a one-sided Richardson slope at step ``h``: ``ONE_SIDED_NOISE * sigma / h``."""
    return ONE_SIDED_NOISE * sigma / h


def kink_found(gap: Any, moved: Any, noise: Any) -> Any:
    """True where one-sided slopes ``gap`` apart mark a kink: the gap exceeds ``KINK_NOISE``
    units of rounding (``noise`` is ``sigma / h``) and ``KINK_MOVED`` of how far the slopes
    ``moved`` between the steps ``h`` and ``2h``."""
    return (gap > KINK_NOISE * noise) & (gap > KINK_MOVED * moved)


def coupling_limit(size: float, noise: float) -> float:
    """How far directional slopes may differ from what uncoupled slopes of total magnitude
    ``size`` would give (or from each other) with ``noise`` in them: ``COUPLING_RTOL * size
    + noise``."""
    return COUPLING_RTOL * size + noise


# -- against torch ----------------------------------------------------------------------------

# Rounding allowed between the backward and torch, in units of (forward noise) / (input scale):
# each gradient carries a few rounding units of the terms it adds up, and the backward and torch
# add them in different orders.
TORCH_ROUNDING = 16


def torch_rounding(sigma: float, *, eps: float, sensitivity: float, dout_size: float, xscale: Any) -> Any:
    """Rounding allowed between the analytic and torch gradients, per element of scale ``xscale``.

    Rounding in a gradient, over the input's scale: of the forward's noise ``sigma``, or of
    ``sensitivity`` (the sum of ``|dL/dx_j x_j|`` over every input: the size of the terms a
    backward adds up and that may cancel). torch and the backward may each be off by that much
    from the exact gradient, which shows most where it is exactly 0. Below
    ``eps * dout_size / |x|`` (``dout_size`` the largest upstream gradient) a gradient moves L by
    less than one rounding unit of the upstream gradient over a full relative change of x: a
    saturated loss (a softmax with logits hundreds apart) leaves only such crumbs, and two correct
    computations may disagree on them entirely.
    """
    return TORCH_ROUNDING * np.maximum(max(sigma, eps * sensitivity), eps * dout_size) / xscale


# -- a gradient computed in a low precision -----------------------------------------------------

# A gradient computed in float32, float16 or bfloat16 is held to the float64 truth at the same
# (already rounded) inputs, allowed this many times the error of a trusted computation in the
# same dtype on the same inputs (autograd of the same forward, or a reference implementation):
# the rule kernel authors write by hand (FlashAttention's tests use 2).
LOW_PRECISION_FACTOR = 2
# ... floored at this many roundoff units of the dtype times the magnitudes summed into each
# element, where the trusted computation happens to round exactly.
LOW_PRECISION_ULPS = 4


def low_precision_allowance(
    reference_error: np.ndarray, magnitude: Any, *, eps: float, factor: float | None = None
) -> np.ndarray:
    """Per-element allowance of a low-precision gradient against the float64 truth.

    ``reference_error`` is ``|trusted - truth|`` per element, the trusted gradient computed in
    the same dtype on the same inputs; ``magnitude`` (array or float) the magnitudes summed into
    each element (``sum_i |dout_i J_ij|``, or a bound on it); ``eps`` the dtype's roundoff;
    ``factor`` defaults to ``LOW_PRECISION_FACTOR`` (``None`` means the default, never 0).

    The allowance is ``factor * max(|e_j|, rms(e))`` plus ``LOW_PRECISION_ULPS * eps * magnitude``:
    the root-mean-square of the trusted errors stands in where one element's trusted value
    happens to round exactly, without letting the largest error over a big tensor excuse every
    element.
    """
    k = LOW_PRECISION_FACTOR if factor is None else factor
    err = np.abs(np.asarray(reference_error, dtype=np.float64))
    rms = float(np.sqrt(np.mean(err**2))) if err.size else 0.0
    return k * np.maximum(err, rms) + LOW_PRECISION_ULPS * eps * np.abs(magnitude)


# The roundoff unit (machine epsilon) of each dtype a check runs code in, by the name the caller
# gave it (numpy has no bfloat16: 8 bits of mantissa, 2**-7).
DTYPE_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
# The magnitudes summed into a gradient element (the floor of ``low_precision_allowance``) are
# not known for arbitrary code; they are estimated as CONDITION_ROUNDINGS times the element's
# magnitude plus the input's rms gradient (the condition estimate: an element far below the rms
# is a sum of terms that cancel, and its rounding is of the rms' size). Two: a sigmoid chain's
# gradient, where a - y cancels, carried 9 float32 ulps of |g| in a correct numpy backward (its
# exp rounds less well than torch's), under the 4 * 2 * 2 = 16 this allows.
CONDITION_ROUNDINGS = 2
# A trusted computation's error at one point may be small by luck (its roundings cancel where the
# terms of an element cancel, or an element rounds exactly): it is measured at the point and at
# this many neighbours (every input moved by one unit in its last place, which re-draws the
# roundings), against the truth at the point, and the largest distance is used. Two: each
# costs one more autograd call, and a float32 check is to cost at most 1.3 times a float64 one.
JITTER_POINTS = 2
# A forward run in a low dtype may lose some digits to rounding (long sums, a difference of near
# values); past half of them (a relative error above sqrt(eps) against the float64 forward at
# the same rounded inputs) it computes something else than it means to: precision loss.
FORWARD_DIGITS_KEPT = 0.5


# A hand-written backward that also runs on float64 copies of the same rounded inputs is held
# to the float64 truth there with float64's rules (its formula); its run in the low dtype is then
# held to its own float64 run, whose distance is its rounding. Past its budget that is precision
# lost, a note: a correct ``p - y`` of a saturated softmax rounds at 1's ulp, far from the
# gradient's own size, by amounts nothing outside the backward bounds. Past half the dtype's digits
# of the magnitudes summed into the element (``condition_magnitude``) the low-dtype run computes
# something else than the float64 run: a low-dtype-only bug (an accumulator or a cast in a lower
# precision), a mismatch.
OWN_RUN_DIGITS_KEPT = 0.5


def own_run_limit(own: np.ndarray, *, eps: float) -> np.ndarray:
    """How far, beyond its budget, a backward's run in a dtype of roundoff ``eps`` may sit from its
    own float64 run ``own`` (flat) before it is a mismatch: ``eps ** OWN_RUN_DIGITS_KEPT`` times
    ``condition_magnitude(own)``."""
    return np.asarray(eps**OWN_RUN_DIGITS_KEPT * condition_magnitude(own), dtype=np.float64)


def dtype_eps(name: str) -> float:
    """The roundoff unit of the dtype called ``name`` ("float32", "bfloat16", ...); any other
    name is held to float64's."""
    return DTYPE_EPS.get(name, DTYPE_EPS["float64"])


def condition_magnitude(reference: np.ndarray) -> np.ndarray:
    """The magnitudes summed into each element of a gradient near ``reference`` (flat), as
    estimated where they are not known: ``CONDITION_ROUNDINGS * (|ref_j| + rms(ref))``."""
    ref = np.abs(np.asarray(reference, dtype=np.float64))
    rms = float(np.sqrt(np.mean(ref**2))) if ref.size else 0.0
    return CONDITION_ROUNDINGS * (ref + rms)


def condition_allowance(
    reference: np.ndarray, jitter: np.ndarray, *, eps: float, factor: float | None = None
) -> np.ndarray:
    """Per-element allowance of a low-precision gradient when no trusted computation in its dtype
    ran: the shared rule (``low_precision_allowance``) with the gradient's own largest change
    ``jitter`` over ``JITTER_POINTS`` neighbouring points (its rounding and its condition) in
    place of a trusted error, floored at ``LOW_PRECISION_ULPS`` of ``condition_magnitude``."""
    return low_precision_allowance(jitter, condition_magnitude(reference), eps=eps, factor=factor)


def low_precision_tolerance(
    eps: float, *, rtol: float | None = None, atol: float | None = None, global_scale: float = 0.0
) -> Tolerance:
    """The tolerance of a gradient computed in a dtype of roundoff ``eps`` below float64, beside
    its per-element allowance (``low_precision_allowance``, ``condition_allowance``): no rtol or
    scaled floor of its own (the allowance replaces them; ``rtol``/``atol`` given by the caller
    still apply), and a rounding floor of ``LOW_PRECISION_ULPS`` units of the largest reference
    gradient over all inputs, for an element whose exact gradient is 0."""
    rounding = LOW_PRECISION_ULPS * eps * global_scale if np.isfinite(global_scale) else 0.0
    return Tolerance(rtol=0.0 if rtol is None else rtol, atol=atol, floor=0.0, rounding=rounding)


def forward_precision_lost(relative: float, eps: float) -> bool:
    """True when a forward's output in a dtype of roundoff ``eps`` is ``relative`` off its float64
    value at the same inputs, beyond ``eps ** FORWARD_DIGITS_KEPT`` (half its digits lost)."""
    return bool(relative > eps**FORWARD_DIGITS_KEPT)


# -- directional derivatives ------------------------------------------------------------------

def directional_allowance(
    tol: Tolerance, scale: float, expected: float, numeric: float, error: float, terms: float
) -> tuple[float, float]:
    """The allowance and the relative error of a directional derivative ``a . v``.

    ``terms`` is ``sum |v_i|``: the derivative along ``v`` adds up one term per coordinate, each
    allowed the per-element floor times ``|v_i|``, so the absolute floor (and the scale that
    relative errors are measured against) grows with it; ``rtol`` applies to the derivative
    itself and ``error`` is its own error estimate.
    """
    allowance = float(tol.rtol * max(abs(expected), abs(numeric)) + absolute_floor(tol, scale) * terms + error)
    rel = float(relative_error(np.array([expected]), np.array([numeric]), scale * terms)[0])
    return allowance, rel


# What directional mode could have missed is stated with this probability of failure: any single
# element wrong by the stated amount or more is caught with probability at least 1 - POWER_DELTA.
POWER_DELTA = 1e-3
# Units of ``noise_error`` in a single-element error that a direction is sure to see: the numeric
# derivative's own rounding, the noise term of its error estimate, and the difference of the two
# central differences in the Richardson error estimate (``numeric.richardson``), each at most one
# unit. A unit is CENTRAL_NOISE = 4 sigma/h, over four standard deviations of the rounding in each
# (0.95, 0.79 and 0.71 sigma/h): all three stay within it except with probability below 1e-4, under
# POWER_DELTA.
DETECTION_NOISE = 3


def detectable_error(
    tol: Tolerance, scale: float, derivative: float, terms: float, noise: float, weight: float, *,
    slack: float = 0.0,
) -> float:
    """The smallest error in a single element that one random +-1 direction catches, in the
    gradient's units, with probability at least ``1 - POWER_DELTA``.

    The direction is ``v_i = s_i w_i`` with random signs ``s_i`` and the per-element scales
    ``w_i`` (``weight`` is the smallest ``w_i`` of the coordinates it moves, ``terms`` their sum
    ``sum |v_i|``); ``derivative`` is ``a . v`` for the analytic gradient ``a``, ``noise`` is
    ``noise_error(sigma, h)`` for the forward's noise ``sigma`` and the direction's step ``h``,
    ``scale`` the input's largest gradient, and ``slack`` what the direction's allowance adds for
    a gradient computed below float64 (``sum |b_i v_i|``, 0 for float64).

    Why: with element ``j`` wrong by ``e`` the analytic derivative along ``v`` is ``a . v + e v_j``
    while the numeric one is ``a . v + n`` with ``|n| <= noise``, so the two differ by at least
    ``|e| w_j - noise``: ``|v_j| = w_j`` in every +-1 direction, whatever its signs. The
    direction fails when that exceeds its allowance (``directional_allowance``), which is at most
    ``rtol (|a . v| + |e| w_j + noise) + floor * terms + slack + 2 noise`` (the correct rest of the
    gradient enters through ``rtol |a . v|``; the Richardson error estimate of a suspect
    direction adds up to one more unit of noise). So any ``|e|`` above

        (rtol (|a . v| + noise) + floor * terms + slack + DETECTION_NOISE * noise) / ((1 - rtol) w_j)

    fails the direction (and a failed direction fails the check, localized or not); the largest
    over elements is at the smallest ``w_j``. The probability is the noise's: the three noise
    terms stay within ``noise`` (``DETECTION_NOISE``). Gaussian directions would leave it to
    ``|v_j|``, near 0 with fair odds: caught with probability ``1 - POWER_DELTA`` by three of
    them only above about eight times this size. The truncation of the differences is taken to be
    below the noise (the step is chosen so), and ``sigma`` to be the forward's noise.
    """
    floor = absolute_floor(tol, scale)
    allowance = tol.rtol * (abs(derivative) + noise) + floor * terms + slack + DETECTION_NOISE * noise
    return float(allowance / ((1.0 - tol.rtol) * weight))


# -- the forward at the point -----------------------------------------------------------------

# Two calls at the same point may differ by this many roundoff units of the output's size: a
# reduction whose order changes between calls (threaded sums) rounds differently, a random or
# stateful forward differs by far more.
DETERMINISM_ULPS = 64
# vmap-batched evaluation runs other kernels, which may round differently: values this many
# roundoff units of the output's size apart are the same; past it batching computes something
# else and the loop is kept.
BATCH_AGREEMENT_ULPS = 1e3
# Batching is used only when it costs at most this share of the loop per evaluation: a margin
# over timing noise, so a batch that is barely faster is not chosen.
BATCH_MAX_COST = 0.7
# The forward's outputs on torch tensors and on numpy arrays may round differently (other
# kernels), by far less than this relative to the output's size (at least 1); past it they
# compute different functions and torch's gradient is no oracle for the numpy forward.
OUTPUT_RTOL = 1e-8


def determinism_limit(eps: float, size: float) -> float:
    """How far two calls of a deterministic forward at the same point may differ, for an
    output of roundoff ``eps`` and size ``size`` (``max(|L|, sum |dout * out|)``)."""
    return DETERMINISM_ULPS * eps * size


def batch_agreement_limit(eps: float, size: float) -> float:
    """How far a batched evaluation may differ from the loop's, for an output of roundoff
    ``eps`` and size ``size`` (exact agreement when the size is 0)."""
    return BATCH_AGREEMENT_ULPS * eps * max(size, 1e-300)


def batching_pays(batch_cost: float, loop_cost: float) -> bool:
    """True when a batched evaluation (seconds each) is clearly cheaper than the loop's."""
    return batch_cost <= BATCH_MAX_COST * loop_cost


def outputs_differ(gap: float, size: float) -> bool:
    """True when the forward's outputs on torch and numpy, ``gap`` apart at most, differ by more
    than rounding for an output of size ``size``."""
    return gap > OUTPUT_RTOL * max(size, 1.0)


# -- forward mode -----------------------------------------------------------------------------


def jvp_rounding(sigma: Any, terms: float, eps: float) -> Any:
    """Rounding allowed between a JVP and an exact oracle's, per output element: the element's
    noise ``sigma`` (array or float), at least ``eps``, times ``terms``, the sum of the tangent's
    moves relative to each coordinate's scale (a JVP adds up one term per coordinate moved, each
    with the rounding a gradient element is allowed against torch over its scale: as
    ``directional_allowance`` sums the floor over ``|v_i|``), ``TORCH_ROUNDING`` times. The ``eps`` floor is
    ``torch_rounding``'s upstream-gradient term: a JVP that moves the output by less than one
    rounding unit of 1 over a full relative move of the inputs is crumbs (a saturated softmax's
    loss rounds to exactly 0), on which two correct computations may disagree entirely."""
    return TORCH_ROUNDING * np.maximum(np.asarray(sigma), eps) * terms


# ``<v, J u>`` by the jvp (``v . jvp(u)``) and by the backward (``backward(v) . u``) add the
# same products in other orders: each may carry a few roundoff units of the terms it adds up
# (``ROUNDING_ULPS``'s reasoning), on top of the comparison's ``rtol``.
CONSISTENCY_ULPS = 64


def consistency_allowance(
    tol: Tolerance, first: float, second: float, terms: float, eps: float, floors: float = 0.0,
) -> float:
    """How far ``<v, J u>`` computed two ways may differ: ``rtol`` of the larger, plus ``atol``
    (when given) or ``CONSISTENCY_ULPS`` roundoff units of ``terms`` (the summed magnitudes of
    the products on both sides) and ``floors``, the absolute floors the elements on both sides
    were allowed, weighted by how much of each enters (``sum_j floor_j |u_j|`` for the gradient,
    ``sum_i floor_i |v_i|`` for the JVP): as in ``directional_allowance``, an element that should
    be 0 may carry rounding up to its floor."""
    floor = tol.atol if tol.atol is not None else CONSISTENCY_ULPS * eps * terms + floors
    return float(tol.rtol * max(abs(first), abs(second)) + floor)


# -- the Taylor test --------------------------------------------------------------------------

# The remainder r(h) = |L(x + h v) - L(x) - h <g, v>| is measured at TAYLOR_STEPS steps, halving
# from TAYLOR_START (a move of that fraction of each element's scale): eight steps span a factor
# of 128, room for three points on a slope after the larger steps where curvature dominates; the
# smallest, 1/128 of the first (8e-6 of the scale), stays above the numeric oracle's step
# (6e-6 in float64), so the remainder is far above rounding for a smooth L.
TAYLOR_STEPS = 8
TAYLOR_START = 1e-3
# The order is the slope over the smallest TAYLOR_FIT_POINTS steps whose remainder is above the
# floor: the asymptotic order, where a first-order error (if any) has taken over from curvature.
TAYLOR_FIT_POINTS = 3
# A remainder below TAYLOR_NOISE times the rounding of its three terms is noise: 2 sigma for
# the two values of L, and roundoff units of h <g, v>.
TAYLOR_NOISE = 16
# An order of 2 is a right gradient, 1 a wrong one; between the thresholds the evidence is
# unclear (a wrong gradient whose error is as large as the curvature's term over the range).
TAYLOR_RIGHT_ORDER = 1.75
TAYLOR_WRONG_ORDER = 1.25
# A pass is marginal (and the Taylor test runs beside it) when its worst relative error is
# within this factor of rtol.
TAYLOR_MARGINAL = 10
# A numeric-only mismatch is cleared when the gradient, off by what the numeric oracle claims,
# would have left a remainder at the smallest step at least this many times the one observed.
TAYLOR_CLEAR_MARGIN = 10


def taylor_floor(sigma: float, eps: float, linear: Any) -> Any:
    """The remainder's noise floor at each step: ``TAYLOR_NOISE`` times ``2 sigma`` plus the
    roundoff of the linear terms ``h <g, v>`` (array or float)."""
    return TAYLOR_NOISE * (2 * sigma + eps * np.abs(linear))


def taylor_verdict(order: float | None) -> str:
    """``"right"`` for an observed order of at least ``TAYLOR_RIGHT_ORDER``, ``"wrong"`` for at
    most ``TAYLOR_WRONG_ORDER``, ``"unclear"`` between them, ``"noise"`` for None (no remainder
    rose above the floor)."""
    if order is None:
        return "noise"
    if order >= TAYLOR_RIGHT_ORDER:
        return "right"
    if order <= TAYLOR_WRONG_ORDER:
        return "wrong"
    return "unclear"


def marginal(relative: float | None, rtol: float) -> bool:
    """A passing relative error within ``TAYLOR_MARGINAL`` of ``rtol`` (None: nothing measured)."""
    return relative is not None and relative * TAYLOR_MARGINAL >= rtol


def taylor_clears(verdict: str, remainder: float, step: float, claimed: float) -> bool:
    """Whether a Taylor test with ``verdict`` clears a mismatch that the numeric oracle alone
    saw: the order is not a wrong gradient's (``"right"`` or ``"noise"``), and a gradient off by
    the ``claimed`` directional error would leave ``step * |claimed|`` at the smallest ``step``,
    at least ``TAYLOR_CLEAR_MARGIN`` times the ``remainder`` observed there."""
    return verdict in ("right", "noise") and step * abs(claimed) >= TAYLOR_CLEAR_MARGIN * remainder


# -- the same gradient computed again -----------------------------------------------------------

# A correct op computes the same gradient whatever its tensors' strides and on every run, up to
# the order its kernels add terms in: a transposed or channels-last operand takes another
# kernel path, atomic adds land in the order threads finish. Two such computations may differ
# by this many roundoff units of the element itself, plus the rounding allowed between two exact
# gradients (``torch_rounding``: of the terms that may cancel in it). Beyond that the layout, or
# the run, changes what is computed.
REORDER_ULPS = 64
# The backward runs this many times at the point (the first is the check's own) ...
REPEATS = 3
# ... and up to this many when the runs differ, so the spread is measured, not sampled once.
MAX_REPEATS = 8


def reorder_limit(reference: Any, rounding: Any, *, eps: float) -> Any:
    """How far a gradient computed again (under another layout, or in another run) may sit from
    ``reference``, per element: ``REORDER_ULPS * eps * |reference| + rounding``, with ``eps`` the
    roundoff of the gradient's dtype and ``rounding`` what ``torch_rounding`` allows there."""
    return REORDER_ULPS * eps * np.abs(reference) + rounding


SYMMETRY_ULPS = 64  # an asymmetry below this many roundoff units of the loss is invisible in it
# u^T J v is measured when its error estimate is at most this fraction of it: a direction that
# crosses a kink (a ReLU unit at 0, whose gradient jumps) leaves the difference quotients apart.
SYMMETRY_RESOLVED = 1e-3


def symmetry_resolved(value: float, error: float) -> bool:
    """Whether a directional derivative of the backward is measured (``SYMMETRY_RESOLVED``)."""
    return error <= SYMMETRY_RESOLVED * abs(value)


def symmetry_limit(ujv: float, vju: float, errors: float, loss: float, eps: float) -> float:
    """How far ``u^T J v`` and ``v^T J u`` (a backward's Jacobian ``J`` along directions scaled
    to the inputs, so both are in the loss' units) may differ: the fit tolerance
    (``PRECISIONS[8].fit_rtol``) of the larger, their Richardson errors, and ``SYMMETRY_ULPS``
    roundoff units of the loss (a backward computed from intermediates near 1 rounds at that
    size, however small its own values; a Hessian term below it never shows in the loss)."""
    return PRECISIONS[8].fit_rtol * max(abs(ujv), abs(vju)) + errors + SYMMETRY_ULPS * eps * abs(loss)
