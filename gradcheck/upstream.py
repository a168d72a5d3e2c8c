"""Structured upstream gradients: does the backward read ``dout`` whole?

A test built on ``loss.sum()`` hands every backward ``dout = 1`` everywhere, so a kernel that
loads ``grad_output`` as one scalar, or one value per row, passes it. The check's random
``dout`` catches such a kernel; this module adds upstream gradients with the structure real
losses hand back (``structured``): distinct values per row (constant within it), zero rows,
one-hot rows, and an ignore-index mask (rows dropped, the rest weighted 1/kept as a mean over
them); and it names the bug behind a mismatch when the backward sees ``dout`` only through a
reduction (``reading``).

The truth at each of them is the numeric oracle's, cheaply: the numeric vector-Jacobian product
is linear in ``dout``, so the forward's outputs along one random direction per input
(``x +- h v``, ``x +- 2h v``: four evaluations, Richardson-extrapolated, with an error
estimate) give ``J v`` once, and ``dout' . J v`` is the numeric directional derivative at every
``dout'``, held to the backward's ``a(dout') . v`` with the directional allowance
(``tolerance.directional_allowance``). This needs no exact oracle, so it checks autograd's
gradient of a custom ``torch.autograd.Function`` (``backward=None``) too.

A mismatch at a structured ``dout`` is reported for an input whose check at the random one
passed (one directional mismatch, kind "upstream"). For an input that failed, the backward is
called at reductions ``R(dout)`` of the random ``dout``: where its gradient is the same as at
``dout`` while the true one differs (``dout - R(dout)`` moves ``J v``), the backward reads the
upstream gradient only through ``R``: a constant of the same sum ("treats the upstream gradient
as a scalar"), its first element, or its mean or first slice along one axis ("broadcasts it
along the wrong axis"), or nothing at all ("ignores the upstream gradient").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gradcheck.directional import STEP_FACTOR  # a quarter of the per-element step: rarely a kink crossed
from gradcheck.evaluate import Evaluator, ForwardFailure
from gradcheck.numeric import element_scale, richardson
from gradcheck.point import Fault, Noise, Point
from gradcheck.progress import NULL_TRACKER
from gradcheck.render import fmt
from gradcheck.reruns import Backprop, Findings
from gradcheck.result import Diagnosis, Mismatch, Tolerance
from gradcheck.tolerance import directional_allowance, relative_error

__all__ = ["STRUCTURES", "TRIES", "Jvp", "check_upstream", "numeric_jvp", "structured"]

STRUCTURES = ("distinct rows", "zero rows", "one-hot rows", "masked")
TRIES = 3  # directions drawn per input while they cross a kink


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """The output seen as rows: its first axis by the rest (a vector: one element per row)."""
    m = shape[0]
    return m, math.prod(shape[1:]) if len(shape) > 1 else 1


def structured(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """The structured upstream gradients for an output of ``shape`` (at least 2 elements), by name.

    * "distinct rows": row ``i`` holds one value, distinct between rows, alternating in sign;
    * "zero rows": random rows with every other row zero (the first is not);
    * "one-hot rows": one random value per row, at column ``3 i mod k``;
    * "masked": an ignore-index pattern: a third of the rows dropped (0), the others ``1/kept``.

    A structure that needs two rows is left out of a one-row output.
    """
    m, k = _rows(shape)
    rng = np.random.default_rng([seed, 3])
    found: dict[str, np.ndarray] = {}
    i = np.arange(m)
    found["distinct rows"] = np.repeat(((i + 1.0) * np.where(i % 2, -1.0, 1.0) / m)[:, None], k, axis=1)
    if m >= 2:
        zero = rng.standard_normal((m, k))
        zero[1::2] = 0.0
        found["zero rows"] = zero
    hot = np.zeros((m, k))
    hot[i, (3 * i) % k] = rng.standard_normal(m)
    found["one-hot rows"] = hot
    if m >= 2:
        kept = rng.random(m) >= 1 / 3
        kept[0], kept[-1] = True, False
        found["masked"] = np.repeat((kept / kept.sum())[:, None], k, axis=1)
    return {n: d.reshape(shape) for n, d in found.items()}


@dataclass(frozen=True)
class Jvp:
    """The numeric ``J v`` of the forward along one direction ``v`` of one input.

    ``directional(dout)`` is the numeric ``d/dt sum(dout * f(x + t v))`` and its error."""

    direction: np.ndarray  # v, shaped like the input
    value: np.ndarray  # J v, shaped like the output (flat)
    error: np.ndarray  # its error estimate per output element

    def directional(self, dout: np.ndarray) -> tuple[float, float]:
        d = np.asarray(dout, dtype=np.float64).reshape(-1)
        return float(d @ self.value), float(np.abs(d) @ self.error)


def numeric_jvp(ev: Evaluator, name: str, f0: np.ndarray, noise: float, rng: np.random.Generator) -> Jvp | None:
    """``J v`` for a random ``v`` of input ``name`` (scaled per element): four evaluations of the
    forward's output at ``x +- h v``, ``x +- 2h v``, for outputs ``f0`` at the point rounded to a
    relative ``noise`` (the step is ``STEP_FACTOR * noise**(1/3)``). Up to ``TRIES``
    directions are drawn while one crosses a kink of some output element (its one-sided slopes
    differ: ``tolerance.kink_found``); None where every one does or the forward fails."""
    x = ev.work[name]
    original = x.copy()
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    h = STEP_FACTOR * noise ** (1.0 / 3.0)
    for _ in range(TRIES):
        v = rng.standard_normal(x.shape) * element_scale(x.reshape(-1)).reshape(x.shape)
        outs = []
        try:
            for t in (h, -h, 2 * h, -2 * h):
                np.add(original, t * v, out=x)
                outs.append(np.asarray(ev.output(), dtype=np.float64).reshape(-1))
        except ForwardFailure:
            return None
        finally:
            x[...] = original
        plus1, minus1, plus2, minus2 = outs
        sigma = noise * np.maximum.reduce([np.abs(f0), np.abs(plus2), np.abs(minus2)])
        if not np.all(np.isfinite(outs)):
            return None
        jvp, error, kink, _, _ = richardson(f0, plus1, minus1, plus2, minus2, h, sigma)
        if np.any(kink):
            continue
        return Jvp(v, jvp, error)
    return None


def _reductions(dout: np.ndarray, seed: int) -> list[tuple[str, dict[str, object], np.ndarray]]:
    """The reductions ``R(dout)`` a backward may read the upstream gradient through: (summary,
    params, ``R(dout)``), simplest first."""
    shape = dout.shape
    other = np.random.default_rng([seed, 4]).standard_normal(shape)
    found: list[tuple[str, dict[str, object], np.ndarray]] = [
        ("ignores the upstream gradient: the backward's gradient is the same at another random dout, though the "
         "true one is not", {"reading": "ignored"}, other),
        ("treats the upstream gradient as a scalar: the backward's gradient at dout is the same as at a constant "
         "dout of equal sum, though the true one is not (dout.sum() or .mean() times a local gradient?)",
         {"reading": "sum", "axes": "all"}, np.full(shape, dout.mean())),
        ("treats the upstream gradient as a scalar: the backward's gradient at dout is the same as at a constant "
         "dout equal to its first element, though the true one is not (grad_output[0] times a local gradient?)",
         {"reading": "first", "axes": "all"}, np.full(shape, dout.reshape(-1)[0])),
    ]
    if dout.ndim >= 2:
        for axis in range(dout.ndim):
            if shape[axis] < 2:
                continue
            found.append((
                f"broadcasts the upstream gradient along the wrong axis: the backward's gradient at dout is the "
                f"same as at dout averaged over axis {axis} and broadcast back along it, though the true one is "
                f"not (dout's values along axis {axis} are lost)",
                {"reading": "mean", "axes": [axis]}, np.broadcast_to(dout.mean(axis=axis, keepdims=True), shape)))
            found.append((
                f"broadcasts the upstream gradient along the wrong axis: the backward's gradient at dout is the "
                f"same as at dout's first slice along axis {axis} broadcast along it, though the true one is not "
                "(one value loaded per slice?)",
                {"reading": "first", "axes": [axis]},
                np.broadcast_to(np.take(dout, [0], axis=axis), shape)))
    return found


def check_upstream(
    backprop: Backprop, point: Point, analytic: Mapping[str, np.ndarray], tolerances: Mapping[str, Tolerance],
    limits: Mapping[str, Callable[[np.ndarray], np.ndarray]], noise: Noise, *, seed: int, failed: set[str],
    global_scale: float, budgets: Mapping[str, np.ndarray] | None = None,
) -> Findings:
    """Check the backward at the structured upstream gradients and name the reading behind a
    failure (see the module docstring).

    Args:
        backprop: the backward, callable at any ``dout``.
        point: the check's point (its evaluator, output and random ``dout``).
        analytic: the gradients at the random ``dout``.
        tolerances: per input, the tolerance the check held it to.
        limits: per input, how far a recomputed gradient may sit from the reference (flat).
        noise: the forward's noise: its model first, measured where a structured check fails
            (then the directions are drawn again with the step it sets).
        seed: the check's seed.
        failed: the inputs whose gradient mismatched at the random ``dout``.
        global_scale: the largest reference gradient over all inputs (the directional scale).
        budgets: per input computed below float64, its per-element allowance against the
            float64 truth (flat, or one number); summed along each direction.
    """
    found = Findings()
    if point.output.ndim == 0 or point.output.size < 2:
        return found
    ev = point.evaluator.derived(tracker=NULL_TRACKER)
    names = [n for n in backprop.names if n in analytic and n in tolerances and analytic[n].size]
    douts = structured(point.output.shape, seed)
    gradients: dict[str, dict[str, np.ndarray]] = {}
    for structure, dout in douts.items():
        try:
            gradients[structure] = backprop.at(dout)
        except Fault as fault:
            found.faults.append(f"{fault} at a structured upstream gradient ({structure})")
            return found

    def judge(relative_noise: float) -> tuple[dict[str, Jvp], dict[str, tuple[str, float, float, float, float]]]:
        rng = np.random.default_rng([seed, 5])
        jvps = {n: j for n in names if (j := numeric_jvp(ev, n, point.output, relative_noise, rng)) is not None}
        wrong: dict[str, tuple[str, float, float, float, float]] = {}
        for structure, dout in douts.items():
            for name, jvp in jvps.items():
                if name in wrong or name not in gradients[structure]:
                    continue
                ok, expected, numeric, error, allowance = _holds(gradients[structure][name], jvp, dout,
                                                                 tolerances[name], global_scale,
                                                                 (budgets or {}).get(name, 0.0))
                if not ok:
                    wrong[name] = (structure, expected, numeric, error, allowance)
        return jvps, wrong

    def relative(sigma: float) -> float:
        return max(point.eps, sigma / point.scale if point.scale > 0 else 0.0)

    jvps, wrong = judge(relative(noise.known()))
    if wrong:  # before a finding: the forward's noise measured, the directions drawn again at its step
        jvps, wrong = judge(relative(noise.measured()))
    for name, (structure, expected, numeric, error, allowance) in wrong.items():
        if name in failed:
            continue
        found.mismatches.append(Mismatch(
            input=name, index=(), analytic=expected, references={"numeric": numeric}, errors={"numeric": error},
            relative_error=float(relative_error(np.array([expected]), np.array([numeric]), 0.0)[0]),
            tolerance=allowance, against=("numeric",), difference=abs(expected - numeric),
        ))
        found.diagnoses[name] = Diagnosis(
            kind="upstream",
            summary=(f"wrong at a structured upstream gradient ({structure}) though right at a random one: along a "
                     f"random direction v, analytic . v = {fmt(expected, 6)}, numeric {fmt(numeric, 6)}"),
            params={"structure": structure},
            evidence=f"off by {fmt(abs(expected - numeric), 2)}, allowed {fmt(allowance, 2)}",
        )
    # A gradient of zeros reads nothing of dout, but "zero" (diagnose's) says more.
    suspects = sorted(n for n in (failed | set(wrong)) & set(jvps) if np.any(analytic[n]))
    if suspects:
        _name_reading(found, backprop, point, analytic, limits, jvps, tolerances, suspects, seed, global_scale)
    return found


def _holds(gradient: np.ndarray, jvp: Jvp, dout: np.ndarray, tol: Tolerance, scale: float,
           budget: np.ndarray | float = 0.0) -> tuple[bool, float, float, float, float]:
    """Whether ``gradient . v`` matches the numeric ``dout . J v``, with both and the allowance
    (a gradient computed below float64 adds its per-element ``budget`` along ``v``)."""
    v = jvp.direction
    expected = float(np.asarray(gradient, dtype=np.float64).reshape(-1) @ v.reshape(-1))
    numeric, error = jvp.directional(dout)
    error += float(np.sum(np.abs(v.reshape(-1)) * budget))
    size = max(scale, float(np.max(np.abs(gradient), initial=0.0)))
    allowance, _ = directional_allowance(tol, size, expected, numeric, error, float(np.abs(v).sum()))
    holds = bool(abs(expected - numeric) <= allowance) if math.isfinite(expected) else False
    return holds, expected, numeric, error, allowance


def _name_reading(
    found: Findings, backprop: Backprop, point: Point, analytic: Mapping[str, np.ndarray],
    limits: Mapping[str, Callable[[np.ndarray], np.ndarray]], jvps: Mapping[str, Jvp],
    tolerances: Mapping[str, Tolerance], suspects: list[str], seed: int, global_scale: float,
) -> None:
    """Name the reduction the backward reads ``dout`` through, for the ``suspects``."""
    dout = np.asarray(point.dout, dtype=np.float64)
    for summary, params, reduced in _reductions(dout, seed):
        try:
            gradients = backprop.at(np.ascontiguousarray(reduced))
        except Fault:
            return
        same = [n for n in suspects if n in gradients and np.all(
            np.abs(gradients[n].reshape(-1) - analytic[n].reshape(-1)) <= limits[n](analytic[n].reshape(-1)))]
        # The true gradients at dout and R(dout) differ along some direction: dout - R(dout) moves J v.
        moved = [n for n in same if not _holds(np.zeros(analytic[n].shape), jvps[n], dout - reduced,
                                               tolerances[n], global_scale)[0]]
        if moved:
            for name in moved:
                found.diagnoses[name] = Diagnosis(
                    kind="upstream", summary=summary, params=dict(params),
                    evidence=f"the gradient of {name!r} is the same to rounding at both, over {analytic[name].size} "
                             "elements",
                )
            return
