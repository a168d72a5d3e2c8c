"""Full mode: every element of an input, one central difference each, the suspects refined, the
kinks held to their slopes, and the kink elements of all inputs moved together (``ties``).

``check_input_full`` is the per-input step of a check (directional mode's is
``directional.check_input_directional``); both work over the point, its noise and the
tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gradcheck.compare import compare_input
from gradcheck.estimates import NumericEstimate
from gradcheck.numeric import central_pass, element_scale, refine
from gradcheck.point import Context, Differenced, InputOutcome, Point, exact_rounding
from gradcheck.result import Mismatch, Tolerance
from gradcheck.ties import check_ties
from gradcheck.tolerance import allowed, jump_limit, noise_error

__all__ = ["check_input_full", "tie_finding"]


def tie_finding(
    point: Point, measured: Mapping[str, Differenced], analytic: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]], tol: Tolerance,
) -> Mismatch | None:
    """The kink elements of every input moved together (``ties``): a mismatch, or None."""
    kinks = {n: np.flatnonzero(m.estimate.kink) for n, m in measured.items()}
    if sum(k.size for k in kinks.values()) < 2:
        return None
    ties = check_ties(
        point.evaluator, point.value, max(m.sigma for m in measured.values()), kinks,
        {n: m.steps for n, m in measured.items()},
        {n: m.estimate.left for n, m in measured.items()},
        {n: m.estimate.right for n, m in measured.items()},
        {n: np.asarray(analytic[n], dtype=np.float64).reshape(-1) for n in measured},
        shapes, tol,
    )
    return next((move.mismatch for move in ties if move.mismatch is not None), None)


def check_input_full(
    ctx: Context, name: str, analytic: np.ndarray, exact: Mapping[str, np.ndarray], tol: Tolerance,
) -> InputOutcome:
    """Per-element check of one input: central pass, refine the suspects, compare.

    ``ctx.sensitivity`` is ``sum_j |dL/dx_j x_j|`` over every checked input (from an exact
    oracle when one ran): with the forward's noise it sets the rounding allowed against it."""
    point, noise, sensitivity = ctx.point, ctx.noise, ctx.sensitivity
    budget = ctx.budgets.get(name, 0.0)  # a gradient computed below float64: its allowance
    ev = point.evaluator
    if point.output.size == 0 or analytic.size == 0:
        # Nothing to difference: an empty output makes L identically 0 (every gradient is 0).
        zeros = NumericEstimate.exact(np.zeros(analytic.size))
        comparison = compare_input(name, analytic.shape, analytic.reshape(-1).astype(np.float64), zeros,
                                   {o: g.reshape(-1) for o, g in exact.items()}, tol, budget=budget)
        return InputOutcome(comparison, int(analytic.size), comparison.compared,
                            measured=Differenced(zeros, np.zeros(analytic.size), 0.0))
    ev.tracker.stage("central differences", name, 2 * analytic.size)
    central = central_pass(ev, name, point.value, point.eps)
    a = analytic.reshape(-1).astype(np.float64)
    flat_exact = {o: g.reshape(-1) for o, g in exact.items()}
    d, h = central.gradient, central.step
    finite = np.isfinite(d)
    scale = float(max(np.max(np.abs(a), initial=0.0), np.max(np.abs(d[finite]), initial=0.0),
                      *(np.max(np.abs(t), initial=0.0) for t in flat_exact.values())))

    xscale = element_scale(ev.work[name].reshape(-1))  # the scale the step follows

    def rounding(sigma: float) -> np.ndarray:
        return exact_rounding(point, sensitivity, sigma, xscale)

    def suspects(sigma: float) -> np.ndarray:
        err = np.maximum(noise_error(sigma, h), rounding(sigma))
        with np.errstate(invalid="ignore"):
            s = finite & (np.abs(a - d) > allowed(a, d, err + budget, tol, scale))
            s |= finite & (np.abs(central.jump) > jump_limit(scale, sigma, h))
            for t in flat_exact.values():
                s |= np.abs(a - t) > allowed(a, t, rounding(sigma) + budget, tol, scale)
                s |= finite & (np.abs(d - t) > allowed(d, t, err, tol, scale))
        return s

    sigma = noise.model
    suspect = suspects(sigma)
    numeric, error = d.copy(), noise_error(sigma, h)
    kink = np.zeros(a.shape, dtype=bool)
    left, right, low, high = (np.full(a.shape, np.nan) for _ in range(4))
    if suspect.any():
        sigma = noise.measured()
        suspect &= suspects(sigma)
        error = noise_error(sigma, h)
        index = np.flatnonzero(suspect)
        if index.size:
            ev.tracker.stage("refinement", name, 2 * index.size)
            r = refine(ev, name, index, central, point.value, sigma)
            ok = np.isfinite(r.gradient)
            numeric[index[ok]] = r.gradient[ok]
            error[index[ok]] = r.error[ok]
            kink[index[ok]] = r.kink[ok]
            for whole, part in ((left, r.left), (right, r.right), (low, r.low), (high, r.high)):
                whole[index] = part
    faults = []
    if not finite.all():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), analytic.shape))
        faults.append(
            f"forward fails or returns non-finite values when {name!r} is perturbed at "
            f"{int((~finite).sum())} element(s), first at index {first}; those are not compared"
        )
    # Nor can the numeric oracle resolve less than that rounding (a loss flat at float
    # precision has a numeric gradient of exactly 0 with no spread to measure).
    error = np.maximum(error, rounding(sigma))
    estimate = NumericEstimate(numeric, error, kink, left, right, low, high)
    comparison = compare_input(name, analytic.shape, a, estimate, flat_exact, tol, exact_error=rounding(sigma),
                               budget=budget)
    return InputOutcome(comparison, int(analytic.size), comparison.compared, tuple(faults),
                        measured=Differenced(estimate, h, sigma))
