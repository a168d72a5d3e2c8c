"""The autograd oracle: run the forward on float64 torch tensors and ask torch.autograd.

Given ``dtypes`` it runs the same autograd in the caller's dtypes instead (float32, float16,
bfloat16): the analytic gradient of ``backward=None`` in the caller's precision, or the trusted
same-dtype computation a low-precision backward is allowed ``k`` times the error of.

It applies to forwards written against the array API (``array_api_compat.array_namespace``) and
to torch callables. A forward that only works on numpy arrays makes this oracle unavailable, and
the result says why; the numeric oracle still runs. torch is imported only here, and only when
this oracle runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck.estimates import Estimate, Unavailable
from gradcheck.evaluate import as_float_array, describe_exception

__all__ = ["TORCH", "TorchOracle", "forward_mode_jvp", "to_torch"]


class TorchOracle:
    """torch.autograd on float64 tensors (see ``gradcheck.oracles``)."""

    name = "torch"
    arrays = "torch tensors"

    def gradients(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
        dout: np.ndarray | float, *, dtypes: Mapping[str, str] | None = None,
    ) -> Estimate | Unavailable:
        """Gradients of ``sum(dout * forward(**inputs))`` by torch.autograd, in float64.

        Args:
            forward: the forward under test, called with torch tensors.
            inputs: name -> numpy array (floating inputs already float64).
            wrt: names to differentiate.
            dout: upstream gradient (a number, or an array of the output's shape).
            dtypes: name -> torch dtype name ("float32", "bfloat16") to run the floating inputs
                in instead of float64 (the gradients are returned as float64 copies).
        Returns:
            the estimate, or why there is none; never raises for a forward that cannot run on
            torch.
        """
        try:
            import torch
        except ImportError:
            return Unavailable(self.name, "torch is not installed")
        threads = torch.get_num_threads()
        # One thread: the oracle runs once per check, and torch's idle worker threads would
        # otherwise spin for milliseconds after it, stalling the numpy evaluations that follow.
        torch.set_num_threads(1)
        try:
            return _autograd(torch, forward, inputs, wrt, dout, dtypes or {})
        finally:
            torch.set_num_threads(threads)

    def jvp(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray],
    ) -> Estimate | Unavailable:
        """The Jacobian-vector product of ``forward`` at ``inputs`` along ``tangents`` (name ->
        float64 array shaped like that input; the other inputs are held), in float64, by reverse
        mode twice: ``J u = d/dv <J^T v, u>``. The estimate's ``gradients`` hold it under the key
        ``"jvp"``, with the output; never raises for a forward that cannot run on torch.

        Reverse mode twice, not torch's forward-mode AD: that is what ``jvp=True`` checks, and
        its first call in a process costs seconds (it loads torch's compiler stack)."""
        try:
            import torch
        except ImportError:
            return Unavailable(self.name, "torch is not installed")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as for gradients
        try:
            return _reverse_twice(torch, forward, inputs, tangents)
        finally:
            torch.set_num_threads(threads)


TORCH = TorchOracle()


def forward_mode_jvp(
    torch: Any, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray],
) -> Estimate | Unavailable:
    """torch's forward-mode AD of the forward: the dual tensors of ``torch.autograd.forward_ad``
    (what ``torch.func.jvp`` runs; they also carry a custom ``autograd.Function`` of the older
    style, ``forward(ctx, ...)``, through its ``jvp`` staticmethod). A forward whose output
    carries no tangent left torch (a numpy-only forward wrapped back into a tensor)."""
    import torch.autograd.forward_ad as fwad

    tensors = {n: to_torch(a) for n, a in inputs.items()}
    try:
        with fwad.dual_level():
            for n, t in tangents.items():
                tensors[n] = fwad.make_dual(tensors[n], torch.as_tensor(np.asarray(t, dtype=np.float64)))
            dual = forward(**tensors)
            if not isinstance(dual, torch.Tensor):
                return Unavailable("torch", f"forward returned {type(dual).__name__} on torch tensors, not a tensor")
            unpacked = fwad.unpack_dual(dual)
            out, tangent = unpacked.primal.detach(), unpacked.tangent
    except Exception as exc:  # the forward is numpy-only, fails on torch, or has no forward-mode rule
        return Unavailable("torch", _not_on_torch(exc) if not isinstance(exc, NotImplementedError)
                           else f"torch forward-mode AD cannot differentiate the forward ({type(exc).__name__})",
                           describe_exception(exc))
    if tangent is None:
        return Unavailable("torch", "forward's output on torch tensors carries no tangent (it left torch)")
    value = as_float_array(tangent.detach().to(torch.float64))
    return Estimate("torch", {"jvp": value}, as_float_array(out.to(torch.float64)))


def _reverse_twice(
    torch: Any, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray],
) -> Estimate | Unavailable:
    """``J u`` as the gradient, with respect to ``v``, of ``<J^T v, u>`` (``TorchOracle.jvp``)."""
    names = tuple(tangents)
    tensors = {n: to_torch(a, requires_grad=n in tangents) for n, a in inputs.items()}
    out = _graph(torch, forward, tensors)
    if isinstance(out, Unavailable):
        return out
    try:
        with torch.enable_grad():
            out64 = out.to(torch.float64)
            v = torch.zeros_like(out64, requires_grad=True)
            grads = torch.autograd.grad((out64 * v).sum(), [tensors[n] for n in names], create_graph=True,
                                        allow_unused=True)
            inner = torch.zeros((), dtype=torch.float64)
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    inner = inner + (g * torch.as_tensor(np.asarray(tangents[n], dtype=np.float64))).sum()
            tangent = torch.autograd.grad(inner, v, allow_unused=True)[0] if inner.requires_grad else None
    except Exception as exc:  # a backward that cannot be differentiated again
        return Unavailable("torch", f"torch.autograd could not differentiate the forward twice ({type(exc).__name__})",
                           describe_exception(exc))
    value = np.zeros(tuple(out.shape)) if tangent is None else as_float_array(tangent.detach())
    return Estimate("torch", {"jvp": value}, as_float_array(out64.detach()))


def to_torch(array: np.ndarray, *, requires_grad: bool = False, dtype: str = "float64") -> Any:
    """A numpy array as a torch tensor: floats as leaves of ``dtype`` (a torch dtype's name,
    float64 unless given), integers as int64."""
    import torch

    if array.dtype.kind == "f":
        t = torch.tensor(np.asarray(array, dtype=np.float64), dtype=getattr(torch, dtype))
        return t.requires_grad_(requires_grad)
    return torch.tensor(np.asarray(array, dtype=np.int64))


def _autograd(
    torch: Any, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
    dout: np.ndarray | float, dtypes: Mapping[str, str],
) -> Estimate | Unavailable:
    tensors = {n: to_torch(a, requires_grad=n in wrt, dtype=dtypes.get(n, "float64")) for n, a in inputs.items()}
    out = _graph(torch, forward, tensors)
    if isinstance(out, Unavailable):
        return out
    out64 = out.to(torch.float64) if out.dtype != torch.float64 else out
    weight = torch.as_tensor(np.asarray(dout, dtype=np.float64), dtype=torch.float64)
    try:
        total = (out64 * weight).sum()
        grads = torch.autograd.grad(total, [tensors[n] for n in wrt], allow_unused=True)
    except Exception as exc:  # autograd could not differentiate the forward
        return Unavailable("torch", f"torch.autograd could not differentiate the forward ({type(exc).__name__})",
                           describe_exception(exc))
    result = {}
    for name, g in zip(wrt, grads, strict=True):
        result[name] = (
            # force=True: autograd may hand back a ZeroTensor (an all-zero gradient, as for
            # torch.sgn on real input), which has no memory of its own to view.
            np.zeros(inputs[name].shape) if g is None else g.detach().to(torch.float64).numpy(force=True)
        )
    return Estimate("torch", result, as_float_array(out64))


def _graph(torch: Any, forward: Callable[..., Any], tensors: Mapping[str, Any]) -> Any:
    """The forward's output on ``tensors`` with its autograd graph, or why there is none."""
    try:
        with torch.enable_grad():
            out = forward(**tensors)
    except Exception as exc:  # the forward is numpy-only, or failed on torch
        return Unavailable("torch", _not_on_torch(exc), describe_exception(exc))
    if not isinstance(out, torch.Tensor):
        return Unavailable("torch", f"forward returned {type(out).__name__} on torch tensors, not a tensor")
    if not out.requires_grad:
        return Unavailable("torch", "forward's output on torch tensors has no autograd graph (it left torch)")
    return out


def _not_on_torch(exc: BaseException) -> str:
    """One line saying why a forward did not run on torch tensors (the full error is kept apart)."""
    text = str(exc)
    if "numpy" in text.lower() or isinstance(exc, TypeError):
        return "forward is numpy-only; write it against the array API to add the torch oracle"
    return (f"forward fails on torch tensors ({type(exc).__name__}); write it against the array API "
            "to add the torch oracle")
