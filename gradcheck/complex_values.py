"""Complex numbers at the edge: the engine sees real float arrays only.

The convention is torch's. For a real loss ``L`` of ``z = a + ib`` the gradient is
``dL/da + i dL/db``; for a complex output ``y`` with upstream gradient ``g`` the backward returns
the gradient (same convention) of the real scalar ``Re(sum(conj(g) * y))``: the vector-Jacobian
product ``torch.autograd`` computes.

``wrap(forward, backward, inputs)`` maps a check with complex values to one without:

* a complex input ``z`` of shape ``S`` becomes its real pairs, shape ``S + (2,)`` (real part,
  imaginary part; complex64 -> float32), which the numeric oracle perturbs one part at a time;
* the forward gets ``z`` back as a complex array in its own array namespace
  (``array_api_compat``), so torch autograd and jax still differentiate it, and a complex output
  is handed on as its real pairs;
* the upstream gradient of a complex output is drawn as real pairs ``(g_re, g_im)``, so the
  engine's ``sum(dout * out)`` is ``sum(g_re y_re + g_im y_im) = Re(sum(conj(g) y))``; the
  backward gets ``g = g_re + i g_im`` and the complex inputs, and its complex gradients are
  viewed as real pairs;
* ``relabel(result, boundary)`` speaks of the caller's arrays again: ``z[1, 2].imag``, the
  complex dtype and shape.

It composes: the wrapped forward and backward take and return what the originals would for real
arrays, so another wrapping (several outputs) can stack on it. A forward that returns a tuple or
a dict is passed through untouched.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck.analytic import shape_hint
from gradcheck.errors import GradcheckError
from gradcheck.inputs import require_finite
from gradcheck.point import Fault
from gradcheck.render import index_str
from gradcheck.result import CheckResult, Disagreement, InputSummary, Kink, Mismatch

__all__ = ["DTYPES", "PARTS", "Boundary", "Wrapped", "from_pairs", "relabel", "to_pairs", "wrap"]

PARTS = ("real", "imag")  # what index 0 and 1 of a real-pair axis hold; ``z[1, 2].imag`` in reports
DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))  # their real pairs: float32, float64


@dataclass
class _Output:
    """Whether the forward's output is complex: set by the wrapped forward when it views one as
    real pairs (the point is evaluated before the backward is called), read by the wrapped
    backward and by ``relabel``."""

    complex: bool = False


@dataclass(frozen=True)
class Boundary:
    """What ``wrap`` changed: the complex inputs (name -> dtype, shape) and the output's kind."""

    dtypes: Mapping[str, np.dtype] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    output: _Output = field(default_factory=_Output)

    @property
    def output_complex(self) -> bool:
        return self.output.complex


@dataclass(frozen=True)
class Wrapped:
    """A check with real arrays only: ``forward``, ``backward`` (None stays None), ``inputs``."""

    forward: Callable[..., Any]
    backward: Callable[..., Any] | None
    inputs: Any
    boundary: Boundary


def to_pairs(z: Any) -> np.ndarray:
    """A complex numpy array of shape ``S`` as a new row-major real array of shape ``S + (2,)``:
    ``[..., 0]`` the real parts, ``[..., 1]`` the imaginary parts (complex64 -> float32)."""
    z = np.asarray(z)
    return np.stack((z.real, z.imag), axis=-1)


def from_pairs(pairs: Any) -> Any:
    """The complex array whose real pairs (last axis of size 2) are ``pairs``: a numpy array (a
    view where the pairs are contiguous, so writing to it writes to them), or an array of the
    pairs' own namespace (torch, jax: differentiable with respect to the pairs)."""
    if isinstance(pairs, np.ndarray):
        if pairs.dtype in (np.float32, np.float64) and pairs.flags.c_contiguous:
            return pairs.view(np.complex64 if pairs.dtype == np.float32 else np.complex128)[..., 0]
        return pairs[..., 0] + 1j * pairs[..., 1]
    import array_api_compat

    xp = array_api_compat.array_namespace(pairs)
    real, imag = pairs[..., 0], pairs[..., 1]
    dtype = xp.complex64 if real.dtype == xp.float32 else xp.complex128
    return xp.astype(real, dtype) + xp.astype(imag, dtype) * 1j


def _output_pairs(out: Any, output: _Output) -> Any:
    """A complex output as its real pairs, in its own namespace; anything else unchanged."""
    if isinstance(out, float | int | tuple | list | dict):
        return out
    if isinstance(out, np.ndarray | np.generic):
        if out.dtype.kind != "c":
            return out
        output.complex = True
        return to_pairs(out)
    if isinstance(out, numbers.Complex) and not isinstance(out, numbers.Real):
        output.complex = True
        return to_pairs(np.asarray(out))
    if type(out).__module__.startswith("torch") and hasattr(out, "is_complex"):
        if not out.is_complex():
            return out
        import torch

        output.complex = True
        return torch.stack((out.real, out.imag), dim=-1)
    try:
        import array_api_compat

        xp = array_api_compat.array_namespace(out)
        if not xp.isdtype(out.dtype, "complex floating"):
            return out
    except Exception:  # not an array: the engine says what is wrong with it
        return out
    output.complex = True
    return xp.stack((xp.real(out), xp.imag(out)), axis=-1)


def _complex_input(name: str, value: Any) -> np.ndarray | None:
    """A copy of ``value`` as a complex numpy array, or None when it is not complex.

    Raises:
        GradcheckError: a complex32 tensor, or a value that is not finite (naming the index).
    """
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real | np.generic):
        array = np.asarray(value, dtype=np.complex128)
    elif isinstance(value, np.ndarray | np.generic) and value.dtype.kind == "c":
        array = np.array(value, copy=True, order="C")
    elif type(value).__module__.startswith("torch") and getattr(value, "is_complex", lambda: False)():
        import torch

        if value.layout != torch.strided:
            return None  # ``inputs`` says which tensors can be checked
        if value.dtype == torch.complex32:
            raise GradcheckError(
                f"input {name!r} is a complex32 tensor; complex32 inputs are not supported: "
                f"pass {name}.to(torch.complex64)"
            )
        array = value.detach().cpu().resolve_conj().resolve_neg().numpy().copy(order="C")
    else:
        return None
    if array.dtype not in DTYPES:
        raise GradcheckError(f"input {name!r} has dtype {array.dtype}; use complex64 or complex128")
    require_finite(name, array)
    return array


def wrap(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, inputs: Any, *,
    wrt: Iterable[str] | None = None,
) -> Wrapped:
    """The check on real arrays that is the check of ``forward``/``backward`` at ``inputs``
    with complex values (see the module docstring). Inputs that are not a mapping are handed on
    as they are, for ``inputs.prepare_inputs`` to reject. The backward's gradients are held to
    being complex for the complex inputs in ``wrt`` (None: all of them); the others are not
    checked.

    Raises:
        GradcheckError: a complex input that is not finite (naming the first such index), or of a
            dtype other than complex64 and complex128.
    """
    dtypes: dict[str, np.dtype] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    real_inputs = inputs
    if isinstance(inputs, Mapping):
        real_inputs = {}
        for name, value in inputs.items():
            array = _complex_input(name, value) if isinstance(name, str) else None
            if array is None:
                real_inputs[name] = value
                continue
            dtypes[name], shapes[name] = array.dtype, array.shape
            real_inputs[name] = to_pairs(array)
    boundary = Boundary(dtypes, shapes)
    names = tuple(dtypes)
    output = boundary.output

    def real_forward(**kwargs: Any) -> Any:
        for name in names:
            kwargs[name] = from_pairs(kwargs[name])
        return _output_pairs(forward(**kwargs), output)

    chosen = None if wrt is None else set(wrt)
    checked = tuple(n for n in names if chosen is None or n in chosen)
    real_backward = None if backward is None else _wrap_backward(backward, boundary, checked)
    return Wrapped(real_forward, real_backward, real_inputs, boundary)


def _wrap_backward(backward: Callable[..., Any], boundary: Boundary, checked: tuple[str, ...]) -> Callable[..., Any]:
    names = tuple(boundary.dtypes)

    def real_backward(dout: Any, **kwargs: Any) -> Any:
        for name in names:
            # A view of the pairs: a backward that writes to its input is seen writing to them.
            kwargs[name] = from_pairs(kwargs[name])
        if boundary.output_complex:
            g = from_pairs(np.array(dout, dtype=np.float64, copy=True))
            dout = complex(g) if g.ndim == 0 else g
        returned = backward(dout, **kwargs)
        if not isinstance(returned, Mapping) or not checked:
            return returned
        return {k: (_gradient_pairs(k, v, boundary) if k in checked else v) for k, v in returned.items()}

    return real_backward


def _gradient_pairs(name: str, value: Any, boundary: Boundary) -> Any:
    """The backward's complex gradient for ``name`` as real pairs. Anything that is not an array
    is handed on for ``analytic`` to judge.

    Raises:
        Fault: the gradient is real (its imaginary part is missing) or has the wrong shape.
    """
    if value is None:
        return None
    if type(value).__module__.startswith("torch") and hasattr(value, "numpy"):
        value = value.numpy(force=True)
    if not isinstance(value, np.ndarray | np.generic | numbers.Number):
        return value
    g = np.asarray(value)
    want, dtype = boundary.shapes[name], boundary.dtypes[name]
    if g.dtype.kind in "fiub":
        raise Fault(
            f"backward returns a real gradient ({g.dtype}) for the complex input {name!r} ({dtype}): "
            f"its imaginary part is missing; return dL/d(Re {name}) + 1j * dL/d(Im {name})"
        )
    if g.dtype.kind != "c":
        return value
    if g.shape != want:
        raise Fault(
            f"backward's gradient for {name!r} has shape {g.shape}, but {name!r} has shape "
            f"{want}{shape_hint(g.shape, want)}"
        )
    return to_pairs(g)


# --- the result in the caller's terms --------------------------------------------------------


def _located(index: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
    return tuple(index[:-1]), PARTS[index[-1]]


_LABEL = re.compile(r"^(?P<name>\w+)\[(?P<index>[\d, ]*)\]$")


def _relabel_tied(label: str, boundary: Boundary) -> str:
    """``z[1, 0]`` (an element of the pairs) -> ``z[1].real``."""
    found = _LABEL.match(label)
    if found is None or found["name"] not in boundary.dtypes:
        return label
    index = tuple(int(i) for i in found["index"].split(","))
    head, part = _located(index)
    return index_str(found["name"], head, part)


def relabel(result: CheckResult, boundary: Boundary) -> CheckResult:
    """``result`` of the real-pair check in the caller's terms: complex inputs keep their dtype
    and shape, and each finding names its element and part (``index`` of the complex array,
    ``part`` "real" or "imag"). A fault of the forward at the point says which inputs were
    complex."""
    complex_names = boundary.dtypes
    if not complex_names and not boundary.output_complex:
        return result

    def element(item: Any) -> Any:
        if item.input not in complex_names:
            return item
        index, part = _located(item.index)
        changes: dict[str, Any] = {"index": index, "part": part}
        if isinstance(item, Mismatch) and item.tied:
            changes["tied"] = tuple(_relabel_tied(t, boundary) for t in item.tied)
        return replace(item, **changes)

    def summary(s: InputSummary) -> InputSummary:
        if s.name not in complex_names:
            return s
        return replace(s, shape=boundary.shapes[s.name], dtype=str(complex_names[s.name]),
                       worst_at={o: tuple(at[:-1]) for o, at in s.worst_at.items()})

    faults = result.faults
    if complex_names:
        listed = ", ".join(f"{n!r} ({d})" for n, d in complex_names.items())
        faults = tuple(
            f"{f}; it was called with the complex input(s) {listed}: does it take complex values?"
            if f.startswith("forward raised") else f for f in faults
        )
    output_shape = result.output_shape[:-1] if boundary.output_complex and result.output_shape else result.output_shape
    mismatches: tuple[Mismatch, ...] = tuple(element(m) for m in result.mismatches)
    kinks: tuple[Kink, ...] = tuple(element(k) for k in result.kinks)
    disagreements: tuple[Disagreement, ...] = tuple(element(d) for d in result.disagreements)
    return replace(result, inputs=tuple(summary(s) for s in result.inputs), mismatches=mismatches, kinks=kinks,
                   disagreements=disagreements, faults=faults, output_shape=output_shape)
