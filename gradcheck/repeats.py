"""Nondeterminism, measured: the forward and the backward run again at the point.

A backward that adds with atomics, or sums in an order that changes between calls, gives
gradients that differ in the last bits from run to run; torch's gradcheck demands bit-identical
repeats and fails such a backward. Here the backward runs ``tolerance.REPEATS`` times at the
point (the check's own call is the first), up to ``tolerance.MAX_REPEATS`` when the runs differ,
and the spread between the runs is measured:

* within what a reordered sum may move a gradient (``tolerance.reorder_limit``) it is reported
  (``backward nondeterministic: relative spread 4e-16 over 8 runs``) and added to the allowance
  (``Tolerance.spread``);
* beyond it, or at all with ``deterministic=True``, it is a fault.

The forward likewise: its output at the point is computed again, rounding-level differences
(within ``tolerance.determinism_limit`` of the output's size) are reported, larger ones (or any
with ``deterministic=True``) are a fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from gradcheck.evaluate import ForwardFailure
from gradcheck.point import Fault, Point
from gradcheck.render import fmt, index_str
from gradcheck.reruns import Backprop
from gradcheck.tolerance import MAX_REPEATS, REPEATS, determinism_limit

__all__ = ["Repeated", "backward_repeats", "forward_repeats"]


@dataclass
class Repeated:
    """What the repeated runs of the backward found: the spread per input where it is allowed
    (added to its allowance; with no fault, what a gradient computed once more may move by),
    faults and notes."""

    spread: dict[str, float] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _runs(first: Mapping[str, np.ndarray], again: Callable[[], Mapping[str, np.ndarray]],
          done: tuple[Mapping[str, np.ndarray], ...] = ()) -> list[dict[str, np.ndarray]]:
    """``first``, the runs already ``done`` and runs of ``again``: ``REPEATS`` in all,
    ``MAX_REPEATS`` when they differ."""
    runs = [dict(first), *(dict(d) for d in done)]
    while len(runs) < MAX_REPEATS:
        if len(runs) >= REPEATS and all(_same(r, runs[0]) for r in runs[1:]):
            break
        runs.append(dict(again()))
    return runs


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)


def _spread(runs: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """Per element (flat), the largest distance of a run from the first."""
    first = np.asarray(runs[0][name], dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        gaps = [np.abs(np.asarray(r[name], dtype=np.float64).reshape(-1) - first) for r in runs[1:]]
    return np.max(gaps, axis=0) if gaps else np.zeros(first.shape)


def backward_repeats(
    backprop: Backprop, first: Mapping[str, np.ndarray], dout: np.ndarray | float,
    limits: Mapping[str, Callable[[np.ndarray], np.ndarray]], *, deterministic: bool,
) -> Repeated:
    """Run the backward again at ``dout`` (``first`` is the check's own run) and measure the
    spread; ``limits`` per input is the rounding a reordered sum may move its gradient by."""
    found = Repeated()
    try:
        runs = _runs(first, lambda: backprop.at(dout))
    except Fault as fault:
        found.faults.append(f"{fault} when called again at the same point")
        return found
    if all(_same(r, runs[0]) for r in runs[1:]):
        return found  # bit-identical runs: nothing to measure
    names = [n for n in first if all(n in r for r in runs)]
    spreads = {n: _spread(runs, n) for n in names}
    if not any(np.any(s != 0) for s in spreads.values()):
        return found
    size = max((float(np.max(np.abs(first[n]), initial=0.0)) for n in names), default=0.0)
    largest = max(float(np.nanmax(s, initial=0.0)) for s in spreads.values())
    relative = largest / size if size > 0 else float("inf")
    what = f"relative spread {fmt(relative, 2)} over {len(runs)} runs"
    found.notes.append(f"backward nondeterministic: {what}")
    for name in names:
        spread, reference = spreads[name], np.asarray(first[name], dtype=np.float64).reshape(-1)
        limit = limits[name](reference) if name in limits else np.zeros(reference.shape)
        beyond = ~(spread <= limit)  # NaN (a run gave a non-finite value) is beyond too
        if deterministic or beyond.any():
            i = int(np.argmax(np.where(beyond, np.nan_to_num(spread, nan=np.inf), -1.0))) if beyond.any() \
                else int(np.argmax(spread))
            index = tuple(int(k) for k in np.unravel_index(i, np.shape(first[name])))
            values = [float(np.asarray(r[name], dtype=np.float64).reshape(-1)[i]) for r in runs]
            why = ("deterministic=True asks for identical runs" if deterministic and not beyond.any()
                   else f"beyond rounding: allowed {fmt(float(limit[i]), 2)}")
            found.faults.append(
                f"backward is nondeterministic: {what}; {index_str(name, index)} took values from "
                f"{min(values):.15g} to {max(values):.15g}, {fmt(float(spread[i]), 2)} apart ({why})"
            )
        else:
            found.spread[name] = float(np.max(spread, initial=0.0))
    return found


def forward_repeats(point: Point, *, deterministic: bool) -> tuple[list[str], list[str]]:
    """Evaluate the forward again at the point: ``(faults, notes)`` on its nondeterminism."""
    if point.output.size == 0:
        return [], []
    ev = point.evaluator
    first = np.asarray(point.output, dtype=np.float64)

    def again() -> dict[str, np.ndarray]:
        return {"out": np.asarray(ev.output(), dtype=np.float64)}

    # The point's determinism check called the forward a second time: that is the first repeat.
    done = () if point.repeat is None else ({"out": np.asarray(point.repeat, dtype=np.float64)},)
    try:
        runs = _runs({"out": first}, again, done)
    except ForwardFailure as exc:
        return [f"forward {exc} when called again at the same point"], []
    spread = _spread(runs, "out")
    if not np.any(spread != 0):
        return [], []
    size = float(np.max(np.abs(first)))
    largest = float(np.nanmax(spread))
    what = f"relative spread {fmt(largest / size if size > 0 else float('inf'), 2)} over {len(runs)} runs"
    limit = determinism_limit(point.eps, size)
    if deterministic or not largest <= limit:
        why = "deterministic=True asks for identical runs" if deterministic and largest <= limit else (
            f"beyond rounding: allowed {fmt(limit / size if size > 0 else limit, 2)} of the output's size")
        return [f"forward is nondeterministic: {what} ({why})"], []
    return [], [f"forward nondeterministic: {what} (rounding: allowed)"]
