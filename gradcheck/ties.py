"""Kinks that move together: the check of a tie, which no single element can see.

At a tie (two equal maxima, in one input or across inputs), each tied element on its own has
one-sided slopes ``0 | 1``, so a backward that sends the whole upstream gradient to every tied
element passes element by element. Moving the tied elements together shows it: the loss then
changes at slope 1, while the analytic gradient sums to 2.

The test moves the kink elements together by the same step ``t`` (all of them, then those of
each input) and measures the one-sided directional slopes ``D+`` and ``D-`` along the move. It
judges only where both of these hold:

* the kinks are coupled: ``D+`` or ``D-`` differs from the sum of the elements' own one-sided
  slopes (separate kinks, such as ReLU inputs at 0, add up, and the per-element test already
  said all there is);
* the move is smooth: ``D+ == D-``. Moving a tie together keeps it a tie, so the loss has one
  slope along the move, which the gradient of every piece meeting there shares; the analytic
  sum must equal it. Where the move itself crosses a kink (a ReLU unit dead for a whole batch,
  whose inputs several elements feed), a correct backward's sum depends on its convention at
  the kink, and nothing is concluded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gradcheck.evaluate import Evaluator
from gradcheck.result import Mismatch, Tolerance
from gradcheck.tolerance import allowed, coupling_limit, one_sided_noise

__all__ = ["TiedKinks", "check_ties"]


@dataclass(frozen=True)
class TiedKinks:
    """Where the kink elements of a check were moved together.

    Attributes:
        elements: ``(input, flat index)`` of every element moved.
        analytic: the sum of the analytic gradient over them.
        low, high: the one-sided directional slopes along the move, in order.
        judged: True where the kinks are coupled and the move smooth (see the module
            docstring), so the analytic sum was held to the slope along the move.
        mismatch: the finding when the analytic sum lies outside ``[low, high]``.
    """

    elements: tuple[tuple[str, int], ...]
    analytic: float
    low: float
    high: float
    judged: bool
    mismatch: Mismatch | None


def check_ties(
    ev: Evaluator,
    f0: float,
    sigma: float,
    kinks: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    left: Mapping[str, np.ndarray],
    right: Mapping[str, np.ndarray],
    analytic: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    tol: Tolerance,
) -> list[TiedKinks]:
    """Move the kink elements together and test the analytic sums (4 evaluations a move).

    Args:
        ev: the evaluator at the point (its working copy is restored afterwards).
        f0: ``L`` at the point; sigma: the forward's noise level.
        kinks: input -> flat indices of its kink elements.
        steps, left, right, analytic: input -> flat arrays over all of the input's elements:
            the central step, the one-sided slopes and the analytic gradient.
        shapes: input -> shape, for the element indices of a finding.
        tol: the tolerance (the strictest of the inputs involved).
    Returns:
        What each move found: all kink elements together, then each input's on its own where
        kinks sit in more than one input; moves of fewer than two elements are not made.
    """
    everything = tuple((name, int(i)) for name, idx in kinks.items() for i in idx.tolist())
    groups = [everything]
    if sum(1 for idx in kinks.values() if idx.size) > 1:
        groups += [tuple((name, int(i)) for i in idx.tolist()) for name, idx in kinks.items()]
    found = []
    for elements in groups:
        if len(elements) >= 2:
            move = _move(ev, f0, sigma, elements, steps, left, right, analytic, shapes, tol)
            if move is not None:
                found.append(move)
    return found


def _move(
    ev: Evaluator, f0: float, sigma: float, elements: tuple[tuple[str, int], ...],
    steps: Mapping[str, np.ndarray], left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray],
    analytic: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], tol: Tolerance,
) -> TiedKinks | None:
    t = min(float(steps[name][i]) for name, i in elements)  # no element's own step is crossed
    direction: dict[str, np.ndarray] = {}
    for name, i in elements:
        direction.setdefault(name, np.zeros(ev.work[name].shape)).reshape(-1)[i] = 1.0
    plus1, plus2, minus1, minus2 = ev.direction_values(direction, np.array([t, 2 * t, -t, -2 * t]))
    if not np.all(np.isfinite([plus1, plus2, minus1, minus2])):
        return None
    right1, right2 = (plus1 - f0) / t, (plus2 - f0) / (2 * t)
    left1, left2 = (f0 - minus1) / t, (f0 - minus2) / (2 * t)
    d_plus, d_minus = 2 * right1 - right2, 2 * left1 - left2
    noise = one_sided_noise(sigma, t)

    sum_right = sum(float(right[name][i]) for name, i in elements)
    sum_left = sum(float(left[name][i]) for name, i in elements)
    size = sum(abs(float(right[name][i])) + abs(float(left[name][i])) for name, i in elements)
    # The elements' own slopes were measured at their own steps, each with its noise.
    own_noise = sum(one_sided_noise(sigma, float(steps[name][i])) for name, i in elements)
    limit = coupling_limit(size, noise) + own_noise
    coupled = abs(d_plus - sum_right) > limit or abs(d_minus - sum_left) > limit
    # Along the move the two slopes are one, up to the noise of each.
    smooth = abs(d_plus - d_minus) <= coupling_limit(abs(d_plus) + abs(d_minus), 2 * noise)
    total = sum(float(analytic[name][i]) for name, i in elements)
    low, high = min(d_minus, d_plus), max(d_minus, d_plus)
    mismatch = None
    if coupled and smooth:
        nearest = min(max(total, low - noise), high + noise)
        allowance = float(allowed(np.array(total), np.array(nearest), 0.0, tol, abs(nearest)))
        if abs(total - nearest) > allowance:
            name, i = elements[0]
            shape = shapes[name]
            index = tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()
            rel = abs(total - nearest) / max(abs(total), abs(nearest))
            mismatch = Mismatch(
                name, index, total, {}, {}, rel, allowance, ("numeric",),
                difference=abs(total - nearest), slopes=(d_minus, d_plus),
                tied=tuple(_label(n, j, shapes[n]) for n, j in elements),
            )
    return TiedKinks(elements, total, low, high, coupled and smooth, mismatch)


def _label(name: str, i: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return name
    return f"{name}[{', '.join(str(int(j)) for j in np.unravel_index(i, shape))}]"
