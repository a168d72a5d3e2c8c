"""gradcheck.strategies: the properties each strategy promises, and clear errors on misuse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck import GradcheckError
from gradcheck import strategies as gs


@given(st.data(), st.integers(0, 3), st.integers(1, 4))
def test_shapes_respect_their_bounds(data, min_dims, min_side):
    shape = data.draw(gs.shapes(min_dims=min_dims, max_dims=min_dims + 1, min_side=min_side, max_side=min_side + 2))
    assert min_dims <= len(shape) <= min_dims + 1
    assert all(min_side <= side <= min_side + 2 for side in shape)


@given(st.data(), st.sampled_from([np.float64, np.float32, np.float16, "bfloat16"]), st.booleans())
def test_float_arrays_are_well_scaled(data, dtype, zeros):
    array = data.draw(gs.float_arrays((3, 2), dtype=dtype, min_magnitude=0.1, max_magnitude=5.0, zeros=zeros))
    assert array.shape == (3, 2) and array.dtype == (np.float32 if dtype == "bfloat16" else dtype)
    if dtype == "bfloat16":  # float32 values, each exactly a bfloat16
        assert np.array_equal(gs.to_bfloat16(array), array)
    magnitude = np.abs(array.astype(np.float64))
    nonzero = magnitude[magnitude != 0]
    assert np.all((nonzero >= 0.1 * (1 - 1e-3)) & (nonzero <= 5.0 * (1 + 1e-3)))
    if not zeros:
        assert nonzero.size == array.size


def test_to_bfloat16_rounds_to_nearest_ties_to_even():
    got = gs.to_bfloat16(np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-20, -3.3], dtype=np.float32))
    assert got.tolist() == [1.0, 1.0 + 2.0**-6, 1.0 + 2.0**-7, -3.296875]


@given(st.data(), st.sampled_from([np.complex128, np.complex64]), st.booleans())
def test_complex_arrays_are_well_scaled_in_both_parts(data, dtype, zeros):
    array = data.draw(gs.complex_arrays((3, 2), dtype=dtype, min_magnitude=0.1, max_magnitude=5.0, zeros=zeros))
    assert array.shape == (3, 2) and array.dtype == dtype
    for part in (array.real, array.imag):
        magnitude = np.abs(part.astype(np.float64))
        nonzero = magnitude[magnitude != 0]
        assert np.all((nonzero >= 0.1 * (1 - 1e-3)) & (nonzero <= 5.0 * (1 + 1e-3)))
        if not zeros:
            assert nonzero.size == part.size


def test_complex_arrays_plant_zeros_where_abs_has_its_kink():
    from hypothesis import Phase, find, settings

    quiet = settings(database=None, max_examples=500, phases=[Phase.generate])  # found, not shrunk
    found = find(gs.complex_arrays((4,), zeros=True), lambda a: np.any(a == 0), settings=quiet)
    assert np.any(found == 0)


@given(st.data())
def test_float_arrays_accept_a_shape_strategy(data):
    array = data.draw(gs.float_arrays(gs.shapes(min_dims=1, max_dims=3)))
    assert 1 <= array.ndim <= 3 and np.all(np.isfinite(array))


@given(st.data(), st.floats(1e-3, 1.0))
def test_away_from_kinks_keeps_a_margin_from_zero(data, margin):
    array = data.draw(gs.away_from_kinks((4, 3), margin=margin))
    assert np.all(np.abs(array) >= margin)


def test_with_kinks_plants_zeros_and_ties():
    from hypothesis import Phase, find, settings

    quiet = settings(database=None, max_examples=500, phases=[Phase.generate])  # found, not shrunk
    zero = find(gs.with_kinks((5,)), lambda a: np.any(a == 0), settings=quiet)
    assert np.any(zero == 0)
    tie = find(gs.with_kinks((5,)), lambda a: a[0] == a[-1] and a[0] != 0, settings=quiet)
    assert tie[0] == tie[-1]


@given(st.data(), st.integers(1, 8), st.integers(1, 5))
def test_labels_fit_the_logits(data, batch, classes):
    y = data.draw(gs.labels(batch, classes))
    assert y.shape == (batch,) and y.dtype.kind == "i"
    assert np.all((y >= 0) & (y < classes))


@given(st.data(), st.integers(1, 4))
def test_layer_sizes_chain(data, layers):
    sizes = data.draw(gs.layer_sizes(layers=layers, min_size=2, max_size=5))
    assert len(sizes) == layers + 1 and all(2 <= s <= 5 for s in sizes)


BAD_CALLS = [
    (lambda: gs.shapes(min_dims=-1), "min_dims must be a non-negative integer, got min_dims=-1"),
    (lambda: gs.shapes(min_dims=2, max_dims=1), "max_dims=1 is smaller than min_dims=2"),
    (lambda: gs.shapes(min_side=0), "min_side must be a positive integer, got min_side=0"),
    (lambda: gs.shapes(max_side=2.5), "max_side must be a positive integer, got max_side=2.5"),
    (lambda: gs.float_arrays((2,), dtype=np.int64),
     "dtype must be a floating dtype, got dtype=<class 'numpy.int64'>"),
    (lambda: gs.float_arrays((2,), min_magnitude=0.0),
     "min_magnitude must be a finite number > 0, got min_magnitude=0.0"),
    (lambda: gs.float_arrays((2,), max_magnitude=float("inf")),
     "max_magnitude must be a finite number > 0, got max_magnitude=inf"),
    (lambda: gs.float_arrays((2,), min_magnitude=2.0, max_magnitude=1.0),
     "max_magnitude=1.0 is smaller than min_magnitude=2.0"),
    (lambda: gs.float_arrays("3x2"), "shape must be a tuple or a strategy of tuples, got shape='3x2'"),
    (lambda: gs.labels(0, 3), "batch must be a positive integer, got batch=0"),
    (lambda: gs.labels(3, True), "num_classes must be a positive integer, got num_classes=True"),
    (lambda: gs.layer_sizes(layers=0), "layers must be a positive integer, got layers=0"),
    (lambda: gs.layer_sizes(min_size=4, max_size=2), "max_size=2 is smaller than min_size=4"),
    (lambda: gs.float_arrays((2,), dtype="no such dtype"),
     "dtype must be a floating dtype, got dtype='no such dtype'"),
    (lambda: gs.float_arrays((2,), min_magnitude=True),
     "min_magnitude must be a finite number > 0, got min_magnitude=True"),
    (lambda: gs.complex_arrays((2,), dtype=np.float64),
     "dtype must be complex64 or complex128, got dtype=<class 'numpy.float64'>"),
    (lambda: gs.complex_arrays((2,), dtype=np.clongdouble),
     "dtype must be complex64 or complex128, got dtype=<class 'numpy.clongdouble'>"),
    (lambda: gs.complex_arrays((2,), dtype="no such dtype"),
     "dtype must be complex64 or complex128, got dtype='no such dtype'"),
    (lambda: gs.complex_arrays((2,), min_magnitude=2.0, max_magnitude=1.0),
     "max_magnitude=1.0 is smaller than min_magnitude=2.0"),
    (lambda: gs.complex_arrays("3x2"), "shape must be a tuple or a strategy of tuples, got shape='3x2'"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_calls_raise_a_clear_error(call, message):
    with pytest.raises(GradcheckError) as info:
        call()
    assert str(info.value) == message


def test_numpy_integers_are_integers_and_floats_are_not():
    assert gs.labels(np.int64(2), np.uint8(3)) is not None
    with pytest.raises(GradcheckError, match=r"^max_dims must be a non-negative integer, got max_dims=2\.0$"):
        gs.shapes(max_dims=2.0)
