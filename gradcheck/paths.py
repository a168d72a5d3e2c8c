"""Execution paths agree: a torch callable's gradients and output under ``torch.compile`` against
eager's.

``check_gradients(fn, None, inputs, paths=("eager", "aot_eager"))`` runs ``fn`` compiled as well
as eagerly, at the check's point in float64 with the check's upstream gradient, and holds the
compiled path's gradients to eager's by the check's tolerance (``tolerance.allowed``) and its
output by ``tolerance.outputs_differ``. A compiled graph that skips a custom
``autograd.Function``'s backward, or a ``torch.library`` op whose registered autograd differs
from what eager runs, is a fault naming the path and the element. The paths
(``validation.PATHS``):

* ``"eager"``: the check itself (autograd of ``fn`` as called);
* ``"aot_eager"``: ``torch.compile(fn, backend="aot_eager")``: the graphs dynamo captures and
  AOTAutograd splits into forward and backward (where a custom backward is kept, replaced or
  dropped), run by eager kernels; no C compiler needed, about a second for a small function;
* ``"compile"``: ``torch.compile(fn)`` with inductor's generated kernels where a C++ compiler is
  found (``compile_backend``; tens of seconds for a first graph), else ``"aot_eager"``.

Where torch.compile is not available (dynamo unsupported on this Python, a backend that fails to
build) the path is skipped with a note. dynamo compiles a function again for each new shape, up
to its recompile limit, past which it runs eagerly: a loop over many shapes checks the compiled
path for the first few only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.evaluate import describe_exception
from gradcheck.render import index_str
from gradcheck.result import Tolerance
from gradcheck.tolerance import allowed, outputs_differ

__all__ = ["CXX_COMPILERS", "PathsFound", "compare_paths", "compile_backend"]

CXX_COMPILERS = ("c++", "g++", "clang++")  # inductor builds its CPU kernels with one of these


def compile_backend(path: str, which: Callable[[str], str | None] = shutil.which) -> str:
    """The ``torch.compile`` backend of ``path``: ``"aot_eager"`` for that path; for
    ``"compile"`` inductor where a C++ compiler is found (``$CXX`` or ``CXX_COMPILERS`` on the
    PATH, by ``which``), else ``"aot_eager"``."""
    if path == "aot_eager":
        return "aot_eager"
    compilers = [c for c in (os.environ.get("CXX"), *CXX_COMPILERS) if c]
    return "inductor" if any(which(c) for c in compilers) else "aot_eager"


@dataclass(frozen=True)
class PathsFound:
    """Faults (a path disagreeing with eager, or raising) and notes (paths checked or skipped)."""

    faults: tuple[str, ...]
    notes: tuple[str, ...]


def compare_paths(
    paths: tuple[str, ...], forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
    dout: np.ndarray | float, eager_output: np.ndarray, eager: Mapping[str, np.ndarray],
    tolerances: Mapping[str, Tolerance], scale: float,
) -> PathsFound:
    """Run ``forward`` along each path other than eager and compare with eager.

    Args:
        paths: validated names (``validation.paths``); "eager" is the check itself.
        forward: the torch callable under test, called with float64 tensors as keywords.
        inputs: name -> numpy array (floating inputs float64): the check's point.
        wrt: the names whose gradients are compared.
        dout: the check's upstream gradient.
        eager_output, eager: the forward's output and autograd gradients (float64) eagerly.
        tolerances: the check's tolerance per input; ``scale`` the loss' size (for the output).
    """
    faults: list[str] = []
    notes: list[str] = []
    for path in dict.fromkeys(p for p in paths if p != "eager"):
        backend = compile_backend(path)
        compiled = _compiled(forward, backend)
        if isinstance(compiled, str):
            notes.append(f"{path} path not checked: {compiled}")
            continue
        found = _run(compiled, inputs, wrt, dout)
        named = f"{path} path (torch.compile, backend {backend!r})"
        if isinstance(found, str):
            if found.startswith("BackendCompilerFailed"):
                notes.append(f"{path} path not checked: the {backend} backend failed to build ({found})")
            else:
                faults.append(f"{named}: the compiled forward or its backward raised {found}; eager runs")
            continue
        output, grads = found
        before = len(faults)
        gap = np.abs(output - eager_output) if output.shape == eager_output.shape else None
        if gap is None:
            faults.append(f"{named}: output has shape {output.shape}, eager's {eager_output.shape}")
        elif outputs_differ(float(np.max(gap, initial=0.0)), scale):
            faults.append(f"{named}: output differs from eager's at {_worst(gap, 'output', output, eager_output)}")
        for name in wrt:
            faults += _gradient_fault(named, name, grads[name], eager[name], tolerances[name])
        if len(faults) == before:
            notes.append(f"{named}: gradients and output agree with eager")
    return PathsFound(tuple(faults), tuple(notes))


def _compiled(forward: Callable[..., Any], backend: str) -> Callable[..., Any] | str:
    """``torch.compile(forward, backend=backend)``, or why compile is not available."""
    try:
        import torch
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python"
        return torch.compile(forward, backend=backend)
    except Exception as exc:  # an old torch, a missing backend
        return f"torch.compile is not available ({describe_exception(exc)})"


def _run(
    compiled: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...], dout: np.ndarray | float
) -> tuple[np.ndarray, dict[str, np.ndarray]] | str:
    """The compiled forward's output and gradients in float64, or the error it raised."""
    import torch

    from gradcheck.torch_oracle import to_torch

    tensors = {n: to_torch(a, requires_grad=n in wrt) for n, a in inputs.items()}
    try:
        out = compiled(**tensors)
        weight = torch.as_tensor(np.asarray(dout, dtype=np.float64)).to(out.dtype)
        grads = torch.autograd.grad(out, [tensors[n] for n in wrt], grad_outputs=weight, allow_unused=True)
    except Exception as exc:
        return describe_exception(exc)
    found = {n: np.zeros(inputs[n].shape) if g is None else g.detach().to(torch.float64).numpy()
             for n, g in zip(wrt, grads, strict=True)}
    return out.detach().to(torch.float64).numpy(), found


def _worst(gap: np.ndarray, name: str, got: np.ndarray, eager: np.ndarray) -> str:
    i = int(np.argmax(gap)) if gap.size else 0
    index = tuple(int(j) for j in np.unravel_index(i, gap.shape)) if gap.ndim else ()
    where = index_str(name, index)
    return f"{where}: compiled {float(got.reshape(-1)[i]):.6g}, eager {float(eager.reshape(-1)[i]):.6g}"


def _gradient_fault(named: str, name: str, got: np.ndarray, eager: np.ndarray, tol: Tolerance) -> list[str]:
    a, e = got.reshape(-1), np.asarray(eager, dtype=np.float64).reshape(-1)
    scale = float(max(np.max(np.abs(a), initial=0.0), np.max(np.abs(e), initial=0.0)))
    limit = allowed(a, e, 0.0, tol, scale)
    beyond = ~(np.abs(a - e) <= limit)
    if not beyond.any():
        return []
    share = np.where(beyond, np.abs(a - e) / np.maximum(limit, 1e-300), 0.0)
    share = np.where(np.isnan(share), np.inf, share)
    i = int(np.argmax(share))
    index = tuple(int(j) for j in np.unravel_index(i, eager.shape)) if eager.ndim else ()
    where = index_str(name, index)
    return [f"{named}: gradient of {name!r} differs from eager's at {int(beyond.sum())}/{a.size} elements; worst "
            f"{where}: compiled {a[i]:.6g}, eager {e[i]:.6g}, off by {abs(a[i] - e[i]):.3g}, allowed {limit[i]:.3g} "
            "(a compiled graph that skips or replaces the custom backward?)"]
