"""The analytic gradients: the backward called once at the point and what it returns validated
(keys, shapes, dtypes, finiteness, no mutation of its inputs). A bug found here is a fault."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck.evaluate import ForwardFailure, as_float_array, describe_exception
from gradcheck.inputs import PreparedInputs
from gradcheck.point import Fault

__all__ = ["call_backward", "shape_hint"]


def shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if len(want) >= 2 and got == want[::-1]:
        return " (it looks transposed)"
    if math.prod(got) == math.prod(want):
        return " (same number of elements: a reshape or squeeze is missing?)"
    if len(got) == len(want) + 1 and got[1:] == want:
        return " (not summed over the batch axis?)"
    return ""


def call_backward(
    backward: Callable[..., Any],
    prepared: PreparedInputs,
    names: tuple[str, ...],
    dout: np.ndarray | float,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Call the backward once; validated gradients by name and the faults found."""
    args = {n: np.array(a, copy=True) for n, a in prepared.values.items()}
    dout_arg = float(dout) if np.ndim(dout) == 0 else np.array(dout, copy=True)
    try:
        returned = backward(dout_arg, **args)
    except Fault:  # found by a wrapping of the backward (complex_values): already worded
        raise
    except Exception as exc:  # a bug in the backward under test
        raise Fault(f"backward raised {describe_exception(exc)}") from None
    faults: list[str] = []
    for n in prepared.values:
        if not np.array_equal(args[n], prepared.values[n]):
            faults.append(f"backward mutates its input {n!r} in place")
    if not isinstance(returned, Mapping):
        raise Fault(
            f"backward returned {type(returned).__name__}, not a dict mapping input names to gradients"
        )
    extra = [k for k in returned if k not in prepared.values]
    if extra:
        faults.append(
            f"backward returned gradients for {extra}, which are not inputs (inputs: {list(prepared.values)})"
        )
    gradients: dict[str, np.ndarray] = {}
    for name in names:
        if name not in returned or returned[name] is None:
            faults.append(f"backward returned no gradient for {name!r} (keys: {list(returned)})")
            continue
        try:
            g = as_float_array(returned[name])
        except ForwardFailure as exc:
            faults.append(f"backward's gradient for {name!r} {exc}")
            continue
        want = prepared.values[name].shape
        if g.shape != want:
            faults.append(
                f"backward's gradient for {name!r} has shape {g.shape}, but {name!r} has shape "
                f"{want}{shape_hint(g.shape, want)}"
            )
            continue
        if not np.all(np.isfinite(g)):
            bad = np.argwhere(~np.isfinite(g))
            where = tuple(int(i) for i in bad[0]) if g.ndim else ()
            faults.append(
                f"backward's gradient for {name!r} has {len(bad) if g.ndim else 1} non-finite "
                f"value(s), first at index {where}: {g[where]!r}"
            )
            continue
        gradients[name] = g
    return gradients, faults
