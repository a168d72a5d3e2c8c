"""Layout fuzzing: the backward of a torch callable run on tensors of other strides.

torch's gradcheck feeds every backward contiguous tensors, but in a model a backward receives
whatever the ops around it hand out: a transposed view, a slice of a larger buffer (``torch.cat``'s
backward), a stride-0 expanded tensor (``sum``'s backward), a channels-last activation. A kernel
that assumes contiguity (``grad_output.view(...)``, indexing from ``data_ptr``) raises or
computes garbage on those. So at the point, the backward runs again with one tensor (an input,
or ``dout``) in another layout, the values unchanged:

* ``transposed``: a contiguous copy of the transpose of the last two axes, transposed back;
* ``narrowed``: a view into a larger buffer (padded with NaN along the last axis, so a kernel
  reading past the view reads NaN);
* ``expanded``: stride 0, for ``dout`` (what a ``sum``'s backward hands on) in a run of its
  own at a constant upstream gradient (``CONSTANT_DOUT``, what ``loss.sum()`` hands back),
  against the contiguous run at that constant. Inputs are not expanded: their values rarely
  allow it, and where they do (weights initialized to ones) they are parameters, which never
  come stride 0 (torch's own CPU ``batch_norm`` backward in eval mode reads past a stride-0
  weight that requires grad);
* ``channels_last``: 4-d tensors in channels-last memory format.

The values are identical, so the truth is the contiguous run (and the oracles, which the
contiguous gradient was checked against): a gradient that moves beyond
``tolerance.reorder_limit`` is a mismatch of kind "layout", naming the layout and the tensor.
A backward (or forward) that raises under a layout, or changes the tensors it is given, is a
fault.

It applies to ``backward=None`` (autograd through the callable, ``grad_outputs`` passed as laid
out) and to a numpy-API backward whose inputs were given as torch tensors (called with torch
tensors here; if it does not take torch tensors at all, a note says the layouts were not run).
Hypothesis runs draw one layout per example (``draw``), so a shrunk failure names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.evaluate import ForwardFailure, as_float_array, describe_exception
from gradcheck.inputs import PreparedInputs
from gradcheck.precision import native_arguments
from gradcheck.render import fmt, index_str
from gradcheck.reruns import Findings, torch_given
from gradcheck.result import Diagnosis, Mismatch
from gradcheck.validation import LAYOUTS

__all__ = ["CONSTANT_DOUT", "LAYOUTS", "check_layouts", "draw", "lay_out"]

CONSTANT_DOUT = 1.0  # the upstream gradient of the expanded-dout run: loss.sum()'s

WORDS = {
    "transposed": "transposed (a contiguous copy of its transpose, transposed back)",
    "narrowed": "a narrowed view into a larger buffer (as torch.cat's backward hands out)",
    "expanded": "expanded from one value along an axis (stride 0, as sum()'s backward hands out)",
    "channels_last": "in channels-last memory format",
}


def lay_out(torch: Any, layout: str, t: Any) -> Any | None:
    """``t``'s values in ``layout`` (differentiably, for a tensor that requires grad), or None
    where the layout does not apply to it (or would not change its strides)."""
    shape = tuple(t.shape)
    if layout == "transposed":
        if t.ndim < 2 or shape[-1] < 2 or shape[-2] < 2:
            return None
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "narrowed":
        if t.ndim < 1 or t.numel() == 0:
            return None
        pad = torch.full((*shape[:-1], 1), float("nan"), dtype=t.dtype) if t.dtype.is_floating_point \
            else torch.zeros((*shape[:-1], 1), dtype=t.dtype)
        return torch.cat([pad, t, pad, pad], dim=-1).narrow(-1, 1, shape[-1])
    if layout == "expanded":
        constant = [k for k in range(t.ndim) if shape[k] > 1 and bool((t == t.narrow(k, 0, 1)).all())]
        if not constant:
            return None
        base = t
        for k in constant:
            base = base.narrow(k, 0, 1)
        return base.clone().expand(*shape)  # its own storage, of the base's values only
    if layout == "channels_last":
        if t.ndim != 4 or shape[1] < 2 or shape[2] * shape[3] < 2:
            return None
        return t.contiguous(memory_format=torch.channels_last)
    raise ValueError(f"unknown layout {layout!r}")  # pragma: no cover - validated in options


def _applied(torch: Any, layout: str, t: Any) -> Any:
    """``lay_out`` of a tensor it applies to (the targets are chosen so)."""
    laid = lay_out(torch, layout, t)
    if laid is None:  # pragma: no cover - invariant
        raise RuntimeError(f"layout {layout!r} does not apply to a tensor of shape {tuple(t.shape)}")
    return laid


def draw(data: Any, backward: Callable[..., Any] | None, inputs: Any) -> str | None:
    """The layout a Hypothesis example runs under (drawn from ``data``), or None where layouts
    do not apply (a numpy backward given no torch tensor: then nothing is drawn)."""
    if backward is not None and not torch_given(inputs):
        return None
    from hypothesis import strategies as st

    return str(data.draw(st.sampled_from(LAYOUTS), label="layout"))


class _Raised(Exception):
    def __init__(self, who: str, exc: BaseException) -> None:
        super().__init__(f"{who} raised {describe_exception(exc)}")


class _Changed(Exception):
    def __init__(self, who: str, what: str) -> None:
        super().__init__(f"{who} changes {what} in place")


@dataclass(frozen=True)
class _Target:
    """The tensor a layout is applied to: an input by name, or ``dout``."""

    name: str | None  # None: dout

    def __str__(self) -> str:
        return "dout" if self.name is None else f"input {self.name!r}"


@dataclass(frozen=True)
class _Caller:
    """Runs the code under test once on torch tensors with some of them laid out."""

    forward: Callable[..., Any]
    backward: Callable[..., Any] | None
    prepared: PreparedInputs
    names: tuple[str, ...]

    def tensors(self, torch: Any) -> dict[str, Any]:
        if self.backward is None:  # autograd in the caller's dtypes, as the check's own gradient
            return native_arguments(self.prepared, on_torch=True)
        return {n: torch.tensor(a) for n, a in self.prepared.values.items()}

    def run(self, torch: Any, dout: np.ndarray | float, targets: tuple[_Target, ...], layout: str
            ) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
        """The gradients with ``targets`` in ``layout`` (none: all contiguous), and the last
        laid-out tensor's strides. Raises ``_Raised`` or ``_Changed`` (a fault)."""
        base = self.tensors(torch)
        wrt = list(self.names)
        if self.backward is None:
            for n in wrt:
                base[n].requires_grad_(True)
        passed = dict(base)
        strides = None
        d = torch.tensor(np.broadcast_to(np.asarray(dout, dtype=np.float64), np.shape(dout)).copy())
        for target in targets:
            if target.name is not None:
                laid = _applied(torch, layout, base[target.name])
                passed[target.name] = laid
            else:
                d = laid = _applied(torch, layout, d)
            strides = tuple(laid.stride())
        originals = {n: t.detach().clone() for n, t in passed.items()}
        d_original = d.clone()
        if self.backward is None:
            try:
                with torch.enable_grad():
                    out = self.forward(**passed)
            except Exception as exc:  # a bug under test: a fault
                raise _Raised("forward", exc) from None
            self._unchanged(torch, "forward", passed, originals)
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                raise _Raised("forward", TypeError("returned no tensor with an autograd graph"))
            out64 = out if out.dtype == torch.float64 else out.to(torch.float64)
            grad_outputs = d if out64.ndim else d.reshape(())
            try:
                grads = torch.autograd.grad(out64, [passed[n] for n in wrt], grad_outputs=grad_outputs,
                                            allow_unused=True)
            except Exception as exc:  # a bug under test: a fault
                raise _Raised("backward", exc) from None
            returned: Mapping[str, Any] = dict(zip(wrt, grads, strict=True))
        else:
            try:
                returned = self.backward(d if np.ndim(dout) else float(dout), **passed)
            except Exception as exc:  # a bug under test: a fault
                raise _Raised("backward", exc) from None
            if not isinstance(returned, Mapping):
                raise _Raised("backward", TypeError(f"returned {type(returned).__name__}, not a dict"))
        self._unchanged(torch, "backward", passed, originals)
        if not _equal(torch, d, d_original):
            raise _Changed("backward", "dout")
        gradients = {}
        for n in wrt:
            g = returned.get(n)
            gradients[n] = np.zeros(self.prepared.values[n].shape) if g is None else \
                np.asarray(as_float_array(g.detach() if hasattr(g, "detach") else g), dtype=np.float64)
        return gradients, strides

    @staticmethod
    def _unchanged(torch: Any, who: str, passed: Mapping[str, Any], originals: Mapping[str, Any]) -> None:
        for n, t in passed.items():
            if not _equal(torch, t.detach(), originals[n]):
                raise _Changed(who, f"its input {n!r}")


def _equal(torch: Any, a: Any, b: Any) -> bool:
    return bool(torch.equal(a, b)) if not a.is_floating_point() else bool(
        ((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _targets(torch: Any, caller: _Caller, dout: np.ndarray | float, layout: str) -> list[_Target]:
    """The tensors ``layout`` applies to, inputs first (``dout`` alone is expanded)."""
    tensors = caller.tensors(torch)
    found = [_Target(n) for n in caller.prepared.floating
             if layout != "expanded" and lay_out(torch, layout, tensors[n]) is not None]
    if np.ndim(dout):
        d = torch.full(np.shape(dout), CONSTANT_DOUT) if layout == "expanded" else torch.tensor(np.asarray(dout))
        if lay_out(torch, layout, d) is not None:
            found.append(_Target(None))
    return found


def check_layouts(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, torch_inputs: bool, prepared: PreparedInputs,
    names: tuple[str, ...], dout: np.ndarray | float, limits: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    *, layouts: tuple[str, ...] | None, passed: set[str],
    oracles: Callable[[str, int], tuple[dict[str, float], dict[str, float]]] | None = None,
) -> Findings:
    """Run the backward under each of ``layouts`` (None: all) at upstream gradient ``dout``.

    Args:
        forward, backward: as the check was given them; layouts apply to ``backward=None`` and
            to a backward whose inputs were given as torch tensors (``torch_inputs``).
        prepared, names: the check's copies of the inputs and the names checked.
        dout: the check's upstream gradient.
        limits: per input, how far a recomputed gradient may sit from the reference (flat).
        passed: the inputs whose contiguous gradient passed the check: a layout mismatch there
            is a mismatch; elsewhere (already wrong) it is a note.
        oracles: ``oracles(name, flat_index)`` -> the oracles' values at an element and their
            errors at ``dout``, shown beside a mismatch found there.
    """
    chosen = LAYOUTS if layouts is None else layouts
    if not chosen or (backward is not None and not torch_inputs):
        return Findings()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the autograd oracle: no idle threads spinning after the runs
    try:
        return _check(torch, _Caller(forward, backward, prepared, names), dout, limits, chosen, passed, oracles)
    finally:
        torch.set_num_threads(threads)


def _check(torch: Any, caller: _Caller, dout: np.ndarray | float,
           limits: Mapping[str, Callable[[np.ndarray], np.ndarray]], chosen: tuple[str, ...], passed: set[str],
           oracles: Callable[[str, int], tuple[dict[str, float], dict[str, float]]] | None) -> Findings:
    """``check_layouts``'s runs, on one thread."""
    found = Findings()
    contiguous: dict[Any, dict[str, np.ndarray]] = {}

    def reference(at: np.ndarray | float) -> dict[str, np.ndarray]:
        key = "constant" if at is not dout else "dout"
        if key not in contiguous:
            contiguous[key] = caller.run(torch, at, (), "contiguous")[0]
        return contiguous[key]

    try:
        reference(dout)
    except (_Raised, _Changed, ForwardFailure) as exc:
        if caller.backward is None:
            found.faults.append(f"{exc} (contiguous tensors, grad_outputs passed to autograd)")
        else:
            found.notes.append(f"layouts not checked: the backward does not take torch tensors ({exc})")
        return found
    constant = np.full(np.shape(dout), CONSTANT_DOUT) if np.ndim(dout) else dout

    def together(targets: list[_Target], at: np.ndarray | float, layout: str) -> bool:
        """Whether the gradients stay put with every one of ``targets`` laid out at once."""
        trial = Findings()
        try:
            got, _ = caller.run(torch, at, tuple(targets), layout)
            _compare(trial, reference(at), got, limits, layout, targets[0], None, passed)
        except (_Raised, _Changed, ForwardFailure):
            return False
        return not (trial.mismatches or trial.faults or trial.notes)

    for layout in chosen:
        targets = _targets(torch, caller, dout, layout)
        constant_run = [t for t in targets if layout == "expanded" and t.name is None]
        groups = [(g, at) for g, at in (([t for t in targets if t not in constant_run], dout), (constant_run, constant))
                  if g]
        # All the tensors a layout applies to at once; one by one only where that moves a gradient.
        for target in [t for group, at in groups if len(group) == 1 or not together(group, at, layout) for t in group]:
            at = constant if target in constant_run else dout
            try:
                truth = reference(at)
                got, strides = caller.run(torch, at, (target,), layout)
            except (_Raised, _Changed) as exc:
                found.faults.append(f"{exc} when {target} is {WORDS[layout]} (strides "
                                    f"{_strides(torch, layout, target, caller, at)}); it runs on contiguous tensors")
                return found
            except ForwardFailure as exc:  # a gradient that is not an array
                found.faults.append(f"backward's gradient {exc} when {target} is {WORDS[layout]}")
                return found
            _compare(found, truth, got, limits, layout, target, strides, passed,
                     oracles if at is dout else None)
            if found.mismatches or found.faults:
                return found  # one layout that breaks it is the finding; the rest would repeat it
    return found


def _strides(torch: Any, layout: str, target: _Target, caller: _Caller, at: Any) -> tuple[int, ...] | None:
    t = torch.tensor(np.asarray(at, dtype=np.float64)) if target.name is None else caller.tensors(torch)[target.name]
    laid = lay_out(torch, layout, t)
    return None if laid is None else tuple(laid.stride())


def _compare(found: Findings, truth: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
             limits: Mapping[str, Callable[[np.ndarray], np.ndarray]], layout: str, target: _Target,
             strides: tuple[int, ...] | None, passed: set[str],
             oracles: Callable[[str, int], tuple[dict[str, float], dict[str, float]]] | None = None) -> None:
    for name, g in got.items():
        if name not in truth or name not in limits:
            continue
        want = truth[name].reshape(-1)
        have = g.reshape(-1)
        if have.shape != want.shape:
            found.faults.append(f"the gradient of {name!r} has shape {g.shape} when {target} is {WORDS[layout]}, "
                                f"{truth[name].shape} with contiguous tensors")
            continue
        limit = limits[name](want)
        with np.errstate(invalid="ignore"):
            gap = np.abs(have - want)
        bad = ~(gap <= limit)
        if not bad.any():
            continue
        i = int(np.argmax(np.where(bad, np.nan_to_num(gap, nan=np.inf), -1.0)))
        index = tuple(int(k) for k in np.unravel_index(i, truth[name].shape))
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = float(gap[i] / max(abs(want[i]), abs(have[i]))) if np.isfinite(gap[i]) else float("inf")
        where = index_str(name, index)
        what = (f"the gradient of {name!r} changes when {target} is {WORDS[layout]}, strides {strides}, "
                f"same values: {where} is {fmt(float(have[i]), 6)} there, {fmt(float(want[i]), 6)} with "
                f"contiguous tensors")
        if name not in passed:
            found.notes.append(f"{what} (besides its mismatches)")
            continue
        values, errors = oracles(name, i) if oracles is not None else ({}, {})
        found.mismatches.append(Mismatch(
            input=name, index=index, analytic=float(have[i]), references={**values, "contiguous": float(want[i])},
            errors=errors, relative_error=rel, tolerance=float(limit[i]), against=("contiguous",),
            difference=float(gap[i]),
        ))
        found.diagnoses[name] = Diagnosis(
            kind="layout", summary=what,
            params={"layout": layout, "tensor": "dout" if target.name is None else target.name,
                    "strides": list(strides or ())},
            evidence=f"{int(bad.sum())}/{bad.size} elements move beyond rounding "
                     f"({fmt(float(limit[i]), 2)} at {where})",
        )
