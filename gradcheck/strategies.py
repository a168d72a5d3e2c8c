"""Hypothesis strategies for gradient tests, built on ``hypothesis.extra.numpy``.

Arrays here are well scaled: every element is either exactly 0 (when kinks are wanted) or has a
magnitude in ``[min_magnitude, max_magnitude]``, so no gradient drowns in rounding noise. Arrays
come in float64, float32, float16 or bfloat16 (``dtype="bfloat16"``: float32 arrays whose values
are each exactly a bfloat16, as numpy has no bfloat16; ``torch.from_numpy(a).bfloat16()`` makes
the tensor without rounding).
Bad arguments raise ``GradcheckError`` with the messages of ``gradcheck.validation``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck import validation

__all__ = [
    "BFLOAT16",
    "away_from_kinks",
    "complex_arrays",
    "float_arrays",
    "labels",
    "layer_sizes",
    "shapes",
    "to_bfloat16",
    "with_kinks",
]


def shapes(*, min_dims: int = 0, max_dims: int = 2, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    """Array shapes with ``min_dims..max_dims`` axes of ``min_side..max_side`` each."""
    min_dims = validation.integer("min_dims", min_dims, minimum=0)
    max_dims = validation.integer("max_dims", max_dims, minimum=0)
    min_side = validation.integer("min_side", min_side, minimum=1)
    max_side = validation.integer("max_side", max_side, minimum=1)
    validation.ordered("min_dims", min_dims, "max_dims", max_dims)
    validation.ordered("min_side", min_side, "max_side", max_side)
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


BFLOAT16 = "bfloat16"


def to_bfloat16(values: Any) -> np.ndarray:
    """``values`` rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def _elements(
    min_magnitude: float, max_magnitude: float, zeros: bool, width: Literal[16, 32, 64], bfloat16: bool = False
) -> st.SearchStrategy:
    magnitude = st.floats(min_magnitude, max_magnitude, width=width)
    if bfloat16:  # rounded to bfloat16, kept within the bounds
        magnitude = magnitude.map(lambda m: float(to_bfloat16(np.float32(m)))).filter(
            lambda m: min_magnitude <= m <= max_magnitude)
    signed = st.tuples(st.sampled_from([-1.0, 1.0]), magnitude).map(lambda t: t[0] * t[1])
    if zeros:
        return st.one_of(st.just(0.0), signed, signed, signed)
    return signed


def float_arrays(
    shape: tuple[int, ...] | st.SearchStrategy,
    *,
    dtype: type | np.dtype | str = np.float64,
    min_magnitude: float = 1e-2,
    max_magnitude: float = 10.0,
    zeros: bool = False,
) -> st.SearchStrategy:
    """Finite float arrays of ``shape`` (a tuple or a strategy of tuples), in ``dtype``: a numpy
    floating dtype (float64, float32, float16) or ``"bfloat16"`` (float32 arrays of values
    representable in bfloat16).

    Every element is ``+-x`` with ``x`` in ``[min_magnitude, max_magnitude]``, or exactly 0 when
    ``zeros`` is true.
    """
    bfloat16 = (isinstance(dtype, str) and dtype == BFLOAT16) or str(dtype) == "torch.bfloat16"
    dtype = np.dtype(np.float32) if bfloat16 else validation.float_dtype(dtype)
    validation.positive_number("min_magnitude", min_magnitude)
    validation.positive_number("max_magnitude", max_magnitude)
    validation.ordered("min_magnitude", min_magnitude, "max_magnitude", max_magnitude)
    validation.shape(shape)
    width: Literal[16, 32, 64] = {2: 16, 4: 32}.get(dtype.itemsize, 64)  # type: ignore[assignment]
    if width < 64:  # bounds the dtype can hold
        low = np.dtype(f"float{width}").type
        max_magnitude = float(low(max_magnitude))
        min_magnitude = float(np.nextafter(low(min_magnitude), low(np.inf)))
    if bfloat16:
        max_magnitude = float(to_bfloat16(np.float32(max_magnitude)))
        min_magnitude = float(to_bfloat16(np.float32(min_magnitude)))
        validation.ordered("min_magnitude", min_magnitude, "max_magnitude", max_magnitude)
    return hnp.arrays(dtype, shape, elements=_elements(min_magnitude, max_magnitude, zeros, width, bfloat16))


def complex_arrays(
    shape: tuple[int, ...] | st.SearchStrategy,
    *,
    dtype: type | np.dtype = np.complex128,
    min_magnitude: float = 1e-2,
    max_magnitude: float = 10.0,
    zeros: bool = False,
) -> st.SearchStrategy:
    """Finite complex arrays (complex64 or complex128) of ``shape``.

    The real and the imaginary part of every element are each drawn as ``float_arrays`` draws
    an element (``+-x`` with ``x`` in ``[min_magnitude, max_magnitude]``, or exactly 0 when
    ``zeros`` is true: ``|z|`` has its kink where both are).
    """
    dtype = validation.complex_dtype(dtype)
    validation.positive_number("min_magnitude", min_magnitude)
    validation.positive_number("max_magnitude", max_magnitude)
    validation.ordered("min_magnitude", min_magnitude, "max_magnitude", max_magnitude)
    validation.shape(shape)
    width: Literal[32, 64] = 32 if dtype.itemsize == 8 else 64
    if width == 32:
        max_magnitude = float(np.float32(max_magnitude))
        min_magnitude = float(np.nextafter(np.float32(min_magnitude), np.float32(np.inf)))
    part = _elements(min_magnitude, max_magnitude, zeros, width)
    return hnp.arrays(dtype, shape, elements=st.builds(complex, part, part))


def away_from_kinks(
    shape: tuple[int, ...] | st.SearchStrategy, *, margin: float = 1e-2, max_magnitude: float = 10.0,
    dtype: type | np.dtype | str = np.float64,
) -> st.SearchStrategy:
    """Arrays with no element within ``margin`` of 0 (ReLU, abs and max stay smooth there)."""
    return float_arrays(shape, dtype=dtype, min_magnitude=margin, max_magnitude=max_magnitude)


def with_kinks(
    shape: tuple[int, ...] | st.SearchStrategy, *, max_magnitude: float = 10.0, ties: bool = True,
    dtype: type | np.dtype | str = np.float64,
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
    batch = validation.integer("batch", batch, minimum=1)
    num_classes = validation.integer("num_classes", num_classes, minimum=1)
    return hnp.arrays(np.int64, (batch,), elements=st.integers(0, num_classes - 1))


def layer_sizes(*, layers: int = 2, min_size: int = 1, max_size: int = 6) -> st.SearchStrategy:
    """``layers + 1`` sizes ``(n_0, ..., n_layers)`` for a chain of matmuls ``(n_i, n_{i+1})``."""
    layers = validation.integer("layers", layers, minimum=1)
    min_size = validation.integer("min_size", min_size, minimum=1)
    max_size = validation.integer("max_size", max_size, minimum=1)
    validation.ordered("min_size", min_size, "max_size", max_size)
    return st.tuples(*[st.integers(min_size, max_size) for _ in range(layers + 1)])
