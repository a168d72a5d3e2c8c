"""check_gradients / assert_gradients: case -> oracles -> compare -> result.

The flow for one call:

1. validate the arguments (misuse raises ``GradcheckError``) and copy the inputs;
2. evaluate the forward at the point (checking it neither fails, mutates its inputs nor changes
   its answer between calls) and fix the upstream gradient ``dout``;
3. call the backward once and validate what it returns (keys, shapes, finiteness);
4. run the oracles: torch autograd on float64 tensors when the forward runs on torch, and the
   numeric oracle element by element (``numeric``; in worker processes for a slow numpy
   forward, see ``parallel``);
5. compare per input (``compare``) and collect a ``CheckResult``.

Bugs in the code under test never raise: they are faults or mismatches in the result.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradcheck import validation
from gradcheck.compare import compare_input
from gradcheck.diagnose import diagnose
from gradcheck.directional import check_input_directional
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.evaluate import (
    BatchedEvaluator,
    Evaluator,
    ForwardFailure,
    MultipleOutputs,
    as_float_array,
    describe_exception,
)
from gradcheck.inputs import PreparedInputs, prepare_inputs, require_signature, resolve_wrt
from gradcheck.numeric import (
    NOISE_DIRECTIONS,
    NumericEstimate,
    central_pass,
    element_scale,
    estimate_noise,
    machine_eps,
    refine,
    step_sizes,
)
from gradcheck.options import CheckOptions
from gradcheck.parallel import choose_workers
from gradcheck.progress import Progress, close, tracker_for
from gradcheck.result import CheckResult, InputSummary, Mismatch, Tolerance
from gradcheck.ties import check_ties
from gradcheck.estimates import Estimate, Unavailable
from gradcheck.oracles import Oracle, choose_oracles
from gradcheck.tolerance import (
    allowed,
    batch_agreement_limit,
    batching_pays,
    default_tolerance,
    determinism_limit,
    jump_limit,
    noise_error,
    outputs_differ,
    torch_rounding,
)
from gradcheck.torch_oracle import TORCH

__all__ = ["assert_gradients", "check_gradients", "run_check"]

AUTO_FULL_LIMIT = 20_000  # "auto" checks every element up to this many, directions beyond


@dataclass
class _Point:
    """The forward evaluated at the caller's point."""

    evaluator: Evaluator
    value: float  # L(x0)
    scale: float  # sum |dout * out|, for the noise floor
    eps: float  # unit roundoff of the output dtype
    output: np.ndarray  # forward(x0)
    dout: np.ndarray | float
    notes: list[str]
    seconds: float  # one evaluation of the forward at the point


class _Fault(Exception):
    """A bug in the code under test that stops the check; the message is the finding."""


def _torch_callable_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a torch forward so the numeric oracle evaluates it without building graphs."""
    import torch

    def call(**kwargs: Any) -> Any:
        with torch.no_grad():
            return forward(**kwargs)

    return call


def _evaluate_point(
    forward: Callable[..., Any], prepared: PreparedInputs, seed: int, *, on_torch: bool
) -> _Point:
    """Evaluate the forward at the point and fix ``dout``; raise _Fault on a bug."""
    notes: list[str] = []
    convert = None
    if on_torch:
        import torch

        convert = torch.from_numpy
        forward = _torch_callable_forward(forward)
    ev = Evaluator(forward, prepared.widened, convert=convert)
    try:
        out = ev.output()
    except MultipleOutputs as exc:
        raise GradcheckError(f"forward {exc}") from None
    except ForwardFailure as exc:
        narrower = {n: prepared.values[n] for n in prepared.values}
        if any(prepared.values[n].dtype != prepared.widened[n].dtype for n in prepared.floating):
            # The forward may insist on its own dtype: fall back to differencing in it.
            ev = Evaluator(forward, narrower, convert=convert)
            try:
                out = ev.output()
            except ForwardFailure:
                raise _Fault(f"forward {exc} at the given point") from None
            notes.append(
                f"forward fails on float64 copies of the inputs ({exc}); numeric differences "
                "use the inputs' own dtypes"
            )
        else:
            raise _Fault(f"forward {exc} at the given point") from None
    except Exception as exc:
        raise _Fault(f"forward returned an unusable value at the given point: {exc}") from None
    for name in prepared.values:
        if not np.array_equal(ev.work[name], prepared.widened[name].astype(ev.work[name].dtype)):
            raise _Fault(
                f"forward mutates its input {name!r} in place; a forward must not change its inputs"
            )
    if out.dtype.kind != "f":
        raise _Fault(f"forward returns {out.dtype} values; there is nothing to differentiate")
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.isfinite(out)))
        raise _Fault(f"forward returns {bad} non-finite value(s) at the given point (e.g. {out.reshape(-1)[np.argmax(~np.isfinite(out.reshape(-1)))]})")
    if out.ndim == 0:
        dout: np.ndarray | float = 1.0
    else:
        dout = np.random.default_rng(seed).standard_normal(out.shape)
    ev.dout = dout
    value = ev.contract(out)
    start = time.perf_counter()
    again = ev.value()
    seconds = time.perf_counter() - start
    eps = machine_eps(out.dtype)
    scale = float(np.sum(np.abs(np.asarray(dout) * out.astype(np.float64))))
    if not math.isfinite(again) or abs(again - value) > determinism_limit(eps, max(abs(value), scale)):
        raise _Fault(
            f"forward is nondeterministic: two calls at the same point gave {value!r} and {again!r}"
        )
    return _Point(ev, value, max(abs(value), scale), eps, out, dout, notes, seconds)


def _shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if len(want) >= 2 and got == want[::-1]:
        return " (it looks transposed)"
    if math.prod(got) == math.prod(want):
        return " (same number of elements: a reshape or squeeze is missing?)"
    if len(got) == len(want) + 1 and got[1:] == want:
        return " (not summed over the batch axis?)"
    return ""


def _call_backward(
    backward: Callable[..., Any],
    prepared: PreparedInputs,
    names: tuple[str, ...],
    dout: np.ndarray | float,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Call the backward once; validated gradients by name and the faults found."""
    args = {n: np.array(a, copy=True) for n, a in prepared.values.items()}
    dout_arg = float(dout) if np.ndim(dout) == 0 else np.array(dout, copy=True)
    try:
        returned = backward(dout_arg, **args)
    except Exception as exc:  # a bug in the backward under test
        raise _Fault(f"backward raised {describe_exception(exc)}") from None
    faults: list[str] = []
    for n in prepared.values:
        if not np.array_equal(args[n], prepared.values[n]):
            faults.append(f"backward mutates its input {n!r} in place")
    if not isinstance(returned, Mapping):
        raise _Fault(
            f"backward returned {type(returned).__name__}, not a dict mapping input names to gradients"
        )
    extra = [k for k in returned if k not in prepared.values]
    if extra:
        faults.append(
            f"backward returned gradients for {extra}, which are not inputs (inputs: {list(prepared.values)})"
        )
    gradients: dict[str, np.ndarray] = {}
    for name in names:
        if name not in returned or returned[name] is None:
            faults.append(f"backward returned no gradient for {name!r} (keys: {list(returned)})")
            continue
        try:
            g = as_float_array(returned[name])
        except ForwardFailure as exc:
            faults.append(f"backward's gradient for {name!r} {exc}")
            continue
        want = prepared.values[name].shape
        if g.shape != want:
            faults.append(
                f"backward's gradient for {name!r} has shape {g.shape}, but {name!r} has shape "
                f"{want}{_shape_hint(g.shape, want)}"
            )
            continue
        if not np.all(np.isfinite(g)):
            bad = np.argwhere(~np.isfinite(g))
            where = tuple(int(i) for i in bad[0]) if g.ndim else ()
            faults.append(
                f"backward's gradient for {name!r} has {len(bad) if g.ndim else 1} non-finite "
                f"value(s), first at index {where}: {g[where]!r}"
            )
            continue
        gradients[name] = g
    return gradients, faults


BATCH_MIN_ELEMENTS = 64  # below this, batching cannot pay for its calibration


def _batched_point(point: _Point, forward: Callable[..., Any], names: tuple[str, ...]) -> _Point:
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
        batched = BatchedEvaluator(forward, ev.work)
        batched.dout = point.dout
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
    point.notes.append(
        f"perturbations evaluated in batches with torch.func.vmap "
        f"({loop_cost / batch_cost:.0f}x faster per evaluation than the loop)"
    )
    point.evaluator = batched
    point.value = value
    return point


class _Noise:
    """The forward's noise level, measured once per check and only if needed."""

    def __init__(self, point: _Point, names: tuple[str, ...], seed: int, directions: int) -> None:
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


def _reference_scales(
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


def _torch_rounding(point: _Point, sensitivity: float, sigma: float, xscale: np.ndarray) -> np.ndarray:
    """Rounding allowed between the analytic and torch gradients at ``point``, per element of
    scale ``xscale`` (see ``tolerance.torch_rounding``)."""
    dout_size = float(np.max(np.abs(point.dout), initial=0.0))
    return torch_rounding(sigma, eps=point.eps, sensitivity=sensitivity, dout_size=dout_size, xscale=xscale)


@dataclass(frozen=True)
class _Differenced:
    """What the per-element pass measured for one input, kept for the tie test."""

    estimate: NumericEstimate
    steps: np.ndarray
    sigma: float


def _tie_finding(
    point: _Point, measured: Mapping[str, _Differenced], analytic: Mapping[str, np.ndarray],
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


def _check_input_full(
    point: _Point,
    name: str,
    analytic: np.ndarray,
    exact: Mapping[str, np.ndarray],
    tol: Any,
    noise: _Noise,
    sensitivity: float,
) -> tuple[Any, list[str], _Differenced]:
    """Per-element check of one input: central pass, refine the suspects, compare.

    ``sensitivity`` is ``sum_j |dL/dx_j x_j|`` over every checked input (from torch when it
    ran): with the forward's noise it sets the rounding allowed against torch."""
    ev = point.evaluator
    if point.output.size == 0 or analytic.size == 0:
        # Nothing to difference: an empty output makes L identically 0 (every gradient is 0).
        zeros = NumericEstimate.exact(np.zeros(analytic.size))
        comparison = compare_input(name, analytic.shape, analytic.reshape(-1).astype(np.float64), zeros,
                                   {o: g.reshape(-1) for o, g in exact.items()}, tol)
        return comparison, [], _Differenced(zeros, np.zeros(analytic.size), 0.0)
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
        return _torch_rounding(point, sensitivity, sigma, xscale)

    def suspects(sigma: float) -> np.ndarray:
        err = np.maximum(noise_error(sigma, h), rounding(sigma))
        with np.errstate(invalid="ignore"):
            s = finite & (np.abs(a - d) > allowed(a, d, err, tol, scale))
            s |= finite & (np.abs(central.jump) > jump_limit(scale, sigma, h))
            for t in flat_exact.values():
                s |= np.abs(a - t) > allowed(a, t, rounding(sigma), tol, scale)
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
    comparison = compare_input(name, analytic.shape, a, estimate, flat_exact, tol, exact_error=rounding(sigma))
    return comparison, faults, _Differenced(estimate, h, sigma)


def _exact_oracles(
    forward: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...], point: _Point,
    chosen: tuple[Oracle, ...], *, skip: str | None,
) -> tuple[dict[str, dict[str, np.ndarray]], list[str], dict[str, str]]:
    """Every chosen exact oracle that runs on the forward (``skip``: the one that gave the
    analytic gradients): its gradients by name, the notes on those that did not run, and their
    original errors.

    An oracle whose forward output differs from the forward's own is not used: it differentiates
    another function. Oracles unavailable for the same reason share one note. With
    ``backward=None`` (a torch callable) the other oracles are not tried: they cannot run torch
    code.
    """
    exact: dict[str, dict[str, np.ndarray]] = {}
    reasons: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for oracle in chosen:
        if skip is not None:
            break
        found = oracle.gradients(forward, prepared.widened, names, point.dout)
        if isinstance(found, Estimate):
            reference = point.output
            gap = (np.max(np.abs(found.output - reference), initial=0.0)
                   if found.output.shape == reference.shape else np.inf)
            if outputs_differ(gap, point.scale):
                found = Unavailable(oracle.name, f"the forward gives different values on {oracle.arrays} and "
                                    f"numpy arrays (largest difference {gap:.3g})")
            else:
                exact[oracle.name] = dict(found.gradients)
                continue
        reasons.setdefault(found.reason, []).append(found.oracle)
        if found.error:
            errors[found.oracle] = found.error
    notes = [f"{' and '.join(who)} oracle{'s' if len(who) > 1 else ''} not used: {reason}"
             for reason, who in reasons.items()]
    return exact, notes, errors


def _with_other_exact(
    comparison: Any, name: str, analytic: np.ndarray, exact: Mapping[str, np.ndarray], tol: Tolerance,
    rounding: np.ndarray,
) -> Any:
    """Directional mode weighs the numeric oracle against the first exact oracle; the others are
    compared with the backward (and with the first) element by element, at no evaluation."""
    first = next(iter(exact))
    none = NumericEstimate.missing(analytic.size)
    kink_mask = np.zeros(analytic.size, dtype=bool)
    for k in comparison.kinks:
        kink_mask[np.ravel_multi_index(k.index, analytic.shape) if analytic.shape else 0] = True
    none = replace(none, kink=kink_mask)
    others = compare_input(name, analytic.shape, analytic.reshape(-1).astype(np.float64), none,
                           {o: g.reshape(-1) for o, g in exact.items()}, tol, exact_error=rounding)
    extra = tuple(m for m in others.mismatches if set(m.against) - {first})
    worst = {**comparison.worst, **{o: w for o, w in others.worst.items() if o not in (first, "numeric")}}
    worst_at = {**comparison.worst_at, **{o: i for o, i in others.worst_at.items() if o not in (first, "numeric")}}
    return replace(comparison, mismatches=comparison.mismatches + extra,
                   disagreements=comparison.disagreements + others.disagreements,
                   mismatch_mask=comparison.mismatch_mask | others.mismatch_mask, worst=worst, worst_at=worst_at)


def check_gradients(
    forward: Callable[..., Any],
    backward: Callable[..., Mapping[str, Any]] | None,
    inputs: Mapping[str, Any],
    *,
    wrt: str | Iterable[str] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    mode: str = "auto",
    progress: bool | Callable[[Progress], Any] | None = None,
    oracles: Iterable[str] | None = None,
) -> CheckResult:
    """Check a hand-written backward pass against numeric gradients and torch autograd.

    Args:
        forward: ``forward(**inputs) -> float | array``. Written against the array API it also
            runs on torch tensors, which adds the autograd oracle.
        backward: ``backward(dout, **inputs) -> {name: gradient}`` with each gradient shaped
            like its input and ``dout`` shaped like the output (``1.0`` for a scalar output; for
            an array output a random ``dout`` drawn from ``seed``, so the vector-Jacobian
            product is checked). ``None`` checks torch autograd's gradient of a torch
            ``forward`` (a custom ``autograd.Function``'s ``apply``, a module, a function of
            tensors) against the numeric oracle.
        inputs: name -> number or array (numpy or torch). Floating inputs are checked (only
            those in ``wrt`` if given); integer inputs such as labels are held constant.
        wrt: the names to check; ``None`` means every floating input.
        seed: seed for ``dout`` and the noise probe; the same seed gives the same result.
        rtol, atol: override the per-dtype tolerances (``None`` keeps the default, which flags
            a float64 gradient wrong by a relative 1e-6). The numeric oracle's error estimate
            is always added to the allowance.
        mode: "full" checks every element; "directional" checks random directional
            derivatives and localizes failures; "auto" picks by size.
        progress: ``None`` shows progress on stderr when it is a terminal and the check runs
            longer than a second; ``True`` always (a line every few seconds in a log);
            ``False`` never; a callable receives ``gradcheck.Progress`` updates (stage, input,
            evaluations done and expected, seconds elapsed and left).
        oracles: the exact oracles to run beside the numeric one, by name, in the order they
            serve as the reference: ``"torch"`` (autograd) and ``"jax"`` (``jax.vjp``; the
            ``jax`` extra). ``None`` means ``("torch",)``. An oracle that cannot run on the
            forward (a numpy-only forward, jax not installed) is left out with a note.
    Returns:
        CheckResult: ``ok``, ``mismatches``, ``kinks``, ``faults``, ``oracles``, ...
    Raises:
        GradcheckError: misuse: bad arguments, inputs that are not a mapping of finite numbers
            or arrays, ``wrt`` naming a missing or integer input (the messages are
            ``gradcheck.validation``'s). Bugs in ``forward`` or ``backward`` never raise; they
            are reported in the result.
    """
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles)
    return run_check(forward, backward, inputs, options)


def run_check(
    forward: Callable[..., Any],
    backward: Callable[..., Mapping[str, Any]] | None,
    inputs: Mapping[str, Any],
    options: CheckOptions,
) -> CheckResult:
    """``check_gradients`` with its keyword options as one validated value (what the fixture,
    ``gradient_test`` and the runner call)."""
    validation.function("forward", forward)
    validation.function("backward", backward, none_ok=True)
    wrt, seed, rtol, atol = options.wrt, options.seed, options.rtol, options.atol
    mode, progress, oracles = options.mode, options.progress, options.oracles
    if backward is None and "torch" in sys.modules:  # a module instance means torch is imported
        import torch

        if isinstance(forward, torch.nn.Module):
            from gradcheck.torch_callables import module_forward

            # The module's parameters become checked inputs, in float64.
            forward, inputs = module_forward(forward, inputs)
    chosen = choose_oracles(oracles)
    prepared = prepare_inputs(inputs)
    names = resolve_wrt(prepared, wrt)
    require_signature(forward, "forward", tuple(prepared.values))
    if backward is not None:
        require_signature(backward, "backward", tuple(prepared.values), leading=("dout",))
    on_torch = backward is None
    if on_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise GradcheckError("backward=None checks torch autograd, but torch is not installed") from None

    def fault_result(message: str, notes: Iterable[str] = ()) -> CheckResult:
        return CheckResult(ok=False, faults=(message,), oracles=(), notes=tuple(notes), mode="full", seed=seed)

    try:
        point = _evaluate_point(forward, prepared, seed, on_torch=on_torch)
    except _Fault as fault:
        return fault_result(str(fault))
    notes = list(point.notes)
    faults: list[str] = []
    source = None
    if on_torch:
        found = TORCH.gradients(forward, prepared.widened, names, point.dout)
        if isinstance(found, Unavailable):
            raise GradcheckError(f"backward=None needs a forward that torch can differentiate: {found.reason}")
        analytic, source = dict(found.gradients), TORCH.name
        notes.append("analytic gradients are torch autograd's (backward=None)")
    else:
        try:
            analytic, faults = _call_backward(backward, prepared, names, point.dout)
        except _Fault as fault:
            return fault_result(str(fault), notes)
    exact, oracle_notes, oracle_errors = _exact_oracles(forward, prepared, names, point, chosen, skip=source)
    notes.extend(oracle_notes)
    oracles = ("numeric", *exact)

    if "torch" in exact or on_torch:
        point = _batched_point(point, forward, names)
        notes.extend(n for n in point.notes if n not in notes)
    summaries, mismatches, kinks, disagreements = [], [], [], []
    evidence: dict[str, dict[str, np.ndarray]] = {"analytic": {}, "reference": {}, "usable": {}, "wrong": {}}
    point.evaluator.evaluations = 0
    total = sum(prepared.values[n].size for n in names)
    used = mode if mode != "auto" else ("full" if total <= AUTO_FULL_LIMIT else "directional")
    # Large inputs (directional mode) measure the noise along one line per step size: each
    # evaluation is costly there, and the directional test re-draws directions anyway.
    noise = _Noise(point, names, seed, NOISE_DIRECTIONS if used == "full" else 1)
    if used == "full" and type(point.evaluator) is Evaluator and point.evaluator.convert is None:
        # A numpy forward: perturbations run in worker processes when that saves time.
        point.evaluator.workers = choose_workers(point.seconds, 2 * total)
        point.evaluator.seconds = point.seconds
    directions_rng = np.random.default_rng([seed, 2])
    global_scale, sensitivity = _reference_scales(
        next(iter(exact.values()), analytic), names, prepared.widened, point.value
    )
    tracker = tracker_for(progress)
    point.evaluator.tracker = tracker
    measured: dict[str, _Differenced] = {}
    tightest: Tolerance | None = None
    try:
        for name in names:
            if name not in analytic:
                continue
            grad = analytic[name]
            grad_dtype = grad.dtype if grad.dtype.kind == "f" else np.dtype(np.float64)
            # Autograd's gradient (backward=None) is computed on float64 copies.
            itemsize = 8 if on_torch else min(prepared.dtypes[name].itemsize, grad_dtype.itemsize)
            tol = default_tolerance(itemsize, rtol=rtol, atol=atol, global_scale=global_scale)
            references = {o: grads[name] for o, grads in exact.items()}
            if used == "full" or grad.size == 0 or point.output.size == 0:
                checked = int(grad.size)
                comparison, input_faults, measured[name] = _check_input_full(
                    point, name, grad, references, tol, noise, sensitivity)
                tightest = tol if tightest is None or tol.rtol < tightest.rtol else tightest
                faults.extend(input_faults)
                compared = comparison.compared
            else:
                first = next(iter(references), None)
                comparison, checked, input_notes = check_input_directional(
                    point.evaluator, name, point.value, point.eps,
                    sigma_model=noise.model,
                    measure_noise=noise.measured,
                    exact_rounding=lambda sigma, xscale: _torch_rounding(point, sensitivity, sigma, xscale),
                    analytic=grad,
                    exact_grad=None if first is None else references[first],
                    exact_name=first or "",
                    tol=tol,
                    rng=directions_rng,
                )
                if len(references) > 1:
                    comparison = _with_other_exact(comparison, name, grad, references, tol,
                                                   _torch_rounding(point, sensitivity, noise.model,
                                                                   element_scale(point.evaluator.work[name]).reshape(-1)))
                notes.extend(input_notes)
                compared = checked
            mismatches.extend(comparison.mismatches)
            kinks.extend(comparison.kinks)
            if comparison.reference is not None and comparison.mismatch_mask.any():
                shape = grad.shape
                evidence["analytic"][name] = grad  # its dtype too: an integer gradient is named
                evidence["reference"][name] = comparison.reference.reshape(shape)
                evidence["usable"][name] = comparison.usable.reshape(shape)
                evidence["wrong"][name] = comparison.mismatch_mask.reshape(shape)
            disagreements.extend(comparison.disagreements)
            summaries.append(
                InputSummary(
                    name=name,
                    shape=tuple(prepared.values[name].shape),
                    dtype=str(prepared.dtypes[name]),
                    checked=checked,
                    mismatches=max(int(comparison.mismatch_mask.sum()), len(comparison.mismatches)),
                    compared=compared,
                    kinks=len(comparison.kinks),
                    worst=dict(comparison.worst),
                    worst_at=dict(comparison.worst_at),
                    gradient_norm=float(np.linalg.norm(grad.astype(np.float64))),
                    tolerance=tol,
                )
            )
        if tightest is not None and point.output.size:
            tie = _tie_finding(point, measured, analytic, {n: prepared.values[n].shape for n in measured}, tightest)
            if tie is not None:
                mismatches.append(tie)
                summaries = [replace(s, mismatches=s.mismatches + 1) if s.name == tie.input else s
                             for s in summaries]
    finally:
        close(tracker)
    notes.extend(n for n in point.evaluator.notes if n not in notes)

    if evidence["wrong"]:
        found = diagnose(evidence["analytic"], evidence["reference"], evidence["usable"],
                         evidence["wrong"], prepared.values)
        summaries = [replace(s, diagnosis=found.get(s.name)) for s in summaries]
    ok = not mismatches and not faults
    return CheckResult(
        ok=ok,
        inputs=tuple(summaries),
        mismatches=tuple(mismatches),
        kinks=tuple(kinks),
        disagreements=tuple(disagreements),
        faults=tuple(faults),
        oracles=oracles,
        notes=tuple(notes),
        mode=used,
        evaluations=point.evaluator.evaluations,
        seed=seed,
        output_shape=tuple(point.output.shape),
        oracle_errors=oracle_errors,
    )


def assert_gradients(
    forward: Callable[..., Any],
    backward: Callable[..., Mapping[str, Any]] | None,
    inputs: Mapping[str, Any],
    *,
    wrt: str | Iterable[str] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    mode: str = "auto",
    progress: bool | Callable[[Progress], Any] | None = None,
    oracles: Iterable[str] | None = None,
) -> CheckResult:
    """``check_gradients``, raising ``GradientMismatch`` (an AssertionError) unless ok.

    Returns the CheckResult when the check passes.
    """
    __tracebackhide__ = True  # pytest shows the mismatch report, not this function
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles)
    result = run_check(forward, backward, inputs, options)
    if not result.ok:
        raise GradientMismatch(result)
    return result
