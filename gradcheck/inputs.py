"""Validate and copy the caller's inputs once, where they enter the harness.

Everything downstream works on private numpy copies, so nothing the caller passed is ever
mutated: ``values`` in the caller's dtypes (what the forward at the point and the backward get)
and ``widened`` float64 copies of the same, already rounded, values (what the numeric oracle
and the float64 references get). A bfloat16 tensor, which numpy cannot hold, is kept as
float32 values (each exactly a bfloat16) and remembered as bfloat16 in ``dtype_names``.
Numbers become 0-d arrays; torch tensors are detached and copied. Every
copy is row-major (C-contiguous) whatever the caller's layout (Fortran order, a transpose, a
slice): the numeric oracle perturbs elements through flat views of these copies.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck import validation
from gradcheck.errors import GradcheckError

__all__ = ["PreparedInputs", "prepare_inputs", "require_finite", "require_signature", "resolve_wrt"]


@dataclass(frozen=True)
class PreparedInputs:
    """Private copies of the inputs.

    Attributes:
        values: name -> numpy array (caller's dtype, a copy); the backward sees these.
        widened: name -> numpy array where floating inputs are widened to float64; the
            numeric oracle perturbs these.
        floating: names of floating inputs, in the caller's order.
        dtypes: name -> the dtype of ``values`` (numpy; float32 for a bfloat16 tensor).
        dtype_names: name -> the caller's dtype by name ("float32", "bfloat16", "int64").
        tensors: names of the inputs the caller gave as torch tensors.
    """

    values: dict[str, np.ndarray]
    widened: dict[str, np.ndarray]
    floating: tuple[str, ...]
    dtypes: dict[str, np.dtype]
    dtype_names: dict[str, str] = field(default_factory=dict)
    tensors: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name, dtype in self.dtypes.items():
            self.dtype_names.setdefault(name, dtype.name)

    def native(self, name: str) -> str:
        """The caller's dtype of input ``name``, by name."""
        return self.dtype_names[name]


def _to_array(name: str, value: Any) -> np.ndarray:
    """Copy one input to a numpy array."""
    if isinstance(value, bool | np.bool_):
        raise GradcheckError(
            f"input {name!r} is a bool ({value!r}); pass a float to check it or an int to hold it"
        )
    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):  # a numpy scalar keeps its dtype
        return np.asarray(value, dtype=np.float64 if not isinstance(value, numbers.Integral) else np.int64)
    module = type(value).__module__
    if module.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                raise GradcheckError(
                    f"input {name!r} is a {value.layout} tensor; only dense (strided) tensors "
                    f"can be checked: pass {name}.to_dense()"
                )
            # Row-major, whatever the caller's strides: perturbations go through flat views.
            dense = value.detach().cpu().clone(memory_format=torch.contiguous_format)
            if dense.dtype == torch.bfloat16:  # numpy has no bfloat16: float32 holds it exactly
                dense = dense.to(torch.float32)
            return dense.resolve_conj().resolve_neg().numpy()
    if isinstance(value, np.ndarray | np.generic):
        return np.array(value, copy=True, order="C")
    raise GradcheckError(
        f"input {name!r} must be a number or an array, got {type(value).__name__}: {value!r:.80}"
    )


def prepare_inputs(inputs: Any) -> PreparedInputs:
    """Validate ``inputs`` (a mapping name -> number or array) and copy it.

    Raises:
        GradcheckError: ``inputs`` is not a mapping, is empty, has a non-string or
            non-identifier name, a value that is neither a number nor an array, a complex
            (``complex_values`` maps those to real pairs first), boolean or object array, or a
            floating value that is not finite.
    """
    if not isinstance(inputs, Mapping):
        raise GradcheckError(
            f"inputs must be a mapping of name -> array, got {type(inputs).__name__}: {inputs!r:.80}"
        )
    if not inputs:
        raise GradcheckError("inputs is empty: there is nothing to check")
    values: dict[str, np.ndarray] = {}
    widened: dict[str, np.ndarray] = {}
    floating: list[str] = []
    dtypes: dict[str, np.dtype] = {}
    names: dict[str, str] = {}
    tensors: set[str] = set()
    for name, value in inputs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise GradcheckError(f"input names must be identifiers (they become keyword arguments), got {name!r}")
        array = _to_array(name, value)
        kind = array.dtype.kind
        if kind == "f":
            require_finite(name, array)
            floating.append(name)
            widened[name] = array.astype(np.float64, copy=True)
        elif kind in "iu":
            widened[name] = array
        elif kind == "b":
            raise GradcheckError(
                f"input {name!r} is a boolean array; pass floats to check it or ints to hold it"
            )
        else:
            raise GradcheckError(
                f"input {name!r} has dtype {array.dtype}, which cannot be checked "
                "(use a real floating or an integer dtype)"
            )
        values[name] = array
        dtypes[name] = array.dtype
        names[name] = _dtype_name(value, array)
        if type(value).__module__.startswith("torch"):
            tensors.add(name)
    return PreparedInputs(values, widened, tuple(floating), dtypes, names, frozenset(tensors))


def _dtype_name(value: Any, array: np.ndarray) -> str:
    """The dtype the caller gave, by name: a torch tensor's own ("bfloat16"), else the copy's."""
    dtype = getattr(value, "dtype", None)
    if type(value).__module__.startswith("torch") and dtype is not None:
        return str(dtype).removeprefix("torch.")
    return array.dtype.name


def require_finite(name: str, array: np.ndarray) -> None:
    """Raise unless every value of input ``name`` is finite (real or complex).

    Raises:
        GradcheckError: naming how many values are not finite and the index of the first.
    """
    if np.all(np.isfinite(array)):
        return
    bad = np.argwhere(~np.isfinite(array))
    where = tuple(int(i) for i in bad[0]) if array.ndim else ()
    raise GradcheckError(
        f"input {name!r} has {len(bad) if array.ndim else 1} non-finite value(s), "
        f"first at index {where}: {array[where]!r}"
    )


def resolve_wrt(prepared: PreparedInputs, wrt: str | Iterable[str] | None) -> tuple[str, ...]:
    """The names to check: ``wrt`` validated, or every floating input when ``wrt`` is None.

    Raises:
        GradcheckError: ``wrt`` is not a name or a sequence of distinct names
            (``validation.wrt``), names a missing or an integer input, or there is no floating
            input to check.
    """
    names = validation.wrt(wrt)
    if names is None:
        if not prepared.floating:
            raise GradcheckError(
                "no floating inputs to check: inputs are "
                + ", ".join(f"{n!r} ({d})" for n, d in prepared.dtypes.items())
            )
        return prepared.floating
    for name in names:
        if name not in prepared.values:
            raise GradcheckError(
                f"wrt names {name!r}, but inputs are {list(prepared.values)}"
            )
        if name not in prepared.floating:
            raise GradcheckError(
                f"wrt names {name!r}, an integer input ({prepared.dtypes[name]}) that is held "
                "constant; only floating inputs can be checked"
            )
    return names


def require_signature(fn: Any, role: str, names: tuple[str, ...], *, leading: tuple[str, ...] = ()) -> None:
    """Raise unless ``fn(*leading, **{name: ...})`` binds to ``fn``'s signature.

    A forward that does not take the inputs' names is misuse, not a bug in it: the message
    names the signature and the keys. Callables without an inspectable signature (builtins,
    some torch functions) are let through: calling them says the rest.

    Raises:
        GradcheckError: the names do not fit the signature.
    """
    signature = _signature(fn)
    if signature is None:
        return
    try:
        signature.bind(*leading, **dict.fromkeys(names))
    except TypeError as exc:
        label = getattr(fn, "__qualname__", type(fn).__name__)
        raise GradcheckError(
            f"{role} {label}{signature} cannot take the inputs as keywords ({exc}); "
            f"called as {role}({', '.join((*leading, *(f'{n}=...' for n in names)))})"
        ) from None


def _signature(fn: Any) -> inspect.Signature | None:
    """``inspect.signature(fn)``, None where there is none; remembered per callable, as a check
    in a Hypothesis loop asks about the same forward and backward many times."""
    try:
        return _cached_signature(fn)
    except TypeError:  # an unhashable callable: not remembered
        return _signature_of(fn)


def _signature_of(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


_cached_signature = functools.lru_cache(maxsize=256)(_signature_of)
