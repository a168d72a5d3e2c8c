"""Analytic against the oracles, per input: no I/O, never raises (the rule is ``tolerance``'s).

All arrays here are flat float64 views of one input's gradient, so element ``i`` is the same
element in every array.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gradcheck.estimates import NumericEstimate
from gradcheck.result import Disagreement, Kink, Mismatch, Tolerance
from gradcheck.tolerance import allowed, relative_error
from gradcheck.tolerance import kink_allowance as kink_margin

__all__ = [
    "InputComparison",
    "compare_input",
]


def worst_of(rel: np.ndarray, where: np.ndarray) -> tuple[float | None, int | None]:
    """The largest ``rel`` over the elements ``where`` is True (NaN counts as largest) and its
    flat index; (None, None) when there is none."""
    candidates = np.flatnonzero(where)
    if candidates.size == 0:
        return None, None
    i = int(candidates[np.argmax(rel[candidates])])
    return float(rel[i]), i


@dataclass(frozen=True)
class InputComparison:
    """Comparison of one input's analytic gradient with the oracles."""

    mismatches: tuple[Mismatch, ...]
    kinks: tuple[Kink, ...]
    disagreements: tuple[Disagreement, ...]
    worst: Mapping[str, float | None]  # oracle -> largest relative error against it
    mismatch_mask: np.ndarray
    reference: np.ndarray | None = None  # best oracle value per element (flat), for diagnosis
    usable: np.ndarray | None = None  # elements compared against it (flat)
    compared: int = 0  # elements compared with an oracle's value (kinks and failures aside)
    worst_at: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # oracle -> element of its worst
    caught: float | None = None  # the smallest relative error in one element that would be flagged


def compare_input(
    name: str,
    shape: tuple[int, ...],
    analytic: np.ndarray,
    estimate: NumericEstimate,
    exact: Mapping[str, np.ndarray],
    tol: Tolerance,
    exact_error: np.ndarray | float = 0.0,
    budget: np.ndarray | float = 0.0,
) -> InputComparison:
    """Compare flat gradients of one input.

    Args:
        name, shape: the input (for element indices in the findings).
        analytic: the backward's gradient, flat ``(n,)``.
        estimate: the numeric oracle's estimate (gradient, error, kinks and their slopes); all
            NaN where it did not run.
        exact: the exact oracles' gradients by name, flat ``(n,)``, in the order they are
            preferred as the reference (empty where none ran).
        tol: tolerance settings for this input's precision.
        exact_error: rounding allowed between the analytic gradient and an exact oracle's
            (scalar or ``(n,)``); both are computed in floating point through the forward's
            intermediates.
        budget: what a gradient computed below float64 is allowed against the float64 oracles
            (scalar or ``(n,)``, ``tolerance.low_precision_allowance``), added to every
            allowance of the analytic value (0 for a float64 gradient).

    Away from kinks an element is held to the oracles' values: a mismatch where it disagrees
    with an exact oracle, or with the numeric one unless an exact oracle confirms it (then the
    numeric oracle's disagreement is reported as such). At a kink it is held to the range the
    one-sided slopes allow (``estimate.low``, ``estimate.high``): a value outside it is the slope
    of no piece meeting there, whatever the convention at the kink. Exact oracles that disagree
    with each other are reported as disagreements.
    """
    numeric, numeric_error, kink = estimate.gradient, estimate.error, estimate.kink
    finite = np.isfinite(numeric)
    scale = float(
        max(
            np.max(np.abs(analytic), initial=0.0),
            np.max(np.abs(numeric[finite & ~kink]), initial=0.0),
            *(np.max(np.abs(e), initial=0.0) for e in exact.values()),
        )
    )
    compared = finite & ~kink
    numeric_allowance = allowed(analytic, numeric, numeric_error + budget, tol, scale)
    bad_numeric = compared & (np.abs(analytic - numeric) > numeric_allowance)
    rel_numeric = relative_error(analytic, numeric, scale)
    # The worst error is reported over elements the numeric oracle resolves (larger than its
    # own error estimate); below that, a relative error says nothing about the gradient.
    resolved = compared & (np.maximum(np.abs(analytic), np.abs(numeric)) > numeric_error)

    # At a kink: the analytic value against the nearest end of the range the slopes allow.
    bounded = kink & np.isfinite(estimate.low) & np.isfinite(estimate.high)
    with np.errstate(invalid="ignore"):
        nearest = np.where(bounded, np.clip(analytic, estimate.low, estimate.high), analytic)
    with np.errstate(invalid="ignore"):
        kink_allowance = allowed(analytic, nearest,
                                 np.where(bounded, kink_margin(estimate.low, estimate.high), 0.0) + budget, tol, scale)
    outside = bounded & (np.abs(analytic - nearest) > kink_allowance)

    bad_exact, rel_exact, disagree, worst, worst_index = {}, {}, {}, {}, {}
    for oracle, e in exact.items():
        bad_exact[oracle] = ~kink & (np.abs(analytic - e) > allowed(analytic, e, exact_error + budget, tol, scale))
        rel_exact[oracle] = relative_error(analytic, e, scale)
        # As for numeric: over elements above the rounding floor (a gradient that should be
        # exactly zero, computed as 1e-16, has no meaningful relative error).
        measurable = ~kink & (np.maximum(np.abs(analytic), np.abs(e)) > np.maximum(tol.rounding, exact_error))
        worst[oracle], worst_index[oracle] = worst_of(rel_exact[oracle], measurable)
        disagree[oracle] = compared & (np.abs(numeric - e) > allowed(numeric, e, numeric_error, tol, scale))

    # An element the analytic gradient gets right by an exact oracle, where the numeric oracle
    # disagrees with both, is an oracle disagreement (reported below), not a mismatch: the exact
    # oracle confirms the backward, and central differences of a forward whose float evaluation
    # is coarse (a saturated log-sum-exp rounds in steps far larger than its value) can be off.
    no = np.zeros_like(bad_numeric)
    confirmed = functools.reduce(np.logical_or, [~bad_exact[o] & disagree[o] for o in exact], no)
    any_exact_bad = functools.reduce(np.logical_or, bad_exact.values(), no)
    bad = any_exact_bad | (bad_numeric & ~confirmed) | outside
    # The worst error against numeric leaves out where every exact oracle disagrees with it
    # (those are disagreements): there it measures the oracle, not the backward.
    disputed = functools.reduce(np.logical_and, disagree.values(), ~no) if exact else no
    worst["numeric"], worst_index["numeric"] = worst_of(rel_numeric, resolved & ~disputed)

    rel_kink = relative_error(analytic, nearest, scale)
    rel_any = np.where(compared, rel_numeric, 0.0)
    for rel in rel_exact.values():
        rel_any = np.maximum(rel_any, np.where(kink, 0.0, rel))
    rel_any = np.where(outside, rel_kink, rel_any)
    order = np.flatnonzero(bad)
    order = order[np.argsort(-rel_any[order], kind="stable")]

    # The value each mismatch is held to, and its allowance, in the gradient's units: the first
    # exact oracle that disagrees, else the numeric estimate (or the range allowed at a kink).
    held = numeric.copy()
    held_allowance = numeric_allowance
    chosen = np.zeros_like(bad)
    for oracle, e in exact.items():
        take = bad_exact[oracle] & ~chosen
        held = np.where(take, e, held)
        held_allowance = np.where(take, allowed(analytic, e, exact_error + budget, tol, scale), held_allowance)
        chosen |= take
    held = np.where(outside, nearest, held)
    held_allowance = np.where(outside, kink_allowance, held_allowance)

    def at(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()

    def values_at(i: int) -> dict[str, float]:
        values = {"numeric": float(numeric[i])} if compared[i] else {}
        values.update((o, float(e[i])) for o, e in exact.items())
        return values

    def oracles_against(i: int) -> tuple[str, ...]:
        flags = (("numeric", bad_numeric[i] or outside[i]), *((o, b[i]) for o, b in bad_exact.items()))
        return tuple(o for o, flag in flags if flag)

    mismatches = tuple(
        Mismatch(
            input=name,
            index=at(i),
            analytic=float(analytic[i]),
            references=values_at(i),
            errors={"numeric": float(numeric_error[i])} if compared[i] else {},
            relative_error=float(rel_any[i]),
            tolerance=float(held_allowance[i]),
            against=oracles_against(i),
            difference=float(abs(analytic[i] - held[i])),
            slopes=(float(estimate.left[i]), float(estimate.right[i])) if outside[i] else None,
        )
        for i in order.tolist()
    )
    kinks = tuple(
        Kink(name, at(i), float(analytic[i]), float(estimate.left[i]), float(estimate.right[i]),
             {o: float(e[i]) for o, e in exact.items()})
        for i in np.flatnonzero(kink).tolist()
    )
    disagreements = [
        Disagreement(name, at(i), {"numeric": float(numeric[i]), oracle: float(exact[oracle][i])},
                     {"numeric": float(numeric_error[i])})
        for oracle, mask in disagree.items() for i in np.flatnonzero(mask).tolist()
    ]
    names = list(exact)
    for k, first in enumerate(names):
        for second in names[k + 1:]:
            e1, e2 = exact[first], exact[second]
            apart = ~kink & (np.abs(e1 - e2) > allowed(e1, e2, exact_error, tol, scale))
            disagreements += [Disagreement(name, at(i), {first: float(e1[i]), second: float(e2[i])})
                              for i in np.flatnonzero(apart).tolist()]
    reference = next(iter(exact.values()), numeric)
    usable = ~kink if exact else compared
    worst_at = {o: at(i) for o, i in worst_index.items() if i is not None}
    caught = smallest_caught(reference, exact_error + budget if exact else numeric_error + budget, tol, scale,
                             usable & np.isfinite(reference))
    return InputComparison(mismatches, kinks, tuple(disagreements), worst, bad, reference, usable,
                           compared=int(compared.sum()), worst_at=worst_at, caught=caught)


def smallest_caught(
    reference: np.ndarray, error: np.ndarray | float, tol: Tolerance, scale: float, where: np.ndarray
) -> float | None:
    """The smallest relative error ``r`` such that an analytic element ``ref (1 + r)`` would be
    flagged against ``reference`` with its ``error``, over the elements ``where`` (the check's
    most sensitive element); None where no element has a nonzero reference."""
    magnitude = np.abs(reference)
    candidates = where & (magnitude > 0)
    if not candidates.any():
        return None
    limit = np.broadcast_to(allowed(reference, reference, error, tol, scale), reference.shape)
    # |ref| r > rtol |ref| (1 + r) + rest  <=>  r > (rtol |ref| + rest) / ((1 - rtol) |ref|)
    with np.errstate(divide="ignore", over="ignore"):
        r = limit[candidates] / (max(1.0 - tol.rtol, 1e-12) * magnitude[candidates])
    return float(np.min(r))
