"""Forwards with several outputs: a tuple, list, named tuple or dict of arrays, nested as deep as
needed (a pytree), described once at the point and seen by the engine as ONE flat real array.

``describe_outputs`` reads the structure of the forward's value at the point: each entry's name
(its path: ``h`` for a dict key or named-tuple field, ``[1]`` for a position, ``state.c`` or
``[0][1]`` nested), shape and dtype, and whether it is differentiable (floating) or not (integer
or boolean, such as max-pool's indices). ``Outputs.flat_forward`` wraps the forward so that it
returns the differentiable entries raveled and concatenated in the entries' own array namespace
(``array_api_compat``), so torch autograd, ``torch.func.vmap`` and ``jax.vjp`` still
differentiate through it; ``Outputs.flat_backward`` wraps the backward so that it receives
``dout`` in the forward's structure (each entry shaped like its output; ``None`` for an integer
entry; a number for a 0-d entry). Every other step of a check (the numeric oracle, the exact
oracles, both modes, the diagnosis) runs on the flat form unchanged.

A forward that returns one array never comes here. What is wrong with the outputs is said with
the entry's name: a structure that changes between evaluations, or integer entries that differ
between two evaluations at the point, or an entry that is not an array, is a fault of the
forward (``OutputsFault``); complex entries are not supported yet (``GradcheckError``).

``name_outputs`` says which outputs a failing input's gradient is wrong through: the same check
with ``dout`` zero on every differentiable output but one, for each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import array_api_compat
import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.evaluate import ForwardFailure, as_float_array
from gradcheck.result import CheckResult, OutputSummary

__all__ = ["Entry", "Outputs", "OutputsFault", "describe_outputs", "name_outputs"]

_CONTAINERS = (tuple, list, dict)


class OutputsFault(ForwardFailure):
    """The forward's outputs are unusable or change between evaluations (a bug in the code under
    test); the message names the output."""


@dataclass(frozen=True)
class _Node:
    """A container in the output's structure: its type, its keys (dict keys, or positions) and
    its children (``_Node`` or the index of an entry)."""

    kind: type
    keys: tuple[Any, ...]
    children: tuple[Any, ...]

    def rebuild(self, leaves: list[Any]) -> Any:
        values = [c.rebuild(leaves) if isinstance(c, _Node) else leaves[c] for c in self.children]
        if self.kind is dict:
            return dict(zip(self.keys, values, strict=True))
        if self.kind is tuple or self.kind is list:
            return self.kind(values)
        return self.kind(*values)  # a named tuple


def _kind(value: Any) -> str | None:
    """``"f"``, ``"i"`` (integer or unsigned), ``"b"`` or ``"c"`` for a number or an array of any
    namespace; None for anything else."""
    if isinstance(value, bool | np.bool_):
        return "b"
    for number, kind in ((int, "i"), (float, "f"), (complex, "c")):
        if isinstance(value, number):
            return kind
    if not array_api_compat.is_array_api_obj(value):
        return None
    dtype = value.dtype
    if type(dtype).__module__.startswith("torch"):
        if dtype.is_complex:
            return "c"
        if dtype.is_floating_point:
            return "f"
        return "b" if str(dtype) == "torch.bool" else "i"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return None
    return {"u": "i"}.get(kind, kind) if kind in "fiubc" else None


def _dtype_name(value: Any) -> str:
    return str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in getattr(value, "shape", ()))


def _walk(value: Any, path: str, leaves: list[Any], names: list[str]) -> Any:
    """The structure of ``value`` as a ``_Node`` (or an entry's index), collecting the entries
    and their names in order."""
    if not isinstance(value, _CONTAINERS):
        leaves.append(value)
        names.append(path)
        return len(leaves) - 1
    if isinstance(value, dict):
        keys: tuple[Any, ...] = tuple(value)
        items = [value[k] for k in keys]
        parts = [f"{path}.{k}" if path else str(k) for k in keys]
    else:
        keys = tuple(range(len(value)))
        items = list(value)
        fields = getattr(type(value), "_fields", None) if isinstance(value, tuple) else None
        parts = ([f"{path}.{f}" if path else f for f in fields] if fields is not None
                 else [f"{path}[{i}]" for i in keys])
    # Named tuples keep their type (the backward reads ``dout.h``); other containers are rebuilt
    # as plain dicts, tuples and lists.
    kind = type(value) if hasattr(type(value), "_fields") else next(t for t in _CONTAINERS if isinstance(value, t))
    children = tuple(_walk(v, p, leaves, names) for v, p in zip(items, parts, strict=True))
    return _Node(kind, keys, children)


@dataclass(frozen=True)
class Entry:
    """One output of a forward with several: its name (path), shape, dtype and kind."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "f", "i" or "b"

    @property
    def differentiable(self) -> bool:
        return self.kind == "f"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Outputs:
    """The structure of a forward's several outputs, as found at the point.

    Attributes:
        tree: the containers, to rebuild a value of this structure.
        entries: every output in order, differentiable or not.
        integers: the non-differentiable entries' values at the point (numpy), by name.
    """

    tree: _Node
    entries: tuple[Entry, ...]
    integers: Mapping[str, np.ndarray]

    @property
    def differentiable(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.differentiable)

    @property
    def summary(self) -> tuple[OutputSummary, ...]:
        return tuple(OutputSummary(e.name, e.shape, e.dtype, e.differentiable) for e in self.entries)

    def segments(self) -> tuple[slice, ...]:
        """Where each differentiable entry sits in the flat array, in the order of
        ``differentiable``."""
        ends = np.cumsum([0, *(e.size for e in self.differentiable)]).tolist()
        return tuple(slice(a, b) for a, b in pairwise(ends))

    def leaves(self, value: Any) -> list[Any]:
        """The entries of a value the forward returned, in order.

        Raises:
            OutputsFault: the value's structure, an entry's shape or its kind differs from the
                point's.
        """
        leaves: list[Any] = []
        names: list[str] = []
        tree = _walk(value, "", leaves, names)
        if tree != self.tree or names != [e.name for e in self.entries]:
            raise OutputsFault(f"returns {_structure_text(names, value)}, but returned "
                               f"{_structure_text([e.name for e in self.entries], self.tree)} before")
        for leaf, entry in zip(leaves, self.entries, strict=True):
            if _shape(leaf) != entry.shape:
                raise OutputsFault(f"returns output `{entry.name}` of shape {_shape(leaf)}, but it had shape "
                                   f"{entry.shape} before")
            kind = _kind(leaf)
            if (kind == "f") != entry.differentiable:
                raise OutputsFault(f"returns output `{entry.name}` of dtype {_dtype_name(leaf)}, but it was "
                                   f"{entry.dtype} before")
        return leaves

    def flatten(self, value: Any) -> Any:
        """The differentiable entries of ``value`` raveled and concatenated, in their own array
        namespace (numpy, torch, JAX), so that autograd differentiates through it."""
        leaves = self.leaves(value)
        parts = [leaves[i] for i, e in enumerate(self.entries) if e.differentiable]
        arrays = [p for p in parts if array_api_compat.is_array_api_obj(p)]
        try:
            xp = array_api_compat.array_namespace(*arrays) if arrays else np
        except TypeError:  # entries of several namespaces: numbers only, no autograd through them
            return np.concatenate([as_float_array(p).reshape(-1) for p in parts])
        flat = [xp.reshape(p, (-1,)) if array_api_compat.is_array_api_obj(p)
                else xp.asarray([p], dtype=xp.float64) for p in parts]
        return flat[0] if len(flat) == 1 else xp.concat(flat)

    def unflatten(self, flat: np.ndarray) -> Any:
        """A flat upstream gradient in the forward's structure: each differentiable entry's part
        shaped like it (a float for a 0-d entry), ``None`` for the others."""
        spans = iter(self.segments())
        leaves: list[Any] = []
        for e in self.entries:
            if not e.differentiable:
                leaves.append(None)
                continue
            part = np.asarray(flat)[next(spans)].reshape(e.shape)
            leaves.append(float(part) if part.ndim == 0 else part)
        return self.tree.rebuild(leaves)

    def only(self, flat: np.ndarray, k: int) -> np.ndarray:
        """``flat`` with every differentiable output but the ``k``-th zeroed."""
        kept = np.zeros_like(np.asarray(flat, dtype=np.float64))
        span = self.segments()[k]
        kept[span] = np.asarray(flat)[span]
        return kept

    def flat_forward(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """``forward`` returning the flat array of its differentiable outputs."""

        def flat_forward(**inputs: Any) -> Any:
            return self.flatten(forward(**inputs))

        return flat_forward

    def flat_backward(self, backward: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """``backward`` taking the flat upstream gradient (``None`` stays ``None``: autograd)."""
        if backward is None:
            return None

        def flat_backward(dout: Any, **inputs: Any) -> Any:
            return backward(self.unflatten(dout), **inputs)

        return flat_backward


def _numpy(value: Any) -> np.ndarray:
    """An integer or boolean entry (a number, numpy, torch or JAX array) as a numpy array."""
    if type(value).__module__.startswith("torch"):
        return np.asarray(value.numpy(force=True))
    return np.asarray(value)


def _structure_text(names: list[str], value: Any) -> str:
    if not isinstance(value, _Node | tuple | list | dict):
        return f"one {type(value).__name__}"
    kind = value.kind if isinstance(value, _Node) else type(value)
    return f"a {kind.__name__} of outputs {names}"


def describe_outputs(first: Any, again: Any) -> Outputs:
    """The structure of a forward's several outputs, from two evaluations at the point.

    Raises:
        GradcheckError: an entry is complex (not supported yet).
        OutputsFault: no entry, an entry that is not an array or number, none that is floating, a
            structure that differs between the two evaluations, or integer entries that differ.
    """
    leaves: list[Any] = []
    names: list[str] = []
    tree = _walk(first, "", leaves, names)
    if not leaves:
        raise OutputsFault(f"returns an empty {type(first).__name__}: there is no output to differentiate")
    entries = []
    for name, leaf in zip(names, leaves, strict=True):
        kind = _kind(leaf)
        if kind is None:
            raise OutputsFault(f"returns output `{name}` of type {type(leaf).__name__}, not an array or number")
        if kind == "c":
            raise GradcheckError(f"forward returns output `{name}` of complex dtype {_dtype_name(leaf)}: complex "
                                 "outputs are not supported yet (return its real and imaginary parts as two outputs)")
        entries.append(Entry(name, _shape(leaf), _dtype_name(leaf), kind))
    integers = {e.name: _numpy(leaf) for e, leaf in zip(entries, leaves, strict=True) if not e.differentiable}
    outputs = Outputs(tree, tuple(entries), integers)
    if not outputs.differentiable:
        raise OutputsFault(f"returns only integer or boolean outputs {names}: there is nothing to differentiate")
    repeated = outputs.leaves(again)
    for entry, leaf in zip(entries, repeated, strict=True):
        if entry.name in integers and not np.array_equal(_numpy(leaf), integers[entry.name]):
            raise OutputsFault(f"returns output `{entry.name}` ({entry.dtype}) with other values in two "
                               "evaluations at the same point: integer outputs must be deterministic")
    return outputs


def name_outputs(
    result: CheckResult, outputs: Outputs, dout: np.ndarray,
    check_through: Callable[[np.ndarray, tuple[str, ...]], CheckResult],
) -> CheckResult:
    """``result`` with the outputs each mismatching input's gradient is wrong through.

    For each differentiable output, ``check_through(dout_k, failing)`` checks the failing inputs
    again with ``dout`` zero on the other outputs; an input that fails there is wrong through that
    output. Only when the check has several differentiable outputs and some input mismatches.
    """
    failing = tuple(s.name for s in result.inputs if s.mismatches)
    if not failing or len(outputs.differentiable) < 2:
        return result
    through: dict[str, list[str]] = {n: [] for n in failing}
    evaluations = result.evaluations
    for k, entry in enumerate(outputs.differentiable):
        alone = check_through(outputs.only(dout, k), failing)
        evaluations += alone.evaluations
        for s in alone.inputs:
            if s.mismatches and s.name in through:
                through[s.name].append(entry.name)
    named = {n: tuple(o) for n, o in through.items() if o}
    return replace(
        result,
        inputs=tuple(replace(s, outputs=named.get(s.name, ())) for s in result.inputs),
        mismatches=tuple(replace(m, outputs=named.get(m.input, ())) for m in result.mismatches),
        evaluations=evaluations,
    )
