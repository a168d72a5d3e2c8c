"""Hypothesis strategies for gradient tests, built on ``hypothesis.extra.numpy``.

Arrays here are well scaled: every element is either exactly 0 (when kinks are wanted) or has a
magnitude in ``[min_magnitude, max_magnitude]``, so no gradient drowns in rounding noise.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck.errors import GradcheckError

__all__ = [
    "away_from_kinks",
    "float_arrays",
    "labels",
    "layer_sizes",
    "shapes",
    "with_kinks",
]


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GradcheckError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    return value


def _check_magnitudes(min_magnitude: float, max_magnitude: float) -> None:
    for name, value in (("min_magnitude", min_magnitude), ("max_magnitude", max_magnitude)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise GradcheckError(f"{name} must be a finite number > 0, got {name}={value!r}")
    if min_magnitude > max_magnitude:
        raise GradcheckError(
            f"min_magnitude={min_magnitude!r} is larger than max_magnitude={max_magnitude!r}"
        )


def shapes(*, min_dims: int = 0, max_dims: int = 2, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    """Array shapes with ``min_dims..max_dims`` axes of ``min_side..max_side`` each."""
    _check_int("min_dims", min_dims, 0)
    _check_int("min_side", min_side, 1)
    if _check_int("max_dims", max_dims, 0) < min_dims:
        raise GradcheckError(f"max_dims={max_dims!r} is smaller than min_dims={min_dims!r}")
    if _check_int("max_side", max_side, 1) < min_side:
        raise GradcheckError(f"max_side={max_side!r} is smaller than min_side={min_side!r}")
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def _elements(min_magnitude: float, max_magnitude: float, zeros: bool, width: int) -> st.SearchStrategy:
    magnitude = st.floats(min_magnitude, max_magnitude, width=width)
    signed = st.tuples(st.sampled_from([-1.0, 1.0]), magnitude).map(lambda t: t[0] * t[1])
    if zeros:
        return st.one_of(st.just(0.0), signed, signed, signed)
    return signed


def float_arrays(
    shape: tuple[int, ...] | st.SearchStrategy,
    *,
    dtype: type | np.dtype = np.float64,
    min_magnitude: float = 1e-2,
    max_magnitude: float = 10.0,
    zeros: bool = False,
) -> st.SearchStrategy:
    """Finite float arrays of ``shape`` (a tuple or a strategy of tuples).

    Every element is ``+-x`` with ``x`` in ``[min_magnitude, max_magnitude]``, or exactly 0 when
    ``zeros`` is true.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise GradcheckError(f"dtype must be a floating dtype, got dtype={dtype!r}")
    _check_magnitudes(min_magnitude, max_magnitude)
    if not isinstance(shape, st.SearchStrategy | tuple | int):
        raise GradcheckError(f"shape must be a tuple or a strategy of tuples, got shape={shape!r}")
    width = 32 if dtype.itemsize == 4 else 64
    if dtype.itemsize == 4:
        max_magnitude = float(np.float32(max_magnitude))
        min_magnitude = float(np.nextafter(np.float32(min_magnitude), np.float32(np.inf)))
    return hnp.arrays(dtype, shape, elements=_elements(min_magnitude, max_magnitude, zeros, width))


def away_from_kinks(
    shape: tuple[int, ...] | st.SearchStrategy, *, margin: float = 1e-2, max_magnitude: float = 10.0,
    dtype: type | np.dtype = np.float64,
) -> st.SearchStrategy:
    """Arrays with no element within ``margin`` of 0 (ReLU, abs and max stay smooth there)."""
    return float_arrays(shape, dtype=dtype, min_magnitude=margin, max_magnitude=max_magnitude)


def with_kinks(
    shape: tuple[int, ...] | st.SearchStrategy, *, max_magnitude: float = 10.0, ties: bool = True,
    dtype: type | np.dtype = np.float64,
) -> st.SearchStrategy:
    """Arrays that contain exact zeros, and (with ``ties``) repeated values, where piecewise
    functions such as ReLU, abs and max have kinks."""
    base = float_arrays(shape, dtype=dtype, max_magnitude=max_magnitude, zeros=True)
    if not ties:
        return base

    def tie(array: np.ndarray) -> np.ndarray:
        out = array.copy()
        if out.size >= 2:
            out.reshape(-1)[-1] = out.reshape(-1)[0]
        return out

    return st.one_of(base, base.map(tie))


def labels(batch: int, num_classes: int) -> st.SearchStrategy:
    """Integer class labels, shape ``(batch,)``, values in ``[0, num_classes)``."""
    _check_int("batch", batch, 1)
    _check_int("num_classes", num_classes, 1)
    return hnp.arrays(np.int64, (batch,), elements=st.integers(0, num_classes - 1))


def layer_sizes(*, layers: int = 2, min_size: int = 1, max_size: int = 6) -> st.SearchStrategy:
    """``layers + 1`` sizes ``(n_0, ..., n_layers)`` for a chain of matmuls ``(n_i, n_{i+1})``."""
    _check_int("layers", layers, 1)
    _check_int("min_size", min_size, 1)
    if _check_int("max_size", max_size, 1) < min_size:
        raise GradcheckError(f"max_size={max_size!r} is smaller than min_size={min_size!r}")
    return st.tuples(*[st.integers(min_size, max_size) for _ in range(layers + 1)])
