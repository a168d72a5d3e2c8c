"""The forward at the caller's point: evaluated once (a fault if it fails, mutates its inputs or
changes its answer), the upstream gradient fixed, the evaluation backend chosen (the loop, or
vmap batches for a torch forward when that is faster), and the forward's noise measured when
needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck.compare import InputComparison
from gradcheck.directions import Signs
from gradcheck.estimates import NumericEstimate
from gradcheck.evaluate import Evaluator, ForwardFailure, MultipleOutputs, vmap_evaluator, without_graph
from gradcheck.inputs import PreparedInputs
from gradcheck.numeric import estimate_noise, machine_eps, step_sizes
from gradcheck.parallel import choose_workers
from gradcheck.result import Detection
from gradcheck.tolerance import batch_agreement_limit, batching_pays, determinism_limit, torch_rounding

__all__ = ["BATCH_MIN_ELEMENTS", "Context", "Differenced", "Fault", "InputOutcome", "Noise", "Point", "batched_point",
           "draw_dout", "evaluate_point", "exact_rounding", "reference_scales"]


@dataclass(frozen=True)
class Point:
    """The forward evaluated at the caller's point."""

    evaluator: Evaluator
    value: float  # L(x0)
    scale: float  # sum |dout * out|, for the noise floor
    eps: float  # unit roundoff of the output dtype
    output: np.ndarray  # forward(x0)
    dout: np.ndarray | float
    notes: list[str]
    seconds: float  # one evaluation of the forward at the point
    repeat: np.ndarray | None = None  # forward(x0) computed again (the determinism check's second call)


class Fault(Exception):
    """A bug in the code under test that stops the check; the message is the finding, ``notes``
    what the check had noted before it."""

    def __init__(self, message: str, notes: list[str] | None = None) -> None:
        super().__init__(message)
        self.notes = list(notes or [])


def evaluate_point(
    forward: Callable[..., Any], prepared: PreparedInputs, seed: int, *, on_torch: bool,
    dout: np.ndarray | None = None,
) -> Point:
    """Evaluate the forward at the point and fix ``dout`` (drawn from ``seed`` unless given);
    raise Fault on a bug.

    Raises:
        MultipleOutputs: the forward returned several outputs; ``again`` holds a second
            evaluation at the point (``gradcheck.outputs`` takes it from there).
        Fault: a bug in the forward.
    """
    notes: list[str] = []
    convert = None
    if on_torch:
        import torch

        convert = torch.from_numpy
        forward = without_graph(forward)
    ev = Evaluator(forward, prepared.widened, convert=convert)
    try:
        out = ev.output()
    except MultipleOutputs as several:
        several.again = _again(ev)
        raise
    except ForwardFailure as exc:
        narrower = {n: prepared.values[n] for n in prepared.values}
        if any(prepared.values[n].dtype != prepared.widened[n].dtype for n in prepared.floating):
            # The forward may insist on its own dtype: fall back to differencing in it.
            ev = Evaluator(forward, narrower, convert=convert)
            try:
                out = ev.output()
            except MultipleOutputs as several:
                several.again = _again(ev)
                raise
            except ForwardFailure:
                raise Fault(f"forward {exc} at the given point") from None
            notes.append(
                f"forward fails on float64 copies of the inputs ({exc}); numeric differences "
                "use the inputs' own dtypes"
            )
        else:
            raise Fault(f"forward {exc} at the given point") from None
    except Exception as exc:
        raise Fault(f"forward returned an unusable value at the given point: {exc}") from None
    for name in prepared.values:
        if not np.array_equal(ev.work[name], prepared.widened[name].astype(ev.work[name].dtype, copy=False)):
            raise Fault(
                f"forward mutates its input {name!r} in place; a forward must not change its inputs"
            )
    if out.dtype.kind != "f":
        raise Fault(f"forward returns {out.dtype} values; there is nothing to differentiate")
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.isfinite(out)))
        example = out.reshape(-1)[np.argmax(~np.isfinite(out.reshape(-1)))]
        raise Fault(f"forward returns {bad} non-finite value(s) at the given point (e.g. {example})")
    upstream = draw_dout(out.shape, seed) if dout is None else dout
    ev = ev.derived(dout=upstream)
    value = ev.contract(out)
    start = time.perf_counter()
    repeat = ev.output()
    again = ev.contract(repeat)
    seconds = time.perf_counter() - start
    eps = machine_eps(out.dtype)
    scale = float(np.sum(np.abs(np.asarray(upstream) * out.astype(np.float64))))
    if not math.isfinite(again) or abs(again - value) > determinism_limit(eps, max(abs(value), scale)):
        raise Fault(
            f"forward is nondeterministic: two calls at the same point gave {value!r} and {again!r}"
        )
    return Point(ev, value, max(abs(value), scale), eps, out, upstream, notes, seconds, repeat)


def draw_dout(shape: tuple[int, ...], seed: int) -> np.ndarray | float:
    """The upstream gradient of an output of ``shape``: 1.0 for a scalar, else standard normal
    values drawn from ``seed``."""
    if not shape:
        return 1.0
    return np.random.default_rng(seed).standard_normal(shape)


def _again(ev: Evaluator) -> Any:
    """A second evaluation of a forward with several outputs at the point (their integer entries
    must repeat)."""
    try:
        return ev.call()
    except ForwardFailure as exc:
        raise Fault(f"forward {exc} at the given point") from None


BATCH_MIN_ELEMENTS = 64  # below this, batching cannot pay for its calibration


def batched_point(point: Point, forward: Callable[..., Any], names: tuple[str, ...]) -> Point:
    """Switch ``point`` to vmap-batched evaluation when that is faster and gives the same values.

    Calibrates on the largest checked input: 8 loop evaluations against one batch of up to 64.
    Keeps the loop when the forward cannot be vmapped, disagrees, or batching is not faster
    (than the loop spread over worker processes, where those would run).
    """
    ev = point.evaluator
    name = max(names, key=lambda n: ev.work[n].size)
    if sum(ev.work[n].size for n in names) < BATCH_MIN_ELEMENTS or ev.work[name].dtype != np.float64:
        return point
    try:
        batched = vmap_evaluator(forward, ev.work, dout=point.dout)
        x = ev.work[name].reshape(-1)
        idx = np.arange(min(64, x.size))
        deltas = step_sizes(x, point.eps)[idx]
        start = time.perf_counter()
        looped = ev.perturbed_values(name, idx[:8], deltas[:8])
        loop_cost = (time.perf_counter() - start) / 8
        batched.perturbed_values(name, idx, deltas)  # warm-up: first vmap call traces
        start = time.perf_counter()
        values = batched.perturbed_values(name, idx, deltas)
        batch_cost = (time.perf_counter() - start) / len(idx)
        value = batched.value()
    except Exception:  # the forward does not vmap: keep the loop
        return point
    same = np.all(np.abs(values[:8] - looped) <= batch_agreement_limit(point.eps, point.scale))
    if ev.convert is None:
        # A numpy loop may run in worker processes: batching must beat that.
        total = sum(ev.work[n].size for n in names)
        loop_cost /= choose_workers(loop_cost, 2 * total)
    if not same or not batching_pays(batch_cost, loop_cost):
        return point
    note = (f"perturbations evaluated in batches with torch.func.vmap "
            f"({loop_cost / batch_cost:.0f}x faster per evaluation than the loop)")
    return replace(point, evaluator=batched, value=value, notes=[*point.notes, note])


class Noise:
    """The forward's noise level, measured once per check and only if needed."""

    def __init__(self, point: Point, names: tuple[str, ...], seed: int, directions: int) -> None:
        self.point = point
        self.names = names
        self.seed = seed
        self.directions = directions
        self.model = point.eps * point.scale
        self._measured: float | None = None

    def measured(self) -> float:
        if self._measured is None:
            rng = np.random.default_rng([self.seed, 1])
            ev = self.point.evaluator
            with ev.tracker.interlude("noise", 16 * self.directions):
                self._measured = estimate_noise(
                    ev, self.names, self.point.value, self.point.scale, self.point.eps, rng, self.directions,
                )
        return self._measured

    def known(self) -> float:
        """The measured noise where it was measured already, else the model (no evaluation)."""
        return self.model if self._measured is None else self._measured


@dataclass(frozen=True)
class Context:
    """What every input's check shares, in either mode: the point, the forward's noise, the
    sum of ``|dL/dx_j x_j|`` over the checked inputs (with the noise it sets the rounding allowed
    against an exact oracle), the generator of random choices, the random signs of the
    directions (directional mode; drawn once, shared by the inputs) and the low-precision
    budgets."""

    point: Point
    noise: Noise
    sensitivity: float
    rng: np.random.Generator
    signs: Signs
    # input name -> flat per-element allowance of a gradient computed below float64 against the
    # float64 truth (``gradcheck.precision``); absent for float64 gradients.
    budgets: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Differenced:
    """What the per-element pass measured for one input, kept for the tie test."""

    estimate: NumericEstimate
    steps: np.ndarray
    sigma: float


@dataclass(frozen=True)
class InputOutcome:
    """One input's check, in either mode (``full.check_input_full``,
    ``directional.check_input``): the comparison, elements or directions checked and compared,
    faults and notes, (full mode) what was measured for the tie test and (directional mode)
    the smallest single-element error its directions would have caught."""

    comparison: InputComparison
    checked: int
    compared: int
    faults: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    measured: Differenced | None = None
    detectable: Detection | None = None


def reference_scales(
    gradients: Mapping[str, np.ndarray], names: tuple[str, ...], inputs: Mapping[str, np.ndarray], value: float
) -> tuple[float, float]:
    """``(largest |gradient| over all inputs, sum of |dL/dx_j x_j| over all inputs)``.

    From the torch oracle when it ran, else from the backward. The first sets the rounding floor
    of an input whose true gradient is exactly zero; the second, the rounding of the terms a
    backward adds up (never below ``|L|``)."""
    present = [n for n in names if n in gradients]
    grads = {n: np.asarray(gradients[n], dtype=np.float64) for n in present}
    largest = max((float(np.max(np.abs(grads[n]), initial=0.0)) for n in present), default=0.0)
    with np.errstate(all="ignore"):
        total = sum(float(np.sum(np.abs(grads[n] * inputs[n]))) for n in present)
    return largest, max(total, abs(value)) if math.isfinite(total) else abs(value)


def exact_rounding(point: Point, sensitivity: float, sigma: float, xscale: np.ndarray) -> np.ndarray:
    """Rounding allowed between the analytic and torch gradients at ``point``, per element of
    scale ``xscale`` (see ``tolerance.torch_rounding``)."""
    dout_size = float(np.max(np.abs(point.dout), initial=0.0))
    return torch_rounding(sigma, eps=point.eps, sensitivity=sensitivity, dout_size=dout_size, xscale=xscale)
