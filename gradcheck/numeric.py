"""The numeric oracle: central differences with an error estimate, and kink detection.

Per element of a checked input ``x`` (with ``L`` the contracted forward, see ``evaluate``):

1. **Central pass** (2 evaluations): ``D(h) = (L(x+h) - L(x-h)) / 2h`` with a step scaled to the
   element (``h = eps**(1/3) * max(|x_i|, rms(x))``, rounded so that ``x +- h`` is exact). The same
   two values give the second difference ``jump = (L(x+h) - 2 L(x) + L(x-h)) / h``, which is
   ``h L''`` where ``L`` is smooth and the derivative jump where it has a kink.
2. **Refinement**, only for suspect elements (2 more evaluations at ``2h``):
   Richardson extrapolation ``R = (4 D(h) - D(2h)) / 3`` with error estimate
   ``|D(h) - D(2h)| + 4 sigma / h`` (``tolerance.noise_error``); and one-sided Richardson
   derivatives ``g+ = 2 g+(h) - g+(2h)``, ``g- = 2 g-(h) - g-(2h)``. Where ``L`` is smooth,
   ``g+ - g-`` is ``O(h^3)``; at a kink it is the jump in slope. An element is a kink when
   ``|g+ - g-|`` exceeds both the noise and a quarter of how much the one-sided slopes moved
   between the two steps (``tolerance.kink_found``).

``sigma`` is the noise level of ``L`` (rounding in the forward), measured from high-order
differences of ``L`` along a random direction at a tiny step (Moré and Wild's ECnoise idea), and
never below ``eps * |L|``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np

from gradcheck.estimates import NumericEstimate
from gradcheck.evaluate import Evaluator, Forked, ForwardFailure, MultipleOutputs
from gradcheck.inputs import prepare_inputs, resolve_wrt
from gradcheck.parallel import choose_workers
from gradcheck.tolerance import kink_found, noise_error, one_sided_noise

__all__ = [
    "CentralPass",
    "NumericEstimate",
    "Refinement",
    "central_pass",
    "element_scale",
    "estimate_noise",
    "kink_range",
    "machine_eps",
    "numeric_gradient",
    "refine",
    "richardson",
    "slope_hull",
    "step_sizes",
]


def machine_eps(dtype: np.dtype) -> float:
    """Unit roundoff of a floating dtype; float64's for anything else."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype).eps) if dtype.kind == "f" else float(np.finfo(np.float64).eps)


def step_sizes(x: np.ndarray, eps: float) -> np.ndarray:
    """Per-element steps ``eps**(1/3) * max(|x_i|, rms(x))``, exact in float64 arithmetic.

    Args:
        x: float64 array, any shape.
        eps: unit roundoff of the forward's output dtype.
    Returns:
        float64 array of ``x``'s shape with ``(x + h) - x == h`` exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    h = eps ** (1.0 / 3.0) * element_scale(x)
    return (x + h) - x


def element_scale(x: np.ndarray) -> np.ndarray:
    """``max(|x_i|, rms(x))`` per element (1 where ``x`` is all zeros): the size a perturbation
    of each element is measured against, so that elements near 0 are not stepped by nothing."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    if not np.isfinite(rms) or rms == 0.0:
        rms = 1.0
    return np.maximum(np.abs(x), rms)


@dataclass(frozen=True)
class CentralPass:
    """Results of one central difference per element of one input (flat arrays).

    Attributes:
        gradient: ``D(h)``, shape ``(n,)``.
        jump: second difference ``(L+ - 2 L0 + L-) / h``, shape ``(n,)``.
        step: ``h``, shape ``(n,)``.
        plus, minus: ``L(x + h)``, ``L(x - h)``, shape ``(n,)``; NaN where the forward failed.
    """

    gradient: np.ndarray
    jump: np.ndarray
    step: np.ndarray
    plus: np.ndarray
    minus: np.ndarray


def central_pass(ev: Evaluator, name: str, f0: float, eps: float) -> CentralPass:
    """One central difference per element of input ``name`` (2 evaluations per element)."""
    x = ev.work[name].reshape(-1)
    h = step_sizes(x, eps)
    n = x.size
    idx = np.arange(n)
    plus = ev.perturbed_values(name, np.concatenate([idx, idx]), np.concatenate([h, -h]))
    plus, minus = plus[:n], plus[n:]
    with np.errstate(invalid="ignore"):
        gradient = (plus - minus) / (2.0 * h)
        jump = (plus - 2.0 * f0 + minus) / h
    return CentralPass(gradient, jump, h, plus, minus)


NOISE_STEP_FACTOR = (np.sqrt(5.0) - 1.0) / 2.0  # irrational-ish, so steps are not dyadic
NOISE_DIRECTIONS = 3  # random directions per step size (8 evaluations each)


def estimate_noise(
    ev: Evaluator, names: Iterable[str], f0: float, scale: float, eps: float, rng: np.random.Generator,
    directions: int = NOISE_DIRECTIONS,
) -> float:
    """Noise level ``sigma`` of ``L`` near the point (absolute, same units as ``L``).

    Evaluates ``L`` at 8 points ``x + k t v`` (k = -4..4, k != 0) along random directions, and
    takes the largest of the normalised 3rd and 4th differences on each side of the point, which
    for an ``L`` smooth on either side contain rounding only. Two relative steps: ``t ~ 100 eps``
    and ``t ~ sqrt(eps)``; the larger one sees rounding that the tiny one steps over (an
    intermediate much larger than ``L``, as in ``log(1 + d)`` with ``d`` small, rounds in steps
    that moves of ``100 eps`` never cross), while its truncation (third derivative times
    ``t^3``) stays far below rounding. Never less than ``eps * scale``.
    """
    names = list(names)
    ks = np.array([-4, -3, -2, -1, 1, 2, 3, 4], dtype=np.float64)
    floor = eps * scale
    sigma = 0.0
    # Along a line, a rounded intermediate moves in an arithmetic progression of roundoff
    # units; when its increment per step is close to a whole number of units, nine points may
    # see no rounding at all. Several random directions, and steps with a non-dyadic factor,
    # make that unlikely (``directions`` lines per step size, 8 evaluations each).
    steps = (100.0 * eps * NOISE_STEP_FACTOR, float(np.sqrt(eps)) * NOISE_STEP_FACTOR)
    for t in [t for _ in range(directions) for t in steps]:
        direction = {}
        for name in names:
            x = ev.work[name]
            mag = element_scale(x)
            direction[name] = rng.uniform(0.5, 1.5, size=x.shape) * rng.choice([-1.0, 1.0], size=x.shape) * mag
        values = ev.direction_values(direction, ks * t)
        if not np.all(np.isfinite(values)):
            continue
        f = np.concatenate([values[:4], [f0], values[4:]])
        # Each side of the point on its own: a kink exactly at the point (a ReLU input at 0)
        # sits at the edge of both windows and adds nothing to their differences.
        for window in (f[:5], f[4:]):
            for k in (3, 4):
                diffs = np.diff(window, n=k)
                gamma = factorial(k) ** 2 / factorial(2 * k)
                sigma = max(sigma, float(np.sqrt(gamma * np.mean(diffs * diffs))))
    return max(sigma, floor)


@dataclass(frozen=True)
class Refinement(NumericEstimate):
    """Refined estimates for selected elements of one input: a ``NumericEstimate`` over the
    flat indices ``index`` (shape ``(k,)``), every element Richardson-extrapolated with its error
    and kink test; ``low``, ``high`` are the hull of every slope seen within ``2h`` on either side
    (see ``slope_hull``)."""

    index: np.ndarray


def richardson(
    f0: float | np.ndarray, plus1: np.ndarray, minus1: np.ndarray, plus2: np.ndarray, minus2: np.ndarray,
    h: np.ndarray | float, sigma: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Estimates from ``L(x +- h)``, ``L(x +- 2h)`` (all arrays of the same shape).

    Returns ``(gradient, error, kink, left, right)``: the Richardson estimate, its error
    estimate, the kink flag, and the one-sided Richardson slopes (see the module docstring).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        d1 = (plus1 - minus1) / (2 * h)
        d2 = (plus2 - minus2) / (4 * h)
        gradient = (4 * d1 - d2) / 3
        error = np.abs(d1 - d2) + noise_error(sigma, h)
        right1, right2 = (plus1 - f0) / h, (plus2 - f0) / (2 * h)
        left1, left2 = (f0 - minus1) / h, (f0 - minus2) / (2 * h)
        right = 2 * right1 - right2
        left = 2 * left1 - left2
        moved = np.abs(right2 - right1) + np.abs(left2 - left1)
        kink = kink_found(np.abs(right - left), moved, sigma / h)
    return gradient, error, kink, left, right


def slope_hull(
    f0: float, plus1: np.ndarray, minus1: np.ndarray, plus2: np.ndarray, minus2: np.ndarray,
    h: np.ndarray, sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the range of the one-sided slopes seen at ``h`` and ``2h`` on either side,
    and of their Richardson extrapolations, widened by their noise.

    At a kink a correct gradient is the slope of one of the pieces meeting there (or a blend of
    them, such as 0 for ``|x|`` at 0): it lies between the one-sided slopes. Two more values
    belong in the range: where one element feeds several ReLU-like kinks that it moves across
    at once (a unit dead for a whole batch, whose input is a sum over the element's row), its
    one-sided slopes mix the examples on either side, and a backward's convention at the kink
    gives 0 (``x > 0``) or ``left + right`` (``x >= 0``), or a blend. Every slope measured is
    in the range too, so a kink a little off the point (where one extrapolation is spoiled by
    the crossing) widens it rather than excluding the right value. Each slope's noise is at
    most ``2 sigma / h`` (``tolerance.ONE_SIDED_NOISE`` times ``sigma / h`` after extrapolation).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        right1, right2 = (plus1 - f0) / h, (plus2 - f0) / (2 * h)
        left1, left2 = (f0 - minus1) / h, (f0 - minus2) / (2 * h)
        low, high = kink_range(2 * left1 - left2, 2 * right1 - right2)
        measured = np.stack([low, high, right1, right2, left1, left2])
        noise = one_sided_noise(sigma, h)
        return np.min(measured, axis=0) - noise, np.max(measured, axis=0) + noise


def kink_range(left: Any, right: Any) -> tuple[Any, Any]:
    """The range a correct gradient may take at a kink with one-sided slopes ``left``, ``right``
    (arrays or floats): between them, or between 0 and ``left + right`` (see ``slope_hull``)."""
    candidates = np.stack(np.broadcast_arrays(left, right, np.zeros_like(left), left + right))
    low, high = np.min(candidates, axis=0), np.max(candidates, axis=0)
    return (low, high) if np.ndim(low) else (float(low), float(high))



def refine(
    ev: Evaluator, name: str, index: np.ndarray, central: CentralPass, f0: float, sigma: float
) -> Refinement:
    """Second step (``2h``), Richardson extrapolation and the kink test for ``index``."""
    h = central.step[index]
    k = len(index)
    both = ev.perturbed_values(name, np.concatenate([index, index]), np.concatenate([2 * h, -2 * h]))
    values = (f0, central.plus[index], central.minus[index], both[:k], both[k:], h, sigma)
    gradient, error, kink, left, right = richardson(*values)
    low, high = slope_hull(*values)
    return Refinement(gradient, error, kink, left, right, low, high, index=index)


def numeric_gradient(
    forward: Callable[..., Any],
    inputs: Mapping[str, Any],
    dout: Any = None,
    wrt: str | Iterable[str] | None = None,
    *,
    with_error: bool = False,
) -> dict[str, Any]:
    """Central-difference gradients of ``sum(dout * forward(**inputs))``, in float64.

    Args:
        forward: ``forward(**inputs) -> float | array``.
        inputs: name -> number or array; integer inputs are held constant.
        dout: upstream gradient with the output's shape; ``None`` means ones (for a scalar
            output, the plain gradient).
        wrt: names to differentiate; ``None`` means every floating input.
        with_error: return each gradient as a ``NumericEstimate`` (flat arrays): every element
            Richardson-extrapolated with its error estimate (which includes the forward's
            measured noise), its kink flag and one-sided slopes. It costs four evaluations per
            element instead of two, plus the noise measurement.
    Returns:
        name -> float64 array with that input's shape (elements at a kink hold the central
        difference, the mean of the one-sided slopes); with ``with_error``, name ->
        ``NumericEstimate``.
    Raises:
        GradcheckError: misuse (see ``check_gradients``); ``ValueError`` if the forward fails
            at the point, or ``dout``'s shape does not match the output.
    """
    from gradcheck import validation
    from gradcheck.errors import GradcheckError

    validation.function("forward", forward)
    prepared = prepare_inputs(inputs)
    names = resolve_wrt(prepared, wrt)
    ev = Evaluator(forward, prepared.widened)
    try:
        out = ev.output()
    except MultipleOutputs as exc:
        raise GradcheckError(f"forward {exc}; numeric_gradient takes a forward with one output "
                             "(check_gradients takes several)") from None
    except ForwardFailure as exc:
        raise GradcheckError(f"forward failed at the point: {exc}") from None
    if dout is not None:
        dout = np.asarray(dout, dtype=np.float64)
        if dout.shape != out.shape:
            raise GradcheckError(f"dout has shape {dout.shape}, but forward returns shape {out.shape}")
        ev = ev.derived(dout=dout)
    start = time.perf_counter()
    f0 = ev.value()
    seconds = time.perf_counter() - start
    # A slow numpy forward: perturbations run in worker processes (see ``parallel``).
    workers = choose_workers(seconds, 2 * sum(prepared.values[n].size for n in names))
    ev = ev.derived(backend=Forked(workers, seconds))
    eps = machine_eps(out.dtype)
    gradients: dict[str, Any] = {}
    sigma = None
    if with_error:
        scale = max(abs(f0), float(np.sum(np.abs(np.asarray(ev.dout) * out.astype(np.float64)))))
        sigma = estimate_noise(ev, names, f0, scale, eps, np.random.default_rng(0))
    for name in names:
        central = central_pass(ev, name, f0, eps)
        if sigma is None:
            gradients[name] = central.gradient.reshape(prepared.values[name].shape)
            continue
        r = refine(ev, name, np.arange(central.gradient.size), central, f0, sigma)
        error = r.error  # Richardson's error estimate, its noise term included
        nan = np.full(r.gradient.shape, np.nan)
        gradients[name] = NumericEstimate(
            r.gradient, error, r.kink, np.where(r.kink, r.left, nan), np.where(r.kink, r.right, nan),
            np.where(r.kink, r.low, nan), np.where(r.kink, r.high, nan),
        )
    return gradients
