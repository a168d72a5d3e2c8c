"""check_gradients / assert_gradients: case -> oracles -> estimates -> comparison -> result.

This module orchestrates; each step is a module of its own:

1. the options are validated once (``options.CheckOptions``), complex values mapped to real
   pairs (``complex_values``; the result is told in the caller's terms again at the end) and
   the inputs copied (``inputs``; misuse raises ``GradcheckError``);
2. the forward is evaluated at the point and ``dout`` fixed (``point``); a forward with several
   outputs is checked as one returning them flat (``outputs``), which then names the outputs a
   failing gradient is wrong through;
3. the backward is called once and what it returns validated (``analytic``), or autograd gives
   the analytic gradients of a torch callable (``backward=None``);
4. the chosen exact oracles run (``oracles``: torch, jax);
5. each input is checked in full mode (``full``: every element, then the ties) or directional
   mode (``directional``), against the numeric oracle (``numeric``) and the exact ones
   (``compare``, with the rules of ``tolerance``);
6. the likely bug is named (``diagnose``) and a ``CheckResult`` collected.

Custom ops get three more checks, each rerunning the backward at the point (``reruns``): the
forward and the backward repeated, their nondeterminism measured (``repeats``, before step 5: a
rounding-level spread widens the allowance); a torch callable's backward run under other
layouts of its inputs and ``dout`` (``layouts``); and the backward at structured upstream
gradients, with the reading of ``dout`` named behind a mismatch (``upstream``).

Bugs in the code under test never raise: they are faults or mismatches in the result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck import complex_values, directional, repeats, upstream, validation
from gradcheck.analytic import call_backward
from gradcheck.compare import InputComparison
from gradcheck.diagnose import diagnose
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.estimates import Unavailable
from gradcheck.evaluate import SERIAL, Backend, Forked, MultipleOutputs
from gradcheck.full import check_input_full, tie_finding
from gradcheck.inputs import PreparedInputs, prepare_inputs, require_signature, resolve_wrt
from gradcheck.layouts import check_layouts
from gradcheck.numeric import NOISE_DIRECTIONS
from gradcheck.options import CheckOptions
from gradcheck.oracles import choose_oracles, run_exact_oracles
from gradcheck.outputs import OutputsFault, describe_outputs, name_outputs
from gradcheck.parallel import choose_workers
from gradcheck.paths import compare_paths
from gradcheck.point import (
    Context,
    Differenced,
    Fault,
    Noise,
    Point,
    batched_point,
    draw_dout,
    evaluate_point,
    reference_scales,
)
from gradcheck.progress import Progress, close, tracker_for
from gradcheck.reference_oracle import ReferenceOracle, low_dtypes, low_precision, output_fault
from gradcheck.repeats import Repeated
from gradcheck.reruns import Backprop, Findings, reordering, torch_given
from gradcheck.result import CheckResult, InputSummary, Mismatch, Tolerance
from gradcheck.tolerance import default_tolerance
from gradcheck.torch_oracle import TORCH

__all__ = ["assert_gradients", "check_gradients", "run_check"]

AUTO_FULL_LIMIT = 20_000  # "auto" checks every element up to this many, directions beyond


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
    deterministic: bool = False,
    reference: Callable[..., Any] | None = None,
    reference_factor: float | None = None,
    paths: Iterable[str] | None = None,
) -> CheckResult:
    """Check a hand-written backward pass against numeric gradients and torch autograd.

    The backward is also run at structured upstream gradients (``upstream``), several times
    (``repeats``) and, for a torch callable, under other layouts of its inputs and ``dout``
    (``layouts``).

    Args:
        forward: ``forward(**inputs) -> float | array``, or a tuple, list or dict of arrays
            (nested too: several outputs). Written against the array API it also runs on torch
            tensors, which adds the autograd oracle.
        backward: ``backward(dout, **inputs) -> {name: gradient}`` with each gradient shaped
            like its input and ``dout`` shaped like the output (``1.0`` for a scalar output; for
            an array output a random ``dout`` drawn from ``seed``, so the vector-Jacobian
            product is checked; for several outputs, ``dout`` in their structure, ``None`` for
            integer or boolean ones). ``None`` checks torch autograd's gradient of a torch
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
        deterministic: the forward and the backward are run several times at the point;
            False (the default) allows their results to differ by rounding (a reordered sum,
            atomics), reported and added to the allowance; True makes any difference a fault.
        reference: a plain differentiable torch function of the same inputs, the slow and
            obviously right version of ``forward`` (``gradcheck.reference_oracle``). Its float64
            autograd gradient is an exact oracle named "reference"; ``forward``'s float64 output
            must equal its output up to rounding (else a fault). With ``backward=None`` and
            float32, float16 or bfloat16 inputs, ``forward`` and ``reference`` also run in those
            dtypes: each gradient and the output of ``forward`` may be off the float64 truth by
            ``reference_factor`` times the reference's own error there, floored at a few
            roundoff units (``tolerance.low_precision_allowance``); beyond that is a fault naming
            the element, both errors and the budget.
        reference_factor: that factor; None means ``tolerance.LOW_PRECISION_FACTOR`` (2).
        paths: execution paths of a torch callable (``backward=None``) whose gradients and
            output must agree with eager's: "eager", "aot_eager" (``torch.compile`` with the
            aot_eager backend), "compile" (inductor where a C++ compiler is found, else
            aot_eager); see ``gradcheck.paths``. A disagreement is a fault naming the path.
    Returns:
        CheckResult: ``ok``, ``mismatches``, ``kinks``, ``faults``, ``oracles``, ...
    Raises:
        GradcheckError: misuse: bad arguments, inputs that are not a mapping of finite numbers
            or arrays, ``wrt`` naming a missing or integer input (the messages are
            ``gradcheck.validation``'s), a complex output among several (not supported yet); a
            ``reference`` that fails on the inputs, is not differentiable or returns another shape;
            ``paths`` naming an unknown path or given with a backward. Bugs in ``forward`` or
            ``backward`` never raise; they are reported in the result.
    """
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles,
                           deterministic=deterministic, reference=reference, reference_factor=reference_factor,
                           paths=paths)
    return run_check(forward, backward, inputs, options)


def run_check(
    forward: Callable[..., Any],
    backward: Callable[..., Mapping[str, Any]] | None,
    inputs: Mapping[str, Any],
    options: CheckOptions,
    *,
    layouts: Iterable[str] | None = None,
) -> CheckResult:
    """``check_gradients`` with its keyword options as one validated value (what the fixture,
    ``gradient_test`` and the runner call). ``layouts`` names the layouts a torch callable's
    backward runs under (``validation.LAYOUTS``; None: all): Hypothesis runs draw one."""
    custom = _Custom(validation.layouts(layouts), torch_given(inputs))
    forward, backward, prepared, names, boundary, beyond = _prepare(forward, backward, inputs, options)
    try:
        point = evaluate_point(forward, prepared, options.seed, on_torch=backward is None)
    except MultipleOutputs as several:
        return _check_outputs(forward, backward, prepared, names, options, several, boundary, beyond, custom)
    except Fault as fault:
        return _stopped(fault, options, boundary)
    return _check_at(forward, backward, prepared, names, options, point, boundary, beyond, custom=custom)


@dataclass(frozen=True)
class _Custom:
    """What the custom-op checks (``repeats``, ``layouts``, ``upstream``) are told of a check:
    the layouts to run (None: all) and whether the caller gave torch tensors."""

    layouts: tuple[str, ...] | None
    torch_inputs: bool


def _stopped(fault: Fault, options: CheckOptions, boundary: complex_values.Boundary) -> CheckResult:
    """The result of a check that a fault stopped before any input was checked."""
    return complex_values.relabel(
        CheckResult(ok=False, faults=(str(fault),), oracles=(), notes=tuple(fault.notes), mode="full",
                    seed=options.seed), boundary)


def _check_outputs(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, prepared: PreparedInputs,
    names: tuple[str, ...], options: CheckOptions, several: MultipleOutputs, boundary: complex_values.Boundary,
    beyond: _Beyond, custom: _Custom,
) -> CheckResult:
    """A forward with several outputs, checked as one returning them flat (``outputs``), with
    the outputs each failing input's gradient is wrong through named."""
    try:
        outputs = describe_outputs(several.value, several.again)
    except OutputsFault as fault:
        return _stopped(Fault(f"forward {fault}"), options, boundary)
    flat_forward, flat_backward = outputs.flat_forward(forward), outputs.flat_backward(backward)
    if beyond.reference is not None:  # the reference's outputs flat as the forward's
        beyond = replace(beyond, reference=outputs.flat_forward(beyond.reference))

    def check(dout: np.ndarray, wrt: tuple[str, ...], mode: str, *, batch: bool = True) -> CheckResult:
        try:
            point = evaluate_point(flat_forward, prepared, options.seed, on_torch=backward is None, dout=dout)
        except Fault as fault:
            return _stopped(fault, options, boundary)
        # The custom-op checks run in the main check, not again per output.
        return _check_at(flat_forward, flat_backward, prepared, wrt, replace(options, wrt=wrt, mode=mode), point,
                         boundary, beyond, batch=batch, custom=custom if batch else None)

    dout = np.asarray(draw_dout((sum(e.size for e in outputs.differentiable),), options.seed))
    result = replace(check(dout, names, options.mode), outputs=outputs.summary)
    # Each output on its own, in the same mode, only counts the failing inputs' mismatches: no
    # batching calibration.
    return name_outputs(result, outputs, dout, lambda d, wrt: check(d, wrt, result.mode, batch=False))


def _check_at(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, prepared: PreparedInputs,
    names: tuple[str, ...], options: CheckOptions, point: Point, boundary: complex_values.Boundary,
    beyond: _Beyond, *, batch: bool = True, custom: _Custom | None = None,
) -> CheckResult:
    """The check of ``names`` once the forward is evaluated at the point (``batch``: switch to
    vmap batches where they pay; ``custom``: run the custom-op checks, None: not)."""
    forward_faults, forward_notes = ([], []) if custom is None else \
        repeats.forward_repeats(point, deterministic=options.deterministic)
    try:
        analytic, source, faults, notes = _analytic(forward, backward, prepared, names, point)
    except Fault as fault:
        return _stopped(fault, options, boundary)
    backprop = Backprop(forward, backward, prepared, names, known=tuple(faults))
    limits = reordering(point, prepared, names, analytic, point.eps * point.scale, on_torch=source is not None)
    repeated = Repeated() if custom is None else \
        repeats.backward_repeats(backprop, analytic, point.dout, limits, deterministic=options.deterministic)
    faults, notes = [*forward_faults, *faults, *repeated.faults], [*notes, *forward_notes, *repeated.notes]
    # With backward=None torch gave the analytic gradients: the other chosen oracles check them.
    chosen = tuple(o for o in choose_oracles(options.oracles) if o.name != source)
    exact = run_exact_oracles(chosen, forward, prepared.widened, names, point.dout, point.output, point.scale)
    notes += exact.notes
    if beyond.reference is not None:  # the reference implementation: an exact oracle in float64
        estimate = ReferenceOracle(beyond.reference, beyond.label).gradients(forward, prepared.widened, names,
                                                                             point.dout, point.output.shape)
        differs = output_fault(point.output, estimate.output, point.scale)
        faults = [*faults, differs] if differs else faults
        used = {} if differs else {estimate.oracle: dict(estimate.gradients)}
        exact = replace(exact, gradients=exact.gradients | used)
    if batch and ("torch" in exact.gradients or source == TORCH.name):
        point = batched_point(point, forward, names)
        notes += [n for n in point.notes if n not in notes]
    run = _Run(point, prepared, names, analytic, exact.gradients, options, on_torch=source is not None,
               spread=repeated.spread, pairs=frozenset(boundary.dtypes))
    run.check_inputs()
    notes += [n for n in run.notes + run.point.evaluator.notes if n not in notes]
    if custom is None:
        found = Findings()
    elif repeated.faults:  # a backward that differs from run to run: other runs would show nothing new
        found = Findings(notes=["layouts and structured upstream gradients not checked: the backward is "
                                "nondeterministic"])
    else:
        # Complex values run as real pairs, which no layout of the caller's tensors corresponds to.
        complex_seen = bool(boundary.dtypes) or boundary.output_complex
        found = _custom_ops(forward, backward, backprop, run, repeated.measured,
                            replace(custom, layouts=()) if complex_seen else custom)
    notes += [n for n in found.notes if n not in notes]
    # The reference in the caller's dtypes and the execution paths, also in the main check only.
    more_faults, more_notes = ([], []) if custom is None else _beyond_float64(forward, backward, beyond, run, options)
    result = run.result(faults + run.faults + found.faults + more_faults, notes + more_notes,
                        ("numeric", *exact.gradients), exact.errors, found)
    return complex_values.relabel(result, boundary)


def _custom_ops(forward: Callable[..., Any], backward: Callable[..., Any] | None, backprop: Backprop, run: _Run,
                spread: Mapping[str, float], custom: _Custom) -> Findings:
    """After the check at the point: the backward under other layouts (torch callables) and at
    structured upstream gradients, each recomputed gradient allowed the rounding of a reordered
    sum and twice the ``spread`` repeated runs showed (two more runs, each that far from the first)."""
    reference = next(iter(run.exact.values()), run.analytic)
    limits = reordering(run.point, run.prepared, run.names, reference, run.context.noise.known(), on_torch=run.on_torch,
                        spread={n: 2 * s for n, s in spread.items()})
    passed = {s.name for s in run.summaries if s.ok}
    found = check_layouts(forward, backward, custom.torch_inputs, run.prepared, run.names, run.point.dout, limits,
                          layouts=custom.layouts, passed=passed, oracles=run.oracle_values)
    found.add(upstream.check_upstream(
        backprop, run.point, run.analytic, {s.name: s.tolerance for s in run.summaries}, limits, run.context.noise,
        seed=run.options.seed, failed={s.name for s in run.summaries if not s.ok}, global_scale=run.global_scale,
    ))
    return found


@dataclass(frozen=True)
class _Beyond:
    """What the checks beyond the float64 point need, in the terms of the check on real arrays:
    the inputs as the caller holds them (dtypes and strides; complex ones as real pairs) and the
    reference, wrapped as the forward is (``complex_values``, ``outputs``)."""

    inputs: Mapping[str, Any]
    reference: Callable[..., Any] | None
    label: str = ""  # the caller's reference by name, for messages


def _beyond_float64(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, beyond: _Beyond, run: _Run,
    options: CheckOptions,
) -> tuple[list[str], list[str]]:
    """The faults and notes of the checks beyond the float64 point: the forward in the caller's
    low dtypes against a reference (``reference_oracle``), and other execution paths against
    eager (``paths``)."""
    faults: list[str] = []
    notes: list[str] = []
    point, prepared, names = run.point, run.prepared, run.names
    if beyond.reference is not None and backward is None:
        low = low_precision(forward, beyond.reference, beyond.inputs, prepared, names, point.dout,
                            tuple(point.output.shape), factor=options.reference_factor, label=beyond.label)
        if low is not None:
            faults += low.faults
            notes += [*low.notes, *(n for n in (low.note(),) if n)]
    elif beyond.reference is not None and low_dtypes(prepared):
        notes.append("reference: the low-dtype comparison runs a torch callable with backward=None; with a "
                     "hand-written backward the reference is a float64 oracle only")
    if options.paths:
        found = compare_paths(tuple(options.paths), forward, prepared.widened, names, point.dout, point.output,
                              run.analytic, {n: run.tolerance(n) for n in names}, point.scale)
        faults += found.faults
        notes += found.notes
    return faults, notes


def _prepare(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, inputs: Mapping[str, Any],
    options: CheckOptions,
) -> tuple[
    Callable[..., Any], Callable[..., Any] | None, PreparedInputs, tuple[str, ...], complex_values.Boundary, _Beyond
]:
    """Validate what a check is given and copy the inputs (misuse raises ``GradcheckError``);
    complex values become real pairs (``complex_values``), for the reference too."""
    validation.function("forward", forward)
    validation.function("backward", backward, none_ok=True)
    if backward is not None and set(options.paths or ()) - {"eager"}:
        raise GradcheckError(f"paths={options.paths!r} compares torch autograd's gradients along execution "
                             "paths: it needs backward=None (a torch callable)")
    if backward is None and "torch" in sys.modules:  # a module instance means torch is imported
        import torch

        if isinstance(forward, torch.nn.Module):
            from gradcheck.torch_callables import module_forward

            # The module's parameters become checked inputs, in float64.
            forward, inputs = module_forward(forward, inputs)
    choose_oracles(options.oracles)  # names that are no oracle's are misuse, before any work
    real = complex_values.wrap(forward, backward, inputs, wrt=options.wrt)
    prepared = prepare_inputs(real.inputs)
    names = resolve_wrt(prepared, options.wrt)
    require_signature(forward, "forward", tuple(prepared.values))
    if backward is not None:
        require_signature(backward, "backward", tuple(prepared.values), leading=("dout",))
    else:
        try:
            import torch
        except ImportError:
            raise GradcheckError("backward=None checks torch autograd, but torch is not installed") from None
    reference = None
    if options.reference is not None:
        require_signature(options.reference, "reference", tuple(prepared.values))
        reference = complex_values.wrap(options.reference, None, inputs, wrt=options.wrt).forward
    label = getattr(options.reference, "__name__", None) or type(options.reference).__name__
    return real.forward, real.backward, prepared, names, real.boundary, _Beyond(real.inputs, reference, label)


def _analytic(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, prepared: PreparedInputs,
    names: tuple[str, ...], point: Point,
) -> tuple[dict[str, np.ndarray], str | None, list[str], list[str]]:
    """The analytic gradients, the oracle that gave them (``backward=None``: torch), the faults
    found in them and the notes so far. Raises ``Fault`` where the backward cannot be used."""
    notes = list(point.notes)
    if backward is not None:
        try:
            analytic, faults = call_backward(backward, prepared, names, point.dout)
        except Fault as fault:
            fault.notes = notes
            raise
        return analytic, None, faults, notes
    found = TORCH.gradients(forward, prepared.widened, names, point.dout)
    if isinstance(found, Unavailable):
        raise GradcheckError(f"backward=None needs a forward that torch can differentiate: {found.reason}")
    return dict(found.gradients), TORCH.name, [], [*notes, "analytic gradients are torch autograd's (backward=None)"]


@dataclass
class _Run:
    """One check's per-input stage: the shared context (point, noise, tolerances, oracles) and
    what each input's check found."""

    point: Point
    prepared: PreparedInputs
    names: tuple[str, ...]
    analytic: dict[str, np.ndarray]
    exact: dict[str, dict[str, np.ndarray]]
    options: CheckOptions
    on_torch: bool
    spread: dict[str, float] = field(default_factory=dict)  # a nondeterministic backward's, per input
    pairs: frozenset[str] = frozenset()  # inputs seen as real pairs (complex ones): last axis (real, imag)
    summaries: list[InputSummary] = field(default_factory=list)
    comparisons: dict[str, InputComparison] = field(default_factory=dict)
    measured: dict[str, Differenced] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ties: list[Mismatch] = field(default_factory=list)

    def __post_init__(self) -> None:
        point, names = self.point, self.names
        total = sum(self.prepared.values[n].size for n in names)
        mode = self.options.mode
        self.mode = mode if mode != "auto" else ("full" if total <= AUTO_FULL_LIMIT else "directional")
        if self.mode == "full" and point.evaluator.backend is SERIAL and point.evaluator.convert is None:
            # A numpy forward: perturbations run in worker processes when that saves time.
            self.backend: Backend = Forked(choose_workers(point.seconds, 2 * total), point.seconds)
        else:
            self.backend = point.evaluator.backend
        self.global_scale, sensitivity = reference_scales(
            next(iter(self.exact.values()), self.analytic), names, self.prepared.widened, point.value
        )
        self.sensitivity = sensitivity
        self.rng = np.random.default_rng([self.options.seed, 2])

    def tolerance(self, name: str) -> Tolerance:
        grad = self.analytic[name]
        grad_dtype = grad.dtype if grad.dtype.kind == "f" else np.dtype(np.float64)
        # Autograd's gradient (backward=None) is computed on float64 copies.
        itemsize = 8 if self.on_torch else min(self.prepared.dtypes[name].itemsize, grad_dtype.itemsize)
        tol = default_tolerance(itemsize, rtol=self.options.rtol, atol=self.options.atol,
                                global_scale=self.global_scale)
        return replace(tol, spread=self.spread.get(name, 0.0))

    def check_inputs(self) -> None:
        """Each input in its mode, then the kink elements of all inputs moved together."""
        tracker = tracker_for(self.options.progress)
        # The evaluator for this stage: its own count of evaluations, backend and progress.
        self.point = replace(self.point, evaluator=self.point.evaluator.derived(backend=self.backend, tracker=tracker))
        # Large inputs (directional mode) measure the noise along one line per step size: each
        # evaluation is costly there, and the directional test re-draws directions anyway.
        noise = Noise(self.point, self.names, self.options.seed, NOISE_DIRECTIONS if self.mode == "full" else 1)
        self.context = Context(self.point, noise, self.sensitivity, self.rng)
        try:
            for name in self.names:
                if name in self.analytic:
                    self.check_input(name)
            tightest = min((s.tolerance for s in self.summaries), key=lambda t: t.rtol, default=None)
            if self.measured and tightest is not None and self.point.output.size:
                tie = tie_finding(self.point, self.measured, self.analytic,
                                  {n: self.prepared.values[n].shape for n in self.measured}, tightest)
                if tie is not None:
                    self.ties.append(tie)
                    self.summaries = [replace(s, mismatches=s.mismatches + 1) if s.name == tie.input else s
                                      for s in self.summaries]
        finally:
            close(tracker)

    def oracle_values(self, name: str, flat_index: int) -> tuple[dict[str, float], dict[str, float]]:
        """The oracles' values at an element of input ``name`` (the numeric one where it was
        measured per element) and their errors."""
        values = {o: float(g[name].reshape(-1)[flat_index]) for o, g in self.exact.items() if name in g}
        errors = {}
        if name in self.measured:
            estimate = self.measured[name].estimate
            values = {"numeric": float(estimate.gradient[flat_index]), **values}
            errors["numeric"] = float(estimate.error[flat_index])
        return values, errors

    def check_input(self, name: str) -> None:
        grad, tol = self.analytic[name], self.tolerance(name)
        references = {o: grads[name] for o, grads in self.exact.items()}
        full = self.mode == "full" or grad.size == 0 or self.point.output.size == 0
        outcome = (check_input_full if full else directional.check_input)(self.context, name, grad, references, tol)
        if outcome.measured is not None:
            self.measured[name] = outcome.measured
        self.faults += outcome.faults
        self.notes += outcome.notes
        comparison, checked, compared = outcome.comparison, outcome.checked, outcome.compared
        self.comparisons[name] = comparison
        self.summaries.append(InputSummary(
            name=name,
            shape=tuple(self.prepared.values[name].shape),
            dtype=self.prepared.dtype_name(name),
            checked=checked,
            mismatches=max(int(comparison.mismatch_mask.sum()), len(comparison.mismatches)),
            compared=compared,
            kinks=len(comparison.kinks),
            worst=dict(comparison.worst),
            worst_at=dict(comparison.worst_at),
            gradient_norm=float(np.linalg.norm(grad.astype(np.float64))),
            tolerance=tol,
        ))

    def diagnoses(self) -> list[InputSummary]:
        """The summaries with the likely bug behind each mismatching input."""
        wrong = {n: c for n, c in self.comparisons.items() if c.reference is not None and c.mismatch_mask.any()}
        if not wrong:
            return self.summaries
        shapes = {n: self.analytic[n].shape for n in wrong}
        found = diagnose(
            {n: self.analytic[n] for n in wrong},  # its dtype too: an integer gradient is named
            {n: c.reference.reshape(shapes[n]) for n, c in wrong.items() if c.reference is not None},
            {n: c.usable.reshape(shapes[n]) for n, c in wrong.items() if c.usable is not None},
            {n: c.mismatch_mask.reshape(shapes[n]) for n, c in wrong.items()},
            self.prepared.values,
            pairs=self.pairs,
        )
        return [replace(s, diagnosis=found.get(s.name)) for s in self.summaries]

    def result(self, faults: list[str], notes: list[str], oracles: tuple[str, ...],
               oracle_errors: dict[str, str], found: Findings | None = None) -> CheckResult:
        found = Findings() if found is None else found
        comparisons = self.comparisons.values()
        mismatches = [m for c in comparisons for m in c.mismatches] + self.ties + found.mismatches
        inputs = [replace(s, mismatches=s.mismatches + sum(m.input == s.name for m in found.mismatches),
                          diagnosis=found.diagnoses.get(s.name, s.diagnosis)) for s in self.diagnoses()]
        return CheckResult(
            ok=not mismatches and not faults,
            inputs=tuple(inputs),
            mismatches=tuple(mismatches),
            kinks=tuple(k for c in comparisons for k in c.kinks),
            disagreements=tuple(d for c in comparisons for d in c.disagreements),
            faults=tuple(faults),
            oracles=oracles,
            notes=tuple(notes),
            mode=self.mode,
            evaluations=self.point.evaluator.evaluations,
            seed=self.options.seed,
            output_shape=tuple(self.point.output.shape),
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
    deterministic: bool = False,
    reference: Callable[..., Any] | None = None,
    reference_factor: float | None = None,
    paths: Iterable[str] | None = None,
) -> CheckResult:
    """``check_gradients``, raising ``GradientMismatch`` (an AssertionError) unless ok.

    Returns the CheckResult when the check passes.
    """
    __tracebackhide__ = True  # pytest shows the mismatch report, not this function
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles,
                           deterministic=deterministic, reference=reference, reference_factor=reference_factor,
                           paths=paths)
    result = run_check(forward, backward, inputs, options)
    if not result.ok:
        raise GradientMismatch(result)
    return result
