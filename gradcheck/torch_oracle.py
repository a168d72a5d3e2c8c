"""The autograd oracle: run the forward on float64 torch tensors and ask torch.autograd.

It applies to forwards written against the array API (``array_api_compat.array_namespace``) and
to torch callables. A forward that only works on numpy arrays makes this oracle unavailable, and
the result says why; the numeric oracle still runs. torch is imported only here, and only when
this oracle runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.evaluate import as_float_array, describe_exception

__all__ = ["TorchGradients", "torch_gradients"]


@dataclass(frozen=True)
class TorchGradients:
    """What the autograd oracle found.

    Attributes:
        gradients: name -> float64 numpy gradient (input's shape), or None if unavailable.
        reason: why the oracle is unavailable ("" when it ran), one line in our words.
        output: the forward's output on torch, as float64 numpy (None if unavailable).
    """

    gradients: dict[str, np.ndarray] | None
    reason: str = ""
    output: np.ndarray | None = None
    error: str = ""  # the original exception behind ``reason``, in full, when there was one

    @property
    def available(self) -> bool:
        return self.gradients is not None


def to_torch(array: np.ndarray, *, requires_grad: bool = False) -> Any:
    """A numpy array as a torch tensor: floats as float64 leaves, integers as int64."""
    import torch

    if array.dtype.kind == "f":
        t = torch.tensor(np.asarray(array, dtype=np.float64), dtype=torch.float64)
        return t.requires_grad_(requires_grad)
    return torch.tensor(np.asarray(array, dtype=np.int64))


def torch_gradients(
    forward: Callable[..., Any],
    inputs: dict[str, np.ndarray],
    wrt: tuple[str, ...],
    dout: np.ndarray | float,
) -> TorchGradients:
    """Gradients of ``sum(dout * forward(**inputs))`` by torch.autograd, in float64.

    Args:
        forward: the forward under test, called with torch tensors.
        inputs: name -> numpy array (floating inputs already float64).
        wrt: names to differentiate.
        dout: upstream gradient (a number, or an array of the output's shape).
    Returns:
        TorchGradients; never raises for a forward that cannot run on torch.
    """
    try:
        import torch
    except ImportError:
        return TorchGradients(None, "torch is not installed")
    threads = torch.get_num_threads()
    # One thread: the oracle runs once per check, and torch's idle worker threads would
    # otherwise spin for milliseconds after it, stalling the numpy evaluations that follow.
    torch.set_num_threads(1)
    try:
        return _autograd(torch, forward, inputs, wrt, dout)
    finally:
        torch.set_num_threads(threads)


def _autograd(
    torch: Any, forward: Callable[..., Any], inputs: dict[str, np.ndarray], wrt: tuple[str, ...],
    dout: np.ndarray | float,
) -> TorchGradients:
    tensors = {n: to_torch(a, requires_grad=n in wrt) for n, a in inputs.items()}
    try:
        with torch.enable_grad():
            out = forward(**tensors)
    except Exception as exc:  # the forward is numpy-only, or failed on torch
        return TorchGradients(None, _not_on_torch(exc), error=describe_exception(exc))
    if not isinstance(out, torch.Tensor):
        return TorchGradients(
            None, f"forward returned {type(out).__name__} on torch tensors, not a tensor"
        )
    if not out.requires_grad:
        return TorchGradients(
            None, "forward's output on torch tensors has no autograd graph (it left torch)"
        )
    out64 = out.to(torch.float64) if out.dtype != torch.float64 else out
    weight = torch.as_tensor(np.asarray(dout, dtype=np.float64), dtype=torch.float64)
    try:
        total = (out64 * weight).sum()
        grads = torch.autograd.grad(total, [tensors[n] for n in wrt], allow_unused=True)
    except Exception as exc:  # autograd could not differentiate the forward
        return TorchGradients(None, f"torch.autograd could not differentiate the forward ({type(exc).__name__})",
                              error=describe_exception(exc))
    result = {}
    for name, g in zip(wrt, grads):
        result[name] = (
            # force=True: autograd may hand back a ZeroTensor (an all-zero gradient, as for
            # torch.sgn on real input), which has no memory of its own to view.
            np.zeros(inputs[name].shape) if g is None else g.detach().numpy(force=True).astype(np.float64)
        )
    return TorchGradients(result, "", as_float_array(out64))


def _not_on_torch(exc: BaseException) -> str:
    """One line saying why a forward did not run on torch tensors (the full error is kept apart)."""
    text = str(exc)
    if "numpy" in text.lower() or isinstance(exc, TypeError):
        return "forward is numpy-only; write it against the array API to add the torch oracle"
    return (f"forward fails on torch tensors ({type(exc).__name__}); write it against the array API "
            "to add the torch oracle")
