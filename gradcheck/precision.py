"""Code run in its own dtype: the forward's precision at the point, and the budget of a gradient
computed below float64.

A check of float32, float16 or bfloat16 inputs runs the code under test in those dtypes: the
forward at the point (``check_forward``) and the backward (``analytic``; autograd in the
caller's dtypes for ``backward=None``). Widening to float64 happens only in the numeric oracle
and the float64 references (the exact oracles at the same, already rounded, inputs), which give
the truth the low-precision results are held to:

* the forward's output in its dtype against the float64 forward: a non-finite value where
  float64 is finite is an overflow (a fault that stops the check), a relative error past
  ``tolerance.forward_precision_lost`` is precision loss (a fault);
* each gradient computed below float64 against the float64 truth, allowed ``budgets``: where the
  forward runs on an exact oracle's arrays (torch, jax), ``k`` times that oracle's own error in
  the same dtype on the same inputs (``tolerance.low_precision_allowance``); without such a
  second computation (a numpy-only forward, or ``backward=None``, where autograd is what is
  checked), the dtype's roundoff scaled by a condition estimate
  (``tolerance.condition_allowance``).

A hand-written backward that also runs on float64 copies of the same rounded inputs
(``float64_runs``) separates the two questions: its float64 run is held to the float64 truth with
float64's rules (is the formula right?), and its low-dtype run to its own float64 run
(``hold_to_float64_runs``): within the budget above it passes, beyond it the precision lost is a
note, and past ``tolerance.own_run_limit`` (half the dtype's digits) a mismatch.

Float64 inputs take none of this: their rules are ``tolerance.PRECISIONS``'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.estimates import Unavailable
from gradcheck.evaluate import as_float_array, describe_exception
from gradcheck.inputs import PreparedInputs
from gradcheck.oracles import Oracle, oracle_named
from gradcheck.point import Fault, Point
from gradcheck.render import fmt, index_str
from gradcheck.result import Diagnosis, Mismatch, Tolerance
from gradcheck.tolerance import (
    CONDITION_ROUNDINGS,
    FORWARD_DIGITS_KEPT,
    JITTER_POINTS,
    LOW_PRECISION_FACTOR,
    LOW_PRECISION_ULPS,
    OWN_RUN_DIGITS_KEPT,
    allowed,
    condition_allowance,
    condition_magnitude,
    dtype_eps,
    forward_precision_lost,
    low_precision_allowance,
    own_run_limit,
    relative_error,
)
from gradcheck.torch_oracle import TORCH

__all__ = ["Budget", "Computations", "OwnRunsHeld", "below_float64", "budgets", "check_forward", "float64_runs",
           "gradient_dtype", "hold_to_float64_runs", "measure_budgets", "native_arguments", "neighbours"]


def lowest(*names: str) -> str:
    """The dtype of the lowest precision (largest roundoff) among ``names``."""
    return max(names, key=dtype_eps)


def below_float64(prepared: PreparedInputs, names: tuple[str, ...]) -> tuple[str, ...]:
    """The checked inputs the caller gave in a floating dtype below float64."""
    return tuple(n for n in names if dtype_eps(prepared.native(n)) > dtype_eps("float64"))


def gradient_dtype(prepared: PreparedInputs, name: str, gradient: np.ndarray, *, autograd: bool) -> str:
    """The dtype an input's gradient was computed in: the lower of the input's and the returned
    gradient's (``autograd``: torch ran in the input's dtype and returned a float64 copy)."""
    if autograd or gradient.dtype.kind != "f":
        return prepared.native(name)
    return lowest(prepared.native(name), gradient.dtype.name)


def _needs_torch(prepared: PreparedInputs) -> bool:
    return "bfloat16" in prepared.dtype_names.values()


def native_arguments(prepared: PreparedInputs, *, on_torch: bool) -> dict[str, Any]:
    """The inputs in the caller's dtypes, as the forward at the point gets them: torch tensors
    (bfloat16 included) when ``on_torch`` or an input is a bfloat16 (numpy cannot hold it), else
    numpy copies."""
    if not (on_torch or _needs_torch(prepared)):
        return {n: np.array(a, copy=True) for n, a in prepared.values.items()}
    import torch

    def tensor(name: str, a: np.ndarray) -> Any:
        t = torch.from_numpy(np.array(a, copy=True))
        return t.to(getattr(torch, prepared.native(name))) if a.dtype.kind == "f" else t

    return {n: tensor(n, a) for n, a in prepared.values.items()}


def _dtype_name(out: Any) -> str:
    dtype = getattr(out, "dtype", None)
    if dtype is None:
        return np.asarray(out).dtype.name
    return str(dtype).removeprefix("torch.") if type(out).__module__.startswith("torch") else np.dtype(dtype).name


def _call(forward: Callable[..., Any], args: dict[str, Any]) -> Any:
    """``forward(**args)``: without autograd graphs, and with numpy's overflow warnings silenced
    (an overflow is reported as a fault)."""
    with np.errstate(all="ignore"):
        if any(type(a).__module__.startswith("torch") for a in args.values()):
            import torch

            with torch.no_grad():
                return forward(**args)
        return forward(**args)


def check_forward(forward: Callable[..., Any], prepared: PreparedInputs, point: Point, *, on_torch: bool) -> list[str]:
    """The forward at the point in the caller's dtypes against the float64 forward at the same
    rounded inputs (``point.output``): the faults found (precision loss); none where the forward
    ran only in the inputs' own dtypes (it fails on float64 copies), with nothing to compare.

    Raises:
        Fault: the forward fails in the caller's dtypes, returns another shape there, or
            overflows there (a non-finite value where float64 is finite).
    """
    if any(point.evaluator.work[n].dtype != np.float64 for n in prepared.floating):
        return []  # the forward runs only in the inputs' own dtypes: nothing to compare with
    # On torch tensors where the forward is checked on torch or an input is a bfloat16; where the
    # caller gave tensors, on torch first and then on numpy arrays of the same dtypes.
    tries = [True] if on_torch or _needs_torch(prepared) else ([True, False] if prepared.tensors else [False])
    for k, torch_args in enumerate(tries):
        try:
            out = _call(forward, native_arguments(prepared, on_torch=torch_args))
            low = as_float_array(out).astype(np.float64)
            break
        except Exception as exc:
            if k + 1 < len(tries):
                continue
            given = ", ".join(f"{n} {prepared.native(n)}" for n in prepared.floating)
            raise Fault(f"forward raised {describe_exception(exc)} in the inputs' own dtypes ({given}) at the "
                        "given point; on float64 copies it runs", point.notes) from None
    dtype = _dtype_name(out)
    want = point.output
    if low.shape != want.shape:
        raise Fault(f"forward returns shape {low.shape} in the inputs' own dtypes but {want.shape} on float64 copies",
                    point.notes)
    bad = ~np.isfinite(low)
    if bad.any():
        at = np.unravel_index(int(np.argmax(bad.reshape(-1))), low.shape) if low.ndim else ()
        where = f"element {tuple(int(i) for i in at)}: " if low.ndim else ""
        raise Fault(f"forward overflows in {dtype} at this point; finite in float64 (e.g. {where}{float(low[at])} "
                    f"in {dtype}, {float(want[at]):.6g} in float64; {int(bad.sum())} non-finite value(s))", point.notes)
    eps = dtype_eps(lowest(dtype, *(prepared.native(n) for n in prepared.floating)))
    rel = relative_error(low.reshape(-1), want.reshape(-1), float(np.max(np.abs(want), initial=0.0)))
    i = int(np.argmax(rel)) if rel.size else 0
    if rel.size and forward_precision_lost(float(rel[i]), eps):
        at = np.unravel_index(i, low.shape) if low.ndim else ()
        where = f" at element {tuple(int(j) for j in at)}" if low.ndim else ""
        return [f"forward loses precision in {dtype} at this point: relative error {float(rel[i]):.3g} against "
                f"float64{where} ({float(low.reshape(-1)[i]):.6g} vs {float(want.reshape(-1)[i]):.6g}), more than "
                f"half its digits (tolerance.forward_precision_lost: eps ** FORWARD_DIGITS_KEPT = "
                f"{eps:.3g} ** {FORWARD_DIGITS_KEPT} = {eps ** FORWARD_DIGITS_KEPT:.3g})"]
    return []


def neighbours(
    values: Mapping[str, np.ndarray], dtypes: Mapping[str, str], rng: np.random.Generator, count: int,
) -> list[dict[str, np.ndarray]]:
    """``count`` points next to ``values``: every nonzero floating element moved by one unit in
    the last place of its dtype, up or down at random (zeros stay: a kink at 0 is not crossed).
    A computation's results there differ from its result at the point by its rounding and by
    how the gradient moves over one rounding of the inputs (its condition)."""
    points = []
    for _ in range(count):
        point = {}
        for name, a in values.items():
            if a.dtype.kind != "f":
                point[name] = a
                continue
            up = rng.random(a.shape) < 0.5
            if dtypes.get(name) == "bfloat16":  # float32 bits whose low 16 are 0: step the high 16
                bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.int64)
                larger = up == (np.asarray(a) > 0)
                step = np.where(larger, 1 << 16, -(1 << 16))
                moved = np.where(a != 0, bits + step, bits).astype(np.uint32).view(np.float32)
            else:
                moved = np.nextafter(a, np.where(up, np.inf, -np.inf).astype(a.dtype))
            point[name] = np.where(a != 0, moved, a).astype(a.dtype)
        points.append(point)
    return points


def _largest(found: Sequence[Mapping[str, np.ndarray]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {n: np.max(np.stack([np.abs(np.asarray(f[n], dtype=np.float64)).reshape(-1) for f in found]), axis=0)
            for n in names}


@dataclass(frozen=True)
class Budget:
    """The allowance of one input's gradient computed below float64 against the float64 truth.

    Attributes:
        allowance: per element, flat.
        rule: how it was set, in one line (the report's "budget:").
        dtype: the dtype the gradient was computed in.
    """

    allowance: np.ndarray
    rule: str
    dtype: str


Gradients = Callable[[Mapping[str, np.ndarray]], "Mapping[str, np.ndarray] | None"]


@dataclass(frozen=True)
class Computations:
    """What a budget is measured with, each a function of the inputs in the caller's dtypes
    (name -> numpy array, bfloat16 held as float32) returning gradients by name, or None where
    it does not run.

    Attributes:
        truth: the float64 reference gradients at the point (an exact oracle's), or None.
        trusted: the same oracle in the caller's dtypes, or None without one.
        trusted_name: that oracle's name.
        analytic: the computation under check (the backward, or autograd for backward=None).
        why_not: why there is no trusted computation, in words.
    """

    truth: Mapping[str, np.ndarray] | None
    trusted: Gradients | None
    trusted_name: str
    analytic: Gradients
    why_not: str = ""


def budgets(
    dtypes: Mapping[str, str], prepared: PreparedInputs, analytic: Mapping[str, np.ndarray],
    computations: Computations, rng: np.random.Generator,
) -> dict[str, Budget]:
    """Per input of ``dtypes`` (name -> the dtype its gradient was computed in, below float64),
    the budget against the float64 truth:

    * with a trusted computation: its distance from the truth at the point, times
      ``LOW_PRECISION_FACTOR``, floored at ``LOW_PRECISION_ULPS`` of the magnitudes
      (``low_precision_allowance``); where the analytic gradient is not within that, the
      largest distance over the point and ``JITTER_POINTS`` neighbours (``neighbours``), which
      re-draw the roundings and add the gradient's condition, before it is held to it;
    * without: the computation's own largest change over the neighbours
      (``condition_allowance``), measured where the floor alone does not clear the analytic
      gradient against a truth, and always without one.
    """
    names = tuple(dtypes)
    ulps = LOW_PRECISION_ULPS * CONDITION_ROUNDINGS
    truth = computations.truth
    ref = {n: np.asarray((truth if truth is not None else analytic)[n], dtype=np.float64).reshape(-1)
           for n in names}
    got = {n: np.asarray(analytic[n], dtype=np.float64).reshape(-1) for n in names}
    eps = {n: dtype_eps(d) for n, d in dtypes.items()}

    def clear(allowance: Mapping[str, np.ndarray]) -> bool:
        """The analytic gradient within ``allowance`` of the truth (never, without a truth)."""
        return truth is not None and all(np.all(np.abs(got[n] - ref[n]) <= allowance[n]) for n in names)

    def distances(found: Mapping[str, np.ndarray] | None, base: Mapping[str, np.ndarray]) -> list[dict]:
        return [] if found is None else [{n: np.asarray(found[n], dtype=np.float64).reshape(-1) - base[n]
                                          for n in names}]

    same = computations.trusted(prepared.values) if computations.trusted is not None and truth is not None else None
    if same is not None:
        seen = distances(same, ref)
        errors = _largest(seen, names)
        allowance = {n: low_precision_allowance(errors[n], condition_magnitude(ref[n]), eps=eps[n]) for n in names}
        if not clear(allowance):
            trusted = computations.trusted
            for point in neighbours(prepared.values, prepared.dtype_names, rng, JITTER_POINTS):
                seen += distances(trusted(point) if trusted is not None else None, ref)
            errors = _largest(seen, names)
            allowance = {n: low_precision_allowance(errors[n], condition_magnitude(ref[n]), eps=eps[n]) for n in names}
        where = "at the point" if len(seen) == 1 else f"largest of {len(seen)} points"
        return {n: Budget(allowance[n], f"{LOW_PRECISION_FACTOR} x {computations.trusted_name} autograd's error in "
                          f"{d} (rms {float(np.sqrt(np.mean(errors[n] ** 2))) if errors[n].size else 0.0:.2g}, "
                          f"{where}), at least {ulps} ulps of |g| + rms(g) (low_precision_allowance)", d)
                for n, d in dtypes.items()}
    jitter = {n: np.zeros(got[n].shape) for n in names}
    allowance = {n: condition_allowance(ref[n], jitter[n], eps=eps[n]) for n in names}
    moved: list[dict] = []
    if not clear(allowance):
        for point in neighbours(prepared.values, prepared.dtype_names, rng, JITTER_POINTS):
            moved += distances(computations.analytic(point), got)
        if moved:
            jitter = _largest(moved, names)
            allowance = {n: condition_allowance(ref[n], jitter[n], eps=eps[n]) for n in names}
    over = f"over {len(moved)} neighbouring points" if moved else "not needed"
    return {n: Budget(allowance[n], f"{LOW_PRECISION_FACTOR} x the gradient's own change ({over}), at least {ulps} "
                      f"{d} ulps of |g| + rms(g) (condition_allowance; {computations.why_not})", d)
            for n, d in dtypes.items()}


def measure_budgets(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, prepared: PreparedInputs, low: tuple[str, ...],
    analytic: Mapping[str, np.ndarray], exact: Mapping[str, Mapping[str, np.ndarray]], dout: np.ndarray | float,
    seed: int,
) -> dict[str, Budget]:
    """The budget of each gradient of an input below float64 against the float64 truth
    (``precision.budgets``), with the first exact oracle, run again in the caller's dtypes, as
    the trusted same-dtype computation (none for ``backward=None``: autograd is what is checked).
    ``low`` names the checked inputs below float64, ``exact`` holds the exact oracles' float64
    gradients (the first is the truth), ``dout`` is the check's upstream gradient."""
    dtypes = {n: gradient_dtype(prepared, n, analytic[n], autograd=backward is None) for n in low if n in analytic}
    if not dtypes:
        return {}
    names = tuple(dtypes)

    def by(oracle: Oracle) -> Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray] | None]:
        """The oracle's gradients in the caller's dtypes at ``values``."""
        def at(values: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray] | None:
            found = oracle.gradients(forward, values, names, dout, dtypes=prepared.dtype_names)
            return None if isinstance(found, Unavailable) else found.gradients
        return at

    def analytic_at(values: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray] | None:
        if backward is None:
            return by(TORCH)(values)
        try:
            returned = backward(dout, **{n: np.array(a, copy=True) for n, a in values.items()})
            return {n: as_float_array(returned[n]).astype(np.float64) for n in names}
        except Exception:  # the backward fails next to the point: no measurement there
            return None

    first = next(iter(exact), None)
    truth = None if first is None else exact[first]
    if backward is None or first is None:
        why = "autograd is what is checked (backward=None)" if backward is None else \
            "the forward runs on no exact oracle"
        computations = Computations(truth, None, "", analytic_at, why)
    else:
        computations = Computations(truth, by(oracle_named(first)), first, analytic_at,
                                    f"{first} did not run in the inputs' own dtypes")
    return budgets(dtypes, prepared, analytic, computations, np.random.default_rng([seed, 3]))


def float64_runs(
    backward: Callable[..., Any] | None, prepared: PreparedInputs, names: Sequence[str], dout: np.ndarray | float,
) -> dict[str, np.ndarray]:
    """The hand-written backward called once more, on float64 copies of the same (already rounded)
    inputs: name -> its float64 gradient, for each of ``names`` (the gradients computed below
    float64) where it runs there and returns a finite float64 gradient of the input's shape. Empty
    for ``backward=None`` (autograd is what is checked) or where it fails on float64 copies: its
    low-dtype run is then held to the float64 truth with its budget alone."""
    if backward is None or not names:
        return {}
    args = {n: np.array(a, copy=True) for n, a in prepared.widened.items()}
    try:
        with np.errstate(all="ignore"):
            returned = backward(float(dout) if np.ndim(dout) == 0 else np.array(dout, copy=True), **args)
    except Exception:  # the backward runs only in the inputs' own dtypes
        return {}
    if not isinstance(returned, Mapping):
        return {}
    found = {}
    for name in names:
        g = returned.get(name)
        if g is None or _dtype_name(g) != "float64":
            continue
        try:
            g = as_float_array(g)
        except Exception:
            continue
        if g.shape == prepared.values[name].shape and np.all(np.isfinite(g)):
            found[name] = g
    return found


@dataclass(frozen=True)
class OwnRunsHeld:
    """The low-dtype runs held to their own float64 runs (``hold_to_float64_runs``).

    Attributes:
        rules: per input, how it was held, in one line (the report's "budget:").
        notes: precision lost beyond a budget, within ``tolerance.own_run_limit``.
        mismatches: elements past it, the float64 run their reference ("float64 run").
        diagnoses: per input with such elements, kind "precision".
    """

    rules: dict[str, str]
    notes: list[str]
    mismatches: list[Mismatch]
    diagnoses: dict[str, Diagnosis]


def hold_to_float64_runs(
    native: Mapping[str, np.ndarray], own: Mapping[str, np.ndarray], budgets: Mapping[str, Budget],
    rounding: Mapping[str, np.ndarray], tolerances: Mapping[str, Tolerance], kinks: Mapping[str, np.ndarray],
    oracles: Callable[[str, int], tuple[dict[str, float], dict[str, float]]] | None = None,
) -> OwnRunsHeld:
    """Each low-dtype gradient in ``native`` held to the backward's own float64 run ``own`` (whose
    formula the float64 rules check): within its budget (the allowance against the float64 truth
    plus ``rounding``, the rounding two correct computations in its dtype may differ by, under
    ``tolerances``, the low-precision tolerance) it passes; beyond it, a note; past
    ``tolerance.own_run_limit`` more, a mismatch. Elements at a kink (``kinks``: flat masks) are
    held to their one-sided slopes by the float64 run only: the low dtype's rounding may cross it.
    ``oracles`` gives the oracles' values and errors at an element, for a mismatch's line."""
    rules: dict[str, str] = {}
    notes: list[str] = []
    mismatches: list[Mismatch] = []
    diagnoses: dict[str, Diagnosis] = {}
    for name, ref in own.items():
        budget = budgets[name]
        eps = dtype_eps(budget.dtype)
        shape = ref.shape
        r = np.asarray(ref, dtype=np.float64).reshape(-1)
        a = np.asarray(native[name], dtype=np.float64).reshape(-1)
        tol, scale = tolerances[name], float(np.max(np.abs(r), initial=0.0))
        inside = budget.allowance + rounding[name]
        limit = inside + own_run_limit(r, eps=eps)
        gap = np.abs(a - r)
        at_kink = kinks.get(name, np.zeros(r.shape, dtype=bool))
        beyond_budget = ~at_kink & (gap > allowed(a, r, inside, tol, scale))
        beyond_limit = ~at_kink & (gap > allowed(a, r, limit, tol, scale))
        rules[name] = (f"float64 run held to float64's rules; the {budget.dtype} run " + (
            budget.rule if np.all(np.isinf(budget.allowance)) else
            f"held to it with {budget.rule}; beyond, a note, and a mismatch past eps ** {OWN_RUN_DIGITS_KEPT} of "
            "2 (|g| + rms(g)) more (own_run_limit)"))
        rel = relative_error(a, r, scale)
        if beyond_budget.any() and not beyond_limit.any():
            i = int(np.argmax(np.where(beyond_budget, gap, -1.0)))
            notes.append(
                f"{budget.dtype} run loses precision against its own float64 run: {int(beyond_budget.sum())} of "
                f"{r.size} element(s) of {name} beyond its budget, worst {_at(name, shape, i)} {fmt(float(a[i]), 6)} "
                f"vs {fmt(float(r[i]), 6)} (off by {fmt(float(gap[i]), 3)}, rel. {fmt(float(rel[i]), 2)}; budget "
                f"{fmt(float(inside[i]), 2)}, a mismatch past {fmt(float(limit[i]), 2)})")
        for j in (int(k) for k in np.flatnonzero(beyond_limit)):
            values, errors = oracles(name, j) if oracles is not None else ({}, {})
            mismatches.append(Mismatch(
                input=name, index=_index(shape, j), analytic=float(a[j]),
                references={**values, "float64 run": float(r[j])}, errors=errors, relative_error=float(rel[j]),
                tolerance=float(limit[j]), against=("float64 run",), difference=float(gap[j])))
        if beyond_limit.any():
            i = int(np.argmax(np.where(beyond_limit, gap, -1.0)))
            diagnoses[name] = Diagnosis(
                kind="precision",
                summary=(f"the {budget.dtype} run keeps less than half its digits against the backward's own float64 "
                         f"run, which is right: {_at(name, shape, i)} {fmt(float(a[i]), 6)} vs {fmt(float(r[i]), 6)} "
                         f"(a {budget.dtype}-only bug: an accumulator or a cast in a lower precision?)"),
                params={"dtype": budget.dtype},
                evidence=f"{int(beyond_limit.sum())}/{r.size} elements past the limit ({fmt(float(limit[i]), 2)} at "
                         f"{_at(name, shape, i)})")
    return OwnRunsHeld(rules, notes, mismatches, diagnoses)


def _index(shape: tuple[int, ...], flat: int) -> tuple[int, ...]:
    return tuple(int(k) for k in np.unravel_index(flat, shape)) if shape else ()


def _at(name: str, shape: tuple[int, ...], flat: int) -> str:
    return index_str(name, _index(shape, flat))
