"""The Taylor test: a second opinion on a gradient that needs no choice of step.

Along a direction ``v`` the remainder ``r(h) = |L(x + h v) - L(x) - h <g, v>|`` shrinks as ``h^2``
when the gradient ``g`` is right and as ``h`` when it is wrong (the first-order error ``h <e, v>``
outlives the curvature's ``h^2`` term as ``h`` shrinks). The observed order, the slope of
``log r`` against ``log h`` over ``tolerance.TAYLOR_STEPS`` halving steps (the smallest ones above
the noise floor the numeric oracle measured), is evidence whatever step the numeric oracle chose:
"remainder order 1.00 (wrong)" or "2.00 (right)".

``assess`` runs it per input next to every failure and every marginal pass, along a random
direction and along the worst mismatching element; where no exact oracle ran, a mismatch only
the numeric oracle saw is cleared when the remainder along it has order 2 (or stays at the noise
floor) and is far below what the claimed error would leave (``tolerance.taylor_clears``), and
confirmed when the order is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gradcheck.evaluate import Evaluator
from gradcheck.numeric import element_scale
from gradcheck.result import InputSummary, Mismatch, TaylorEvidence
from gradcheck.tolerance import (
    TAYLOR_FIT_POINTS,
    TAYLOR_START,
    TAYLOR_STEPS,
    marginal,
    taylor_clears,
    taylor_floor,
    taylor_verdict,
)

__all__ = ["MAX_CLEARED", "TaylorFound", "assess", "observed_order", "remainder_test"]

MAX_CLEARED = 5  # numeric-only mismatches per input put to the Taylor test (the worst first)


def observed_order(steps: np.ndarray, remainders: np.ndarray, floor: np.ndarray) -> float | None:
    """The slope of ``log r`` against ``log h`` over the smallest ``TAYLOR_FIT_POINTS`` steps
    whose remainder is above the ``floor`` (two at least); None when fewer rose above it."""
    above = np.flatnonzero(np.isfinite(remainders) & (remainders > floor))
    if above.size < 2:
        return None
    fit = above[np.argsort(steps[above])[:TAYLOR_FIT_POINTS]]
    slope = np.polyfit(np.log(steps[fit]), np.log(remainders[fit]), 1)[0]
    return float(slope)


def remainder_test(
    ev: Evaluator, direction: Mapping[str, np.ndarray], slope: float, f0: float, sigma: float, eps: float,
    *, input: str, label: str,
) -> TaylorEvidence:
    """The Taylor test along ``direction`` (name -> array shaped like that input) for a claimed
    directional derivative ``slope`` (``<g, v>``), at the point where ``L`` is ``f0`` with noise
    ``sigma`` (``TAYLOR_STEPS`` evaluations)."""
    steps = TAYLOR_START * 0.5 ** np.arange(TAYLOR_STEPS)
    values = ev.direction_values(dict(direction), steps)
    linear = steps * slope
    with np.errstate(invalid="ignore"):
        remainders = np.abs(values - f0 - linear)
    floor = taylor_floor(sigma, eps, linear)
    order = observed_order(steps, remainders, floor)
    noise = float(np.max(floor))
    return TaylorEvidence(input, label, order, taylor_verdict(order), tuple(steps.tolist()),
                          tuple(remainders.tolist()), noise)


@dataclass
class TaylorFound:
    """What ``assess`` found: the evidence, the mismatches it cleared (by input: their elements)
    and notes."""

    evidence: list[TaylorEvidence] = field(default_factory=list)
    cleared: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _located(m: Mismatch) -> bool:
    """A mismatch at one element, held to the numeric oracle alone (no kink, no tie)."""
    return m.analytic == m.analytic and m.slopes is None and not m.tied and m.against == ("numeric",)


def assess(
    ev: Evaluator, f0: float, sigma: Callable[[], float], eps: float, summaries: Sequence[InputSummary],
    analytic: Mapping[str, np.ndarray], mismatches: Sequence[Mismatch], *, exact_ran: bool,
    rng: np.random.Generator,
) -> TaylorFound:
    """The Taylor test next to every failing or marginal input (see the module docstring).

    Args:
        ev: evaluates ``L`` (the check's evaluator at the point, value ``f0``).
        sigma: the forward's noise, measured on first use; ``eps`` the output's roundoff.
        summaries, analytic, mismatches: the reverse-mode check's per-input verdicts, the analytic
            gradients and the mismatches.
        exact_ran: an exact oracle checked the gradients (then nothing is cleared).
        rng: draws the random directions.
    """
    found = TaylorFound()
    for summary in summaries:
        name = summary.name
        if name not in analytic or analytic[name].size == 0:
            continue
        # Against an exact oracle where one ran (the numeric oracle's own error, near 1e-8 in
        # float64, would make every pass look marginal), else against the numeric one.
        exact = [w for o, w in summary.worst.items() if o != "numeric" and w is not None]
        worst = max(exact, default=None) if exact else summary.worst.get("numeric")
        own = [m for m in mismatches if m.input == name and m.mode == "reverse" and not m.tied]
        # A pass below float64 is held to a measured budget, not an rtol: nothing to be marginal to.
        if summary.ok and (summary.budget or not marginal(worst, summary.tolerance.rtol)):
            continue
        ev.tracker.stage("Taylor test", name)
        g = np.asarray(analytic[name], dtype=np.float64)
        weights = element_scale(ev.work[name])
        v = rng.standard_normal(g.shape) * weights
        found.evidence.append(remainder_test(ev, {name: v}, float(np.sum(g * v)), f0, sigma(), eps,
                                             input=name, label="random"))
        located = [m for m in own if m.analytic == m.analytic and m.slopes is None]
        for k, m in enumerate(located[:MAX_CLEARED if not exact_ran else 1]):
            e = np.zeros(g.shape)
            e[m.index] = weights[m.index]
            where = f"{name}[{', '.join(map(str, m.index))}]" if m.index else name
            evidence = remainder_test(ev, {name: e}, float(g[m.index] * e[m.index]), f0, sigma(), eps,
                                      input=name, label=where)
            numeric = m.references.get("numeric")
            if not exact_ran and _located(m) and numeric is not None and evidence.remainders:
                claimed = (m.analytic - numeric) * float(e[m.index])
                smallest = evidence.remainders[-1]
                if np.isfinite(smallest) and taylor_clears(evidence.verdict, smallest, evidence.steps[-1], claimed):
                    evidence = replace(evidence, cleared=True)
                    found.cleared.setdefault(name, []).append(m.index)
            if k == 0 or evidence.cleared:
                found.evidence.append(evidence)
    for name, indices in found.cleared.items():
        shown = ", ".join(f"{name}[{', '.join(map(str, i))}]" if i else name for i in indices)
        found.notes.append(
            f"{shown}: the numeric oracle's mismatch is cleared by the Taylor test (the remainder along it "
            "shrinks as h^2, far below what the claimed error would leave): the numeric estimate was wrong there"
        )
    return found
