"""A reference implementation as an oracle, and the low-precision rule kernel authors check by hand.

``check_gradients(fn, None, inputs, reference=ref_fn)``: ``ref_fn`` is a plain differentiable torch
function of the same inputs, the slow and obviously right version of ``fn``. It serves twice:

1. In float64, as an exact oracle named ``"reference"`` (``ReferenceOracle``): torch autograd of
   ``ref_fn`` at the check's point, compared with the analytic gradient as torch's is. ``fn``'s
   float64 output must be ``ref_fn``'s up to rounding (``tolerance.outputs_differ``), else the
   check reports a fault and does not use the reference's gradients (they belong to another
   function).
2. In a low dtype (``low_precision``): where floating inputs are float32, float16 or bfloat16,
   ``fn`` and ``ref_fn`` run on tensors of the caller's dtypes (the caller's strides kept), and
   ``fn``'s gradients and output may be off the float64 truth (``ref_fn`` in float64 at the same
   rounded inputs and upstream gradient) by ``factor`` times ``ref_fn``'s own error in that dtype,
   floored at a few roundoff units of the magnitudes summed into each element (from ``ref_fn``'s
   float64 Jacobian: ``tolerance.low_precision_allowance``): the
   "at most twice the reference's error in the same dtype" test of FlashAttention's suite, done
   per element with the budget in the report.

Misuse of the reference (failing on the inputs, returning no tensor, a tensor with no autograd
graph or another shape than ``fn``'s) raises ``GradcheckError``; what the comparison finds in
``fn`` is a ``Finding`` per gradient and output, which the check reports as faults (beyond the
budget) or a note (within it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.estimates import Estimate
from gradcheck.evaluate import as_float_array, describe_exception
from gradcheck.inputs import PreparedInputs
from gradcheck.render import index_str
from gradcheck.tolerance import LOW_PRECISION_FACTOR, dtype_eps, low_precision_allowance, outputs_differ

__all__ = [
    "ESTIMATE_DRAWS",
    "JACOBIAN_LIMIT",
    "NAME",
    "OUTPUT",
    "Finding",
    "LowPrecision",
    "ReferenceOracle",
    "low_dtypes",
    "low_precision",
    "output_fault",
]

NAME = "reference"
OUTPUT = "output"  # a finding's ``what`` for the forward's output


class _Failed(Exception):
    """A callable could not be differentiated on the tensors given: the message says why."""


def _label(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _differentiate(
    torch: Any, fn: Callable[..., Any], tensors: Mapping[str, Any], wrt: tuple[str, ...], dout: Any,
    shape: tuple[int, ...], words: str,
) -> tuple[Any, dict[str, Any]]:
    """``fn(**tensors)`` and the gradients of ``sum(dout * output)`` w.r.t. ``wrt`` (None where
    unused). ``dout`` is cast to the output's dtype. Raises ``_Failed`` naming what went wrong."""
    try:
        with torch.enable_grad():
            out = fn(**tensors)
    except Exception as exc:
        raise _Failed(f"raised on {words} torch tensors of the inputs: {describe_exception(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise _Failed(f"returned {type(out).__name__} on {words} torch tensors, not one tensor")
    if tuple(out.shape) != tuple(shape):
        raise _Failed(f"returns shape {tuple(out.shape)} on {words} torch tensors, but forward returns shape "
                      f"{tuple(shape)}")
    if not out.requires_grad:
        raise _Failed(f"returned a tensor with no autograd graph on {words} torch tensors (requires_grad=False): "
                      "it must be a differentiable torch function of the inputs (no .detach(), .numpy() or "
                      "torch.no_grad())")
    try:
        grads = torch.autograd.grad(out, [tensors[n] for n in wrt], grad_outputs=dout.to(out.dtype),
                                    allow_unused=True)
    except Exception as exc:
        raise _Failed(f"could not be differentiated on {words} torch tensors: {describe_exception(exc)}") from None
    return out, dict(zip(wrt, grads, strict=True))


def _as_float64(torch: Any, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A gradient or output tensor (None: zeros of ``shape``) as float64 numpy."""
    if value is None:
        return np.zeros(shape)
    return value.detach().to(torch.float64).numpy(force=True).reshape(shape)


@dataclass(frozen=True)
class ReferenceOracle:
    """Autograd of a reference implementation in float64: an exact oracle (``oracles.Oracle``)
    whose ``gradients`` ignore the forward handed to them and differentiate ``fn``."""

    fn: Callable[..., Any]
    label: str = ""  # how messages name the reference (default: its ``__name__``)
    name: ClassVar[str] = NAME
    arrays: ClassVar[str] = "float64 torch tensors"

    def gradients(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
        dout: np.ndarray | float, shape: tuple[int, ...] | None = None,
    ) -> Estimate:
        """Gradients of ``sum(dout * fn(**inputs))`` by torch autograd in float64; ``shape`` is
        the forward's output shape (None: ``dout``'s).

        Raises:
            GradcheckError: torch is not installed, or the reference fails on the inputs,
                returns no tensor, a tensor with no autograd graph or of another shape.
        """
        try:
            import torch
        except ImportError:
            raise GradcheckError("reference= runs a torch function, but torch is not installed") from None
        from gradcheck.torch_oracle import to_torch

        expected = np.shape(dout) if shape is None else shape
        tensors = {n: to_torch(a, requires_grad=n in wrt) for n, a in inputs.items()}
        weight = torch.as_tensor(np.asarray(dout, dtype=np.float64))
        try:
            out, grads = _differentiate(torch, self.fn, tensors, wrt, weight, expected, "float64")
        except _Failed as failed:
            raise GradcheckError(f"reference {self.label or _label(self.fn)} {failed}") from None
        found = {n: _as_float64(torch, grads[n], inputs[n].shape) for n in wrt}
        return Estimate(self.name, found, as_float_array(out.detach()).astype(np.float64))


def output_fault(forward_output: np.ndarray, reference_output: np.ndarray, scale: float) -> str | None:
    """The fault when the forward's float64 output is not the reference's up to rounding
    (``tolerance.outputs_differ`` at the loss' ``scale``), else None."""
    gap = np.abs(np.asarray(forward_output, dtype=np.float64) - reference_output)
    largest = float(np.max(gap, initial=0.0))
    if not outputs_differ(largest, scale):
        return None
    flat = int(np.argmax(gap)) if gap.ndim else 0
    index = tuple(int(i) for i in np.unravel_index(flat, gap.shape)) if gap.ndim else ()
    where = index_str("output", index)
    return (f"forward's output differs from the reference's in float64 at {where}: forward "
            f"{float(np.asarray(forward_output).reshape(-1)[flat]):.6g}, reference "
            f"{float(reference_output.reshape(-1)[flat]):.6g} (largest difference {largest:.3g}); "
            "the reference's gradients are not used")


# -- the low-precision comparison ------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One gradient (or the output) of the forward in a low dtype, held to the reference's budget.

    Attributes:
        what: the input's name, or ``OUTPUT``.
        dtype: the forward's dtype there, e.g. ``"bfloat16"``.
        failed: elements whose error exceeds their allowance (NaN counts as beyond it).
        size: elements compared.
        index: the element with the largest error relative to its allowance.
        value: the forward's value there; ``truth`` the reference's in float64, ``reference``
            the reference's in the low dtype.
        error, reference_error: ``|value - truth|`` and ``|reference - truth|`` there.
        allowed: the allowance there (``tolerance.low_precision_allowance``).
        factor: the factor applied to the reference's error.
    """

    what: str
    dtype: str
    failed: int
    size: int
    index: tuple[int, ...]
    value: float
    truth: float
    reference: float
    error: float
    reference_error: float
    allowed: float
    factor: float

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def label(self) -> str:
        return OUTPUT if self.what == OUTPUT else f"gradient of {self.what!r}"

    def element(self) -> str:
        return index_str(self.what, self.index)

    def fault(self) -> str:
        """The failure in one line: the element, the measured errors and the budget."""
        return (f"{self.label} in {self.dtype}: {self.failed}/{self.size} elements beyond {self.factor:g} x the "
                f"reference's error in {self.dtype}; worst {self.element()}: forward {self.value:.6g}, reference "
                f"{self.reference:.6g} in {self.dtype} and {self.truth:.6g} in float64; the forward's error "
                f"{self.error:.3g}, the reference's {self.reference_error:.3g}, allowed {self.allowed:.3g}")


@dataclass(frozen=True)
class LowPrecision:
    """What the low-precision comparison found: a finding per checked gradient and the output,
    and the faults (findings beyond the budget, or the forward failing in the low dtype)."""

    findings: tuple[Finding, ...]
    faults: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def note(self) -> str | None:
        """One line for a comparison within the budget, None if nothing was compared."""
        if self.faults or not self.findings:
            return None
        worst = max(self.findings, key=lambda f: _ratio(f.error, f.allowed))
        dtypes = sorted({f.dtype for f in self.findings})
        return (f"reference in {', '.join(dtypes)}: the forward's gradients and output are within "
                f"{worst.factor:g} x the reference's own error (largest share of the budget used "
                f"{_ratio(worst.error, worst.allowed):.2f}, at {worst.element()})")


def _ratio(error: float, allowed: float) -> float:
    return 0.0 if error == 0 else (error / allowed if allowed > 0 else float("inf"))


_LOW = {"float32", "float16", "bfloat16"}


def low_dtypes(prepared: PreparedInputs) -> dict[str, str]:
    """Floating inputs given in a low dtype: name -> ``"float32"``, ``"float16"`` or
    ``"bfloat16"``."""
    return {n: prepared.native(n) for n in prepared.floating if prepared.native(n) in _LOW}


def _copy(torch: Any, value: Any, fallback: np.ndarray) -> Any:
    """A private tensor copy of a caller's input in its own dtype and, where the memory allows,
    with its strides (a transposed or sliced input stays so); numbers and numpy arrays from the
    prepared copy."""
    if not isinstance(value, torch.Tensor):
        return torch.from_numpy(np.array(fallback, copy=True))
    value = value.detach().cpu()
    try:
        return torch.empty_strided(value.size(), value.stride(), dtype=value.dtype).copy_(value)
    except RuntimeError:  # overlapping memory (a stride-0 expand): a dense copy
        return value.clone(memory_format=torch.contiguous_format)


def low_precision(
    forward: Callable[..., Any], reference: Callable[..., Any], caller_inputs: Mapping[str, Any],
    prepared: PreparedInputs, wrt: tuple[str, ...], dout: np.ndarray | float, shape: tuple[int, ...],
    *, factor: float | None = None, label: str = "",
) -> LowPrecision | None:
    """Hold ``forward``'s gradients and output in the caller's low dtypes to the reference's budget.

    ``forward`` and ``reference`` each run (with autograd) on private copies of the inputs in the
    caller's dtypes; the truth is ``reference`` in float64 at the same values. All three use the
    upstream gradient ``dout`` rounded to the forward's output dtype. ``shape`` is the forward's
    output shape at the check's point; ``label`` how messages name the reference (default: its
    ``__name__``). Returns None when no floating input has a low dtype.

    Raises:
        GradcheckError: the reference fails on the low-dtype or float64 tensors (as
            ``ReferenceOracle`` says). The forward failing in the low dtype is a fault.
    """
    if not low_dtypes(prepared):
        return None
    import torch

    def tensors(dtype: Any = None) -> dict[str, Any]:
        made = {}
        for name in prepared.values:
            t = _copy(torch, caller_inputs.get(name), prepared.values[name])
            if dtype is not None and t.is_floating_point():
                t = t.detach().to(dtype)
            made[name] = t.requires_grad_(name in wrt)
        return made

    k = LOW_PRECISION_FACTOR if factor is None else factor
    weight = torch.as_tensor(np.asarray(dout, dtype=np.float64))
    try:
        fn_out, fn_grads = _differentiate(torch, forward, tensors(), wrt, weight, shape, "low-dtype")
    except _Failed as failed:
        return LowPrecision((), (f"forward {failed}",))
    weight = weight.to(fn_out.dtype)  # the upstream gradient as the forward's dtype holds it
    try:
        ref_out, ref_grads = _differentiate(torch, reference, tensors(), wrt, weight, shape, "low-dtype")
        true_out, true_grads = _differentiate(torch, reference, tensors(torch.float64), wrt,
                                              weight.to(torch.float64), shape, "float64")
    except _Failed as failed:
        raise GradcheckError(f"reference {label or _label(reference)} {failed}") from None
    sizes = _magnitudes(torch, reference, tensors(torch.float64), prepared.floating, wrt, weight.to(torch.float64),
                        shape)
    findings = [
        _finding(name, torch, fn_grads[name], ref_grads[name], true_grads[name], prepared.values[name].shape, k,
                 sizes.get(name))
        for name in wrt
    ]
    findings.append(_finding(OUTPUT, torch, fn_out, ref_out, true_out, shape, k, sizes.get(OUTPUT)))
    notes = () if len(sizes) == len(wrt) + 1 else (
        "reference: the Jacobian is too large to sum the magnitudes behind each element exactly: the ulps floor "
        "uses an estimate for the gradients (random-sign upstream gradients) and |output| for the output",)
    return LowPrecision(tuple(findings), tuple(f.fault() for f in findings if not f.ok), notes)


# The summed magnitudes come from the reference's float64 Jacobian (one backward pass per output
# element, batched with vmap) while it holds at most this many elements (32 MB); beyond, from
# ESTIMATE_DRAWS backward passes with random-sign upstream gradients, whose root-mean-square is
# the magnitudes' Euclidean norm: at most their sum, and closer to it than the float64 value, in
# which the terms may cancel.
JACOBIAN_LIMIT = 2**22
ESTIMATE_DRAWS = 8


def _magnitudes(
    torch: Any, reference: Callable[..., Any], tensors: dict[str, Any], floating: tuple[str, ...],
    wrt: tuple[str, ...], dout: Any, shape: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """The magnitudes summed into each element, by the reference in float64: for the gradient of
    each name in ``wrt``, ``sum_i |dout_i J_ij|``; for the output (``OUTPUT``), ``sum_j |J_ij x_j|``
    over every floating input. Estimated gradients only (no output entry) where the Jacobian
    exceeds ``JACOBIAN_LIMIT``."""
    tensors = {n: t.detach().requires_grad_(n in floating) for n, t in tensors.items()}
    with torch.enable_grad():
        out = reference(**tensors).reshape(-1)
    n_out, leaves = out.numel(), [tensors[n] for n in floating]
    weight = dout.reshape(-1).abs() if dout.dim() else dout.abs().expand(n_out)
    if n_out * sum(t.numel() for t in leaves) <= JACOBIAN_LIMIT:
        try:
            rows = torch.autograd.grad(out, leaves, grad_outputs=torch.eye(n_out, dtype=out.dtype),
                                       is_grads_batched=True, allow_unused=True)
        except Exception:  # a reference vmap cannot batch: one backward pass per output element
            rows = _jacobian_rows(torch, out, leaves)
        jac = {n: (torch.zeros(n_out, *t.shape, dtype=out.dtype) if r is None else r).reshape(n_out, -1).abs()
               for n, t, r in zip(floating, leaves, rows, strict=True)}
        sizes = {n: (weight[:, None] * jac[n]).sum(0).numpy() for n in wrt}
        total = sum((jac[n] * tensors[n].detach().reshape(1, -1).abs()).sum(1) for n in floating)
        sizes[OUTPUT] = np.asarray(total.detach().numpy()) if n_out else np.zeros(0)
        return sizes
    generator = torch.Generator().manual_seed(0)
    squares = {n: torch.zeros(tensors[n].shape, dtype=out.dtype) for n in wrt}
    for _ in range(ESTIMATE_DRAWS):
        signs = torch.randint(0, 2, (n_out,), generator=generator).to(out.dtype) * 2 - 1
        grads = torch.autograd.grad(out, [tensors[n] for n in wrt], grad_outputs=signs * weight, retain_graph=True,
                                    allow_unused=True)
        for n, g in zip(wrt, grads, strict=True):
            if g is not None:
                squares[n] += g.detach() ** 2
    return {n: (squares[n] / ESTIMATE_DRAWS).sqrt().reshape(-1).numpy() for n in wrt}


def _jacobian_rows(torch: Any, out: Any, leaves: list[Any]) -> list[Any]:
    rows = [torch.autograd.grad(out[i], leaves, retain_graph=True, allow_unused=True) for i in range(out.numel())]
    return [None if all(r[k] is None for r in rows) else
            torch.stack([torch.zeros_like(leaf) if r[k] is None else r[k] for r in rows])
            for k, leaf in enumerate(leaves)]


def _finding(
    what: str, torch: Any, value: Any, reference: Any, truth: Any, shape: tuple[int, ...], factor: float,
    magnitude: np.ndarray | None = None,
) -> Finding:
    """The forward's ``value`` against the float64 ``truth``, allowed ``factor`` times the
    low-dtype ``reference``'s error (tensors, None for an unused input's gradient), floored at
    ulps of ``magnitude`` (the magnitudes summed into each element; None: ``|truth|``)."""
    dtype = value.dtype if value is not None else (reference.dtype if reference is not None else torch.float64)
    got = _as_float64(torch, value, shape).reshape(-1)
    ref = _as_float64(torch, reference, shape).reshape(-1)
    true = _as_float64(torch, truth, shape).reshape(-1)
    error, reference_error = np.abs(got - true), np.abs(ref - true)
    eps = dtype_eps(str(dtype).removeprefix("torch."))
    sizes = np.abs(true) if magnitude is None else np.maximum(np.abs(true), magnitude.reshape(-1))
    allowance = low_precision_allowance(reference_error, sizes, eps=eps, factor=factor)
    beyond = ~(error <= allowance)  # NaN is beyond
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(error == 0, 0.0, error / allowance)
    share = np.where(np.isnan(share), np.inf, share)
    i = int(np.argmax(share)) if share.size else 0
    index = tuple(int(j) for j in np.unravel_index(i, shape)) if shape and share.size else ()
    pick = (lambda a: float(a[i])) if share.size else (lambda a: 0.0)
    return Finding(what, str(dtype).removeprefix("torch."), int(beyond.sum()), int(share.size), index,
                   pick(got), pick(true), pick(ref), pick(error), pick(reference_error), pick(allowance), factor)
