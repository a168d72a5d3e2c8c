"""Analytic against the oracles, per input: no I/O, never raises (the rule is ``tolerance``'s).

All arrays here are flat float64 views of one input's gradient, so element ``i`` is the same
element in every array.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gradcheck.numeric import NumericEstimate
from gradcheck.result import Disagreement, Kink, Mismatch, Tolerance
from gradcheck.tolerance import allowed, relative_error

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
    worst_numeric: float | None
    worst_torch: float | None
    mismatch_mask: np.ndarray
    reference: np.ndarray | None = None  # best oracle value per element (flat), for diagnosis
    usable: np.ndarray | None = None  # elements compared against it (flat)
    compared: int = 0  # elements compared with an oracle's value (kinks and failures aside)
    worst_at: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # oracle -> element of its worst


def compare_input(
    name: str,
    shape: tuple[int, ...],
    analytic: np.ndarray,
    estimate: NumericEstimate,
    torch: np.ndarray | None,
    tol: Tolerance,
    torch_error: np.ndarray | float = 0.0,
) -> InputComparison:
    """Compare flat gradients of one input.

    Args:
        name, shape: the input (for element indices in the findings).
        analytic: the backward's gradient, flat ``(n,)``.
        estimate: the numeric oracle's estimate (gradient, error, kinks and their slopes).
        torch: autograd's gradient ``(n,)``, or None if that oracle did not run.
        tol: tolerance settings for this input's precision.
        torch_error: rounding allowed between the analytic and torch gradients (scalar or
            ``(n,)``); both are computed in floating point through the forward's intermediates.

    Away from kinks an element is held to the oracles' values. At a kink it is held to the
    range of the one-sided slopes (``estimate.low``, ``estimate.high``): a value outside it is
    the slope of no piece meeting there, whatever the convention at the kink.
    """
    numeric, numeric_error, kink = estimate.gradient, estimate.error, estimate.kink
    finite = np.isfinite(numeric)
    scale = float(
        max(
            np.max(np.abs(analytic), initial=0.0),
            np.max(np.abs(numeric[finite & ~kink]), initial=0.0),
            np.max(np.abs(torch), initial=0.0) if torch is not None else 0.0,
        )
    )
    compared = finite & ~kink
    bad_numeric = compared & (np.abs(analytic - numeric) > allowed(analytic, numeric, numeric_error, tol, scale))
    rel_numeric = relative_error(analytic, numeric, scale)
    # The worst error is reported over elements the numeric oracle resolves (larger than its
    # own error estimate); below that, a relative error says nothing about the gradient.
    resolved = compared & (np.maximum(np.abs(analytic), np.abs(numeric)) > numeric_error)
    worst_numeric, worst_numeric_at = worst_of(rel_numeric, resolved)

    # At a kink: the analytic value against the nearest end of the slopes' range.
    bounded = kink & np.isfinite(estimate.low) & np.isfinite(estimate.high)
    with np.errstate(invalid="ignore"):
        nearest = np.where(bounded, np.clip(analytic, estimate.low, estimate.high), analytic)
    kink_allowance = allowed(analytic, nearest, 0.0, tol, scale)
    outside = bounded & (np.abs(analytic - nearest) > kink_allowance)

    bad_torch = np.zeros_like(bad_numeric)
    disagree = np.zeros_like(bad_numeric)
    worst_torch = worst_torch_at = None
    rel_torch = None
    if torch is not None:
        bad_torch = ~kink & (np.abs(analytic - torch) > allowed(analytic, torch, torch_error, tol, scale))
        rel_torch = relative_error(analytic, torch, scale)
        # As for numeric: over elements above the rounding floor (a gradient that should be
        # exactly zero, computed as 1e-16, has no meaningful relative error).
        measurable = ~kink & (np.maximum(np.abs(analytic), np.abs(torch)) > np.maximum(tol.rounding, torch_error))
        worst_torch, worst_torch_at = worst_of(rel_torch, measurable)
        disagree = compared & (np.abs(numeric - torch) > allowed(numeric, torch, numeric_error, tol, scale))

    # An element the analytic gradient gets right by torch, where the numeric oracle disagrees
    # with both, is an oracle disagreement (reported below), not a mismatch: the exact oracle
    # confirms the backward, and central differences of a forward whose float evaluation is
    # coarse (a saturated log-sum-exp rounds in steps far larger than its value) can be off.
    bad = bad_torch | (bad_numeric & ~disagree) | outside
    if disagree.any() and resolved.any():
        # The worst error against numeric leaves out where it disagrees with torch too (those
        # are reported as disagreements): there it measures the oracle, not the backward.
        trusted = resolved & ~disagree
        worst_numeric, worst_numeric_at = worst_of(rel_numeric, trusted)
    rel_kink = relative_error(analytic, nearest, scale)
    rel_any = np.where(compared, rel_numeric, 0.0)
    if rel_torch is not None:
        rel_any = np.maximum(rel_any, np.where(kink, 0.0, rel_torch))
    rel_any = np.where(outside, rel_kink, rel_any)
    order = np.flatnonzero(bad)
    order = order[np.argsort(-rel_any[order], kind="stable")]

    # The value each mismatch is held to, and its allowance, in the gradient's units.
    if torch is None:
        held, held_allowance = numeric, allowed(analytic, numeric, numeric_error, tol, scale)
    else:
        via_torch = bad_torch | ~(bad_numeric & ~disagree)
        held = np.where(via_torch, torch, numeric)
        held_allowance = np.where(
            via_torch,
            allowed(analytic, torch, torch_error, tol, scale),
            allowed(analytic, numeric, numeric_error, tol, scale),
        )
    held = np.where(outside, nearest, held)
    held_allowance = np.where(outside, kink_allowance, held_allowance)

    def at(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()

    def oracles_against(i: int) -> tuple[str, ...]:
        flags = (("numeric", bad_numeric[i] or outside[i]), ("torch", bad_torch[i]))
        return tuple(o for o, flag in flags if flag)

    mismatches = tuple(
        Mismatch(
            input=name,
            index=at(i),
            analytic=float(analytic[i]),
            numeric=float(numeric[i]) if finite[i] and not kink[i] else None,
            numeric_error=float(numeric_error[i]) if finite[i] and not kink[i] else None,
            torch=None if torch is None else float(torch[i]),
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
             None if torch is None else float(torch[i]))
        for i in np.flatnonzero(kink).tolist()
    )
    disagreements = tuple(
        Disagreement(name, at(i), float(numeric[i]), float(numeric_error[i]), float(torch[i]))
        for i in np.flatnonzero(disagree).tolist()
    ) if torch is not None else ()
    reference = numeric if torch is None else torch
    usable = compared if torch is None else ~kink
    worst_at = {oracle: at(i) for oracle, i in (("numeric", worst_numeric_at), ("torch", worst_torch_at))
                if i is not None}
    return InputComparison(mismatches, kinks, disagreements, worst_numeric, worst_torch, bad, reference,
                           usable, compared=int(compared.sum()), worst_at=worst_at)
