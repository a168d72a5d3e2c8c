"""check_gradients / assert_gradients: case -> oracles -> estimates -> comparison -> result.

This module orchestrates; each step is a module of its own:

1. the options are validated once (``options.CheckOptions``), complex values mapped to real
   pairs (``complex_values``; the result is told in the caller's terms again at the end) and
   the inputs copied (``inputs``; misuse raises ``GradcheckError``);
2. the forward is evaluated at the point and ``dout`` fixed (``point``); a forward with several
   outputs is checked as one returning them flat (``outputs``), which then names the outputs a
   failing gradient is wrong through; inputs below float64 run it in their own dtypes too,
   against the float64 forward (``precision``);
3. the backward is called once and what it returns validated (``analytic``), or autograd gives
   the analytic gradients of a torch callable (``backward=None``), in the caller's dtypes;
   a gradient computed below float64 gets its budget against the float64 truth (``precision``);
4. the chosen exact oracles run (``oracles``: torch, jax);
5. each input is checked in full mode (``full``: every element, then the ties) or directional
   mode (``directional``), against the numeric oracle (``numeric``) and the exact ones
   (``compare``, with the rules of ``tolerance``);
6. with ``jvp``, forward mode is checked along tangents, and against the backward
   (``forward_mode``, ``tangents``);
7. next to failures and marginal passes the Taylor test gives a second opinion on each gradient
   (``taylor``), and clears a mismatch only the numeric oracle saw where it shows that oracle
   wrong;
8. the likely bug is named (``diagnose``) and a ``CheckResult`` collected;
9. with ``order=2``, the first-order gradient is checked as a forward of its own
   (``second_order``), by this same engine.

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

from gradcheck import complex_values, directional, repeats, taylor, upstream, validation
from gradcheck.analytic import call_backward
from gradcheck.compare import InputComparison
from gradcheck.diagnose import diagnose
from gradcheck.directions import Signs
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.estimates import Unavailable
from gradcheck.evaluate import SERIAL, Backend, Forked, MultipleOutputs
from gradcheck.forward_mode import JvpSource, check_forward, hand_written, torch_forward_mode
from gradcheck.full import check_input_full, tie_finding
from gradcheck.inputs import PreparedInputs, prepare_inputs, require_signature, resolve_wrt
from gradcheck.layouts import check_layouts
from gradcheck.numeric import NOISE_DIRECTIONS, element_scale
from gradcheck.options import CheckOptions
from gradcheck.oracles import ExactFound, choose_oracles, run_exact_oracles
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
from gradcheck.precision import Budget, below_float64, float64_runs, hold_to_float64_runs, measure_budgets
from gradcheck.precision import check_forward as forward_precision
from gradcheck.progress import NULL_TRACKER, Progress, close, tracker_for
from gradcheck.reference_oracle import ReferenceOracle, low_dtypes, low_precision, output_fault
from gradcheck.repeats import Repeated
from gradcheck.reruns import Backprop, Findings, reordering, torch_given
from gradcheck.result import CheckResult, InputSummary, Mismatch, Tolerance
from gradcheck.second_order import check_second_order, require_second_order
from gradcheck.tolerance import absolute_floor, default_tolerance, dtype_eps, low_precision_tolerance, torch_rounding
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
    jvp: Callable[..., Any] | bool | None = None,
    order: int = 1,
    hvp: Callable[..., Mapping[str, Any]] | None = None,
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
            those in ``wrt`` if given); integer inputs such as labels are held constant. The
            forward at the point and the backward get them in their own dtypes (float16,
            bfloat16, float32, float64); the numeric oracle and the float64 references get
            float64 copies of the same values.
        wrt: the names to check; ``None`` means every floating input.
        seed: seed for ``dout`` and the noise probe; the same seed gives the same result.
        rtol, atol: override the per-dtype tolerances (``None`` keeps the default, which flags
            a float64 gradient wrong by a relative 1e-6; below float64 the default is a budget
            against the float64 truth, ``gradcheck.precision``, and a given rtol or atol is
            added to it). The numeric oracle's error estimate is always added to the allowance.
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
        jvp: forward mode. A hand-written ``jvp(tangents, **inputs) -> output tangent``
            (``tangents``: name -> array shaped like each checked input, in its dtype; it
            returns an array shaped like the output) is checked along random tangents and every
            basis direction of small inputs, against the numeric JVP (central differences
            along the tangent) and the exact oracles' (torch's reverse mode twice, ``jax.jvp``),
            and against the backward (``<dout, J u>`` both ways). With ``backward=None`` on a
            numpy forward, forward mode alone is checked. ``True`` with ``backward=None`` checks
            torch's forward-mode AD of a torch forward (a custom ``autograd.Function``'s
            ``jvp``) against the numeric oracle and against reverse mode. ``None`` or ``False``:
            not checked. Forwards with one real output and real inputs.
        order: 1 checks first derivatives; 2 checks second derivatives as well (see
            ``gradcheck.second_order``): with ``backward=None``, autograd's double backward
            (``create_graph=True``), with respect to the inputs and ``dout``, against central
            differences of autograd's gradient; with a hand-written backward, ``hvp``.
        hvp: with ``order=2`` and a scalar forward, ``hvp(vectors, **inputs) -> {name: H v}``:
            the Hessian-vector product, ``vectors`` one array per checked input, shaped like
            it. Checked against central differences of the backward (itself checked at the
            first order) and torch's double backward; the backward's Jacobian must be
            symmetric.
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
        CheckResult: ``ok``, ``mismatches``, ``kinks``, ``faults``, ``oracles``, ``modes``,
        ``forward``, ``consistency``, ``taylor``, ``second_order``, ...
    Raises:
        GradcheckError: misuse: bad arguments, inputs that are not a mapping of finite numbers
            or arrays, ``wrt`` naming a missing or integer input, ``order`` not 1 or 2, ``hvp``
            without ``order=2``, ``order=2`` with a hand-written backward and no ``hvp``, with
            complex inputs or several outputs (the messages are ``gradcheck.validation``'s), a
            complex output among several (not supported yet); a ``reference`` that fails on the
            inputs, is not differentiable or returns another shape; ``paths`` naming an unknown
            path or given with a backward. Bugs in ``forward`` or ``backward`` never raise; they
            are reported in the result.
    """
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles,
                           deterministic=deterministic, jvp=jvp, order=order, hvp=hvp, reference=reference,
                           reference_factor=reference_factor, paths=paths)
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
    given = (forward, backward)
    forward, backward, prepared, names, boundary, beyond = _prepare(forward, backward, inputs, options)
    if options.order == 2:
        if boundary.dtypes:
            raise GradcheckError(f"order=2 with complex inputs is not supported yet (complex: {list(boundary.dtypes)})")
        require_second_order(backward, options.hvp, prepared)
        first = run_check(*given, inputs, replace(options, order=1, hvp=None), layouts=layouts)
        return check_second_order(forward, backward, prepared, names, options, first, engine=_gradient_check)
    try:
        point, on_torch = _point(forward, prepared, options.seed, backward=backward, hand=callable(options.jvp))
    except MultipleOutputs as several:
        if options.jvp:
            raise GradcheckError(
                "jvp checks a forward with one output; this one returns several (forward mode of several "
                "outputs is not supported yet)"
            ) from None
        return _check_outputs(forward, backward, prepared, names, options, several, boundary, beyond, custom)
    except Fault as fault:
        return _stopped(fault, options, boundary)
    return _check_at(forward, backward, prepared, names, options, point, boundary, beyond, custom=custom,
                     on_torch=on_torch)


def _gradient_check(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, inputs: Mapping[str, Any],
    options: CheckOptions,
) -> CheckResult:
    """The engine on a first-order gradient as a forward (``second_order``): without the
    custom-op checks (repeats, layouts, structured upstream gradients), which the first order
    makes of the code under test, and without the reference and the execution paths (which are
    of the first-order forward)."""
    options = replace(options, reference=None, reference_factor=None, paths=None)
    forward, backward, prepared, names, boundary, beyond = _prepare(forward, backward, inputs, options)
    try:
        point = evaluate_point(forward, prepared, options.seed, on_torch=backward is None)
    except Fault as fault:
        return _stopped(fault, options, boundary)
    return _check_at(forward, backward, prepared, names, options, point, boundary, beyond)


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
                    seed=options.seed, modes=_modes(True, bool(options.jvp))), boundary)


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
    beyond: _Beyond, *, batch: bool = True, custom: _Custom | None = None, on_torch: bool | None = None,
) -> CheckResult:
    """The check of ``names`` once the forward is evaluated at the point (``batch``: switch to
    vmap batches where they pay; ``custom``: run the custom-op checks, None: not; ``on_torch``: it
    runs on torch tensors, by default when ``backward`` is None). Reverse mode is checked unless a
    hand-written jvp is checked alone on a forward of numpy arrays; forward mode when the options
    have a ``jvp``."""
    reverse = backward is not None or (backward is None if on_torch is None else on_torch)
    if not reverse:
        return _forward_alone(forward, prepared, names, options, point, boundary)
    forward_faults, forward_notes = ([], []) if custom is None else \
        repeats.forward_repeats(point, deterministic=options.deterministic)
    low = below_float64(prepared, names)
    try:
        lost = forward_precision(forward, prepared, point, on_torch=backward is None) if low else []
        analytic, source, faults, notes = _analytic(forward, backward, prepared, names, point)
    except Fault as fault:
        return _stopped(fault, options, boundary)
    backprop = Backprop(forward, backward, prepared, names, known=tuple(faults))
    limits = reordering(point, prepared, names, analytic, point.eps * point.scale, on_torch=source is not None)
    repeated = Repeated() if custom is None else \
        repeats.backward_repeats(backprop, analytic, point.dout, limits, deterministic=options.deterministic)
    # Precision lost in the forward's value is reported, not failed: a correct saturated
    # log-softmax in float32 returns 0 for a loss of 1e-11, which no gradient depends on.
    faults, notes = [*forward_faults, *faults, *repeated.faults], [*lost, *notes, *forward_notes, *repeated.notes]
    # With backward=None torch gave the analytic gradients: the other chosen oracles check them
    # (not torch in float64, which would run the same custom backward, right or wrong).
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
    budgets = measure_budgets(forward, backward, prepared, low, analytic, exact.gradients, point.dout, options.seed)
    if lost and budgets:
        # The forward itself keeps less than half its digits in its dtype here (a saturated
        # softmax): a correct backward's gradient then cancels as badly, by an amount no outside
        # measurement bounds. Its gradients are not held to float64 at this point (as a kink's
        # are held only to its slopes); other points check them.
        budgets = {n: replace(b, allowance=np.full(np.shape(b.allowance), np.inf),
                              rule=f"not held to float64 here: the forward loses precision in {b.dtype} at this point")
                   for n, b in budgets.items()}
    # A backward that also runs on float64 copies: that run is held to float64's rules, its low-dtype
    # run to it (``precision.hold_to_float64_runs``). Not where the forward loses its digits: there a
    # correct backward's float64 run may cancel past float64's rules too, and nothing is held.
    own = {} if lost else float64_runs(backward, prepared, tuple(budgets), point.dout)
    run = _Run(point, prepared, names, {**analytic, **own}, exact.gradients, options, on_torch=source is not None,
               spread=repeated.spread, pairs=frozenset(boundary.dtypes),
               budgets={n: b for n, b in budgets.items() if n not in own}, float64_runs=frozenset(own))
    run.check_inputs()
    low_tolerances = {n: low_precision_tolerance(dtype_eps(budgets[n].dtype), rtol=options.rtol, atol=options.atol,
                                                 global_scale=run.global_scale) for n in own}
    own_rounding = {n: run.rounding_below_float64(n, budgets[n].dtype) for n in own}
    held = hold_to_float64_runs(analytic, own, budgets, own_rounding, low_tolerances,
                                {n: m.estimate.kink for n, m in run.measured.items()}, run.oracle_values)
    run.summaries = [replace(s, budget=held.rules[s.name]) if s.name in held.rules else s for s in run.summaries]
    notes += [n for n in run.notes + run.point.evaluator.notes if n not in notes]
    if custom is None:
        found = Findings()
    elif repeated.faults:  # a backward that differs from run to run: other runs would show nothing new
        found = Findings(notes=["layouts and structured upstream gradients not checked: the backward is "
                                "nondeterministic"])
    else:
        # Complex values run as real pairs, which no layout of the caller's tensors corresponds to.
        complex_seen = bool(boundary.dtypes) or boundary.output_complex
        found = _custom_ops(forward, backward, backprop, run, repeated.spread,
                            replace(custom, layouts=()) if complex_seen else custom, analytic, low_tolerances,
                            {n: budgets[n].allowance + own_rounding[n] for n in own})
    # The precision diagnosis says the float64 run is right: not where it mismatched itself.
    found.add(Findings(held.mismatches, {n: d for n, d in held.diagnoses.items()
                                         if all(s.ok for s in run.summaries if s.name == n)}))
    notes += [n for n in held.notes + found.notes if n not in notes]
    oracles = ("numeric", *exact.gradients)
    forward_found = None
    if options.jvp:
        forward_found, stopped = _forward_mode(run, forward, prepared, names, point, exact, reverse=True)
        faults += [stopped] if stopped else []
        oracles += tuple(o for o in (forward_found.oracles if forward_found else ()) if o not in oracles)
    # The reference in the caller's dtypes and the execution paths, also in the main check only.
    more_faults, more_notes = ([], []) if custom is None else _beyond_float64(forward, backward, beyond, run, options)
    result = run.result(faults + run.faults + found.faults + more_faults, notes + more_notes, oracles, exact.errors,
                        found)
    result = _with_forward(result, forward_found, _modes(True, bool(options.jvp)), run.taylor_found)
    return complex_values.relabel(result, boundary)


def _forward_alone(
    forward: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...], options: CheckOptions,
    point: Point, boundary: complex_values.Boundary,
) -> CheckResult:
    """A hand-written jvp checked alone (``backward=None`` on a forward of numpy arrays)."""
    notes = [*point.notes, "reverse mode not checked: backward=None on a forward of numpy arrays, with a hand-written "
             "jvp"]
    run = _Run(point, prepared, names, {}, {}, options, on_torch=False, pairs=frozenset(boundary.dtypes))
    found, stopped = _forward_mode(run, forward, prepared, names, point, ExactFound({}, [], {}), reverse=False)
    notes += [n for n in run.point.evaluator.notes if n not in notes]
    oracles = ("numeric", *(o for o in (found.oracles if found else ()) if o != "numeric"))
    result = run.result([stopped] if stopped else [], notes, oracles, {})
    return complex_values.relabel(_with_forward(result, found, _modes(False, True), None), boundary)


def _forward_mode(
    run: _Run, forward: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...], point: Point,
    exact: ExactFound, *, reverse: bool,
) -> tuple[Any, str | None]:
    """Forward mode of a check: what it found, or the fault that stopped it."""
    jvp = run.options.jvp
    source: JvpSource = (hand_written(jvp, prepared, names, point.output, run.point.evaluator.convert)
                         if callable(jvp) else torch_forward_mode(forward, prepared, point.output))
    oracles = tuple(o for o in choose_oracles(run.options.oracles) if o.name != source.name)
    try:
        return run.forward_mode(forward, source, oracles, exact, backward=reverse), None
    except Fault as fault:
        return None, str(fault)


def _modes(reverse: bool, forward: bool) -> tuple[str, ...]:
    """The modes a check covers, in the order ``CheckResult.modes`` lists them."""
    return (*(("reverse",) if reverse else ()), *(("forward",) if forward else ()))


def _point(forward: Callable[..., Any], prepared: PreparedInputs, seed: int, *,
           backward: Callable[..., Any] | None, hand: bool) -> tuple[Point, bool]:
    """The forward at the point and whether it runs on torch tensors: with ``backward=None`` it
    does (autograd is the analytic side), unless a hand-written jvp is checked alone on a forward
    of numpy arrays (one that fails on them is tried on torch tensors)."""
    if backward is not None:
        return evaluate_point(forward, prepared, seed, on_torch=False), False
    if not hand:
        return evaluate_point(forward, prepared, seed, on_torch=True), True
    try:
        return evaluate_point(forward, prepared, seed, on_torch=False), False
    except Fault as on_numpy:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise on_numpy from None
        try:
            return evaluate_point(forward, prepared, seed, on_torch=True), True
        except Fault:
            raise on_numpy from None


def _with_forward(result: CheckResult, found: Any, modes: tuple[str, ...],
                  taylor_found: taylor.TaylorFound | None) -> CheckResult:
    """The result with forward mode's findings, the modes checked and the Taylor evidence."""
    evidence = tuple(taylor_found.evidence) if taylor_found is not None else ()
    if found is None:
        return replace(result, modes=modes, taylor=evidence)
    consistency = tuple(found.consistency)
    mismatches = result.mismatches + tuple(found.mismatches)
    ok = result.ok and not found.mismatches and all(c.ok for c in consistency)
    notes = result.notes + tuple(n for n in found.notes if n not in result.notes)
    return replace(
        result, ok=ok, mismatches=mismatches, kinks=result.kinks + tuple(found.kinks),
        disagreements=result.disagreements + tuple(found.disagreements), notes=notes, modes=modes,
        forward=found.summary, consistency=consistency, taylor=evidence,
        evaluations=result.evaluations + found.summary.evaluations,
    )


def _custom_ops(forward: Callable[..., Any], backward: Callable[..., Any] | None, backprop: Backprop, run: _Run,
                spread: Mapping[str, float], custom: _Custom, analytic: Mapping[str, np.ndarray],
                tolerances: Mapping[str, Tolerance], own_budgets: Mapping[str, np.ndarray]) -> Findings:
    """After the check at the point: the backward under other layouts (torch callables) and at
    structured upstream gradients, each recomputed gradient allowed the rounding of a reordered
    sum and twice the ``spread`` repeated runs showed (two more runs, each that far from the first).
    ``analytic`` is the backward's own call at the point, in the caller's dtypes, and
    ``tolerances`` and ``own_budgets`` what such a gradient is held to where the check held its
    float64 run instead."""
    reference = next(iter(run.exact.values()), run.analytic)
    limits = reordering(run.point, run.prepared, run.names, reference, run.context.noise.known(), on_torch=run.on_torch,
                        spread={n: 2 * s for n, s in spread.items()})
    passed = {s.name for s in run.summaries if s.ok}
    found = check_layouts(forward, backward, custom.torch_inputs, run.prepared, run.names, run.point.dout, limits,
                          layouts=custom.layouts, passed=passed, oracles=run.oracle_values)
    found.add(upstream.check_upstream(
        backprop, run.point, analytic, {s.name: tolerances.get(s.name, s.tolerance) for s in run.summaries}, limits,
        run.context.noise,
        seed=run.options.seed, failed={s.name for s in run.summaries if not s.ok}, global_scale=run.global_scale,
        budgets={**run.context.budgets, **own_budgets},
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

            # The module's parameters become checked inputs, in their own dtypes.
            forward, inputs = module_forward(forward, inputs)
    choose_oracles(options.oracles)  # names that are no oracle's are misuse, before any work
    real = complex_values.wrap(forward, backward, inputs, wrt=options.wrt)
    prepared = prepare_inputs(real.inputs)
    names = resolve_wrt(prepared, options.wrt)
    require_signature(forward, "forward", tuple(prepared.values))
    if options.jvp and real.boundary.dtypes:
        raise GradcheckError(
            f"jvp checks real inputs only; {sorted(real.boundary.dtypes)} are complex (forward mode of complex "
            "inputs is not supported yet)"
        )
    if callable(options.jvp):
        require_signature(options.jvp, "jvp", tuple(prepared.values), leading=("tangents",))
    elif options.jvp and backward is not None:
        raise GradcheckError(
            "jvp=True checks torch's forward-mode AD of a torch forward, with backward=None; to check a "
            "hand-written forward mode beside this backward, pass jvp=<your jvp(tangents, **inputs)>"
        )
    if backward is not None:
        require_signature(backward, "backward", tuple(prepared.values), leading=("dout",))
    elif not callable(options.jvp):
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
    # In the caller's dtypes (the float64 copies' values, for float64 inputs).
    found = TORCH.gradients(forward, prepared.values, names, point.dout, dtypes=prepared.dtype_names)
    if isinstance(found, Unavailable):
        raise GradcheckError(f"backward=None needs a forward that torch can differentiate: {found.reason}")
    low = below_float64(prepared, names)
    where = f" in the inputs' own dtypes ({', '.join(f'{n} {prepared.native(n)}' for n in low)})" if low else ""
    return dict(found.gradients), TORCH.name, [], [*notes, f"analytic gradients are torch autograd's{where} "
                                                           "(backward=None)"]


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
    budgets: dict[str, Budget] = field(default_factory=dict)
    float64_runs: frozenset[str] = frozenset()  # gradients the backward's float64 run gave: float64's rules
    summaries: list[InputSummary] = field(default_factory=list)
    comparisons: dict[str, InputComparison] = field(default_factory=dict)
    measured: dict[str, Differenced] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ties: list[Mismatch] = field(default_factory=list)
    taylor_found: taylor.TaylorFound | None = None

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
        if name in self.budgets:  # computed below float64: the budget replaces rtol and floor
            return low_precision_tolerance(dtype_eps(self.budgets[name].dtype), rtol=self.options.rtol,
                                           atol=self.options.atol, global_scale=self.global_scale)
        grad = self.analytic[name]
        grad_dtype = grad.dtype if grad.dtype.kind == "f" else np.dtype(np.float64)
        # Autograd's gradient (backward=None) is computed on float64 copies.
        # So is a backward's float64 run, held to float64's rules in place of its low-dtype run.
        itemsize = 8 if self.on_torch or name in self.float64_runs else \
            min(self.prepared.dtypes[name].itemsize, grad_dtype.itemsize)
        tol = default_tolerance(itemsize, rtol=self.options.rtol, atol=self.options.atol,
                                global_scale=self.global_scale)
        return replace(tol, spread=self.spread.get(name, 0.0))

    def rounding_below_float64(self, name: str, dtype: str) -> np.ndarray:
        """The rounding any two correct computations of a gradient in ``dtype`` may differ by,
        per element: the rule held between the backward and torch in float64
        (``tolerance.torch_rounding``) at the dtype's roundoff. Only where a backward's low-dtype
        run is held to its own float64 run (a note below it): added to every low-dtype budget it
        would excuse a bfloat16 gradient 100% off (sensitivity to terms of size |L| over |x|)."""
        dout_size = float(np.max(np.abs(self.point.dout), initial=0.0))
        xscale = element_scale(self.prepared.widened[name].reshape(-1))
        return np.asarray(torch_rounding(0.0, eps=dtype_eps(dtype), sensitivity=self.sensitivity, dout_size=dout_size,
                                         xscale=xscale), dtype=np.float64)

    def check_inputs(self) -> None:
        """Each input in its mode, then the kink elements of all inputs moved together, then the
        Taylor test (``second_opinion``)."""
        tracker = tracker_for(self.options.progress)
        # The evaluator for this stage: its own count of evaluations, backend and progress.
        self.point = replace(self.point, evaluator=self.point.evaluator.derived(backend=self.backend, tracker=tracker))
        # Large inputs (directional mode) measure the noise along one line per step size: each
        # evaluation is costly there, and the directional test re-draws directions anyway.
        noise = Noise(self.point, self.names, self.options.seed, NOISE_DIRECTIONS if self.mode == "full" else 1)
        largest = max((self.prepared.values[n].size for n in self.names), default=0)
        signs = Signs(self.options.seed, largest if self.mode == "directional" else 0)
        self.context = Context(self.point, noise, self.sensitivity, self.rng, signs,
                               {n: b.allowance for n, b in self.budgets.items()})
        try:
            for name in self.names:
                if name in self.analytic:
                    self.check_input(name)
            tightest = min((s.tolerance for s in self.summaries if s.name not in self.budgets), key=lambda t: t.rtol,
                           default=None)
            if tightest is None and self.budgets:  # kinks moved together, below float64: its rtol
                lowest = max((b.dtype for b in self.budgets.values()), key=dtype_eps)
                tightest = default_tolerance(2 if dtype_eps(lowest) > dtype_eps("float32") else 4,
                                             global_scale=self.global_scale)
            if tightest is not None and self.budgets:
                # Below float64 the tied elements' analytic values each carry their budget.
                kinks = {n: np.flatnonzero(m.estimate.kink) for n, m in self.measured.items()}
                carried = sum(float(np.sum(np.broadcast_to(self.context.budgets[n], m.estimate.kink.shape)[kinks[n]]))
                              for n, m in self.measured.items() if n in self.context.budgets)
                tightest = replace(tightest, rounding=max(tightest.rounding, carried))
            if self.measured and tightest is not None and self.point.output.size:
                tie = tie_finding(self.point, self.measured, self.analytic,
                                  {n: self.prepared.values[n].shape for n in self.measured}, tightest)
                if tie is not None:
                    self.ties.append(tie)
                    self.summaries = [replace(s, mismatches=s.mismatches + 1) if s.name == tie.input else s
                                      for s in self.summaries]
            self.second_opinion()
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
            dtype=self.prepared.native(name),
            checked=checked,
            mismatches=max(int(comparison.mismatch_mask.sum()), len(comparison.mismatches)),
            compared=compared,
            kinks=len(comparison.kinks),
            worst=dict(comparison.worst),
            worst_at=dict(comparison.worst_at),
            gradient_norm=float(np.linalg.norm(np.asarray(grad, dtype=np.float64))),
            tolerance=tol,
            budget=self.budgets[name].rule if name in self.budgets else "",
            smallest_caught=comparison.caught,
            detectable=outcome.detectable,
        ))

    def noise(self) -> Noise:
        """The forward's noise: the per-input stage's (measured once per check), or a probe of
        its own where that stage did not run."""
        context = getattr(self, "context", None)
        if context is None:
            self.context = Context(self.point, Noise(self.point, self.names, self.options.seed, NOISE_DIRECTIONS),
                                   self.sensitivity, self.rng, Signs(self.options.seed, 0))
        return self.context.noise

    def second_opinion(self) -> None:
        """The Taylor test next to failures and marginal passes; where no exact oracle ran, the
        mismatches it shows the numeric oracle wrong about are cleared (``taylor``). An empty
        output makes ``L`` identically 0: there is no remainder to measure."""
        if self.point.output.size == 0:
            return
        found = taylor.assess(
            self.point.evaluator, self.point.value, self.noise().measured, self.point.eps, self.summaries,
            self.analytic, [m for c in self.comparisons.values() for m in c.mismatches], exact_ran=bool(self.exact),
            rng=np.random.default_rng([self.options.seed, 3]),
        )
        self.taylor_found = found
        self.notes += found.notes
        for name, indices in found.cleared.items():
            comparison = self.comparisons[name]
            shape = self.analytic[name].shape
            mask = comparison.mismatch_mask.copy()
            for index in indices:
                mask[np.ravel_multi_index(index, shape) if shape else 0] = False
            kept = tuple(m for m in comparison.mismatches if m.index not in indices)
            self.comparisons[name] = replace(comparison, mismatches=kept, mismatch_mask=mask)
            self.summaries = [replace(s, mismatches=s.mismatches - len(comparison.mismatches) + len(kept))
                              if s.name == name else s for s in self.summaries]

    def forward_mode(self, forward: Callable[..., Any], source: JvpSource, oracles: tuple[Any, ...],
                     exact: ExactFound, *, backward: bool) -> Any:
        """Forward mode (``forward_mode.check_forward``) on an evaluator of its own; held to the
        analytic gradients when reverse mode was checked. Raises ``Fault`` (the jvp's)."""
        noise = self.noise()
        ev = self.point.evaluator.derived(tracker=NULL_TRACKER)
        if not backward:
            # Forward mode alone: its noise probe counts among its evaluations.
            noise = Noise(replace(self.point, evaluator=ev), self.names, self.options.seed, 1)
        # The absolute floor each input's gradient elements were allowed (``compare``'s scale).
        floors = {s.name: absolute_floor(s.tolerance, max([float(np.max(np.abs(self.analytic[s.name]), initial=0.0)),
                                                           *(float(np.max(np.abs(g[s.name]), initial=0.0))
                                                             for g in exact.gradients.values() if s.name in g)]))
                  for s in self.summaries if s.name in self.analytic}
        return check_forward(
            self.point, ev, noise, self.prepared, self.names, source, forward=forward, oracles=oracles,
            rng=np.random.default_rng([self.options.seed, 4]), rtol=self.options.rtol, atol=self.options.atol,
            backward=self.analytic if backward else None, backward_exact=exact.gradients, floors=floors,
        )

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
    jvp: Callable[..., Any] | bool | None = None,
    order: int = 1,
    hvp: Callable[..., Mapping[str, Any]] | None = None,
    reference: Callable[..., Any] | None = None,
    reference_factor: float | None = None,
    paths: Iterable[str] | None = None,
) -> CheckResult:
    """``check_gradients``, raising ``GradientMismatch`` (an AssertionError) unless ok.

    Returns the CheckResult when the check passes.
    """
    __tracebackhide__ = True  # pytest shows the mismatch report, not this function
    options = CheckOptions(wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress, oracles=oracles,
                           deterministic=deterministic, jvp=jvp, order=order, hvp=hvp, reference=reference,
                           reference_factor=reference_factor, paths=paths)
    result = run_check(forward, backward, inputs, options)
    if not result.ok:
        raise GradientMismatch(result)
    return result
