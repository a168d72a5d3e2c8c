"""The numeric oracle: central differences with Richardson extrapolation and an error estimate.

Properties: it matches exact gradients of polynomials and of numpy functions with known
derivatives across shapes and magnitudes, its steps are exact in float64, the extrapolation
removes the h^2 term, and a kink shows as disagreeing one-sided slopes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import strategies as gs
from gradcheck.numeric import richardson, step_sizes

fast = settings(deadline=None, max_examples=40)
magnitudes = st.sampled_from([1e-3, 1.0, 1e3])

# f(x) = sum(fn(x)), with its exact elementwise derivative, on a domain where both are tame.
FUNCTIONS = {
    "cubic": (lambda x: 2 * x**3 - x**2 + 3 * x, lambda x: 6 * x**2 - 2 * x + 3),
    "sin": (np.sin, np.cos),
    "exp": (lambda x: np.exp(x / 4), lambda x: np.exp(x / 4) / 4),
    "log1p_square": (lambda x: np.log1p(x * x), lambda x: 2 * x / (1 + x * x)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
}


@fast
@given(st.sampled_from(sorted(FUNCTIONS)), st.data())
def test_matches_exact_derivatives_of_numpy_functions(name, data):
    fn, dfn = FUNCTIONS[name]
    x = data.draw(gs.float_arrays(gs.shapes(min_dims=0, max_dims=3, max_side=4), min_magnitude=0.1, max_magnitude=3.0))
    (grad,) = gradcheck.numeric_gradient(lambda x: fn(x).sum(), {"x": x}).values()
    exact = dfn(x)
    np.testing.assert_allclose(grad, exact, rtol=1e-7, atol=1e-9 * max(1.0, float(np.max(np.abs(exact), initial=0))))


@fast
@given(st.integers(0, 4), magnitudes, st.data())
def test_matches_exact_gradients_of_polynomials_at_any_magnitude(degree, scale, data):
    coefficients = data.draw(st.lists(st.floats(-2, 2), min_size=degree + 1, max_size=degree + 1))
    x = data.draw(gs.float_arrays((3, 2), min_magnitude=0.1, max_magnitude=2.0)) * scale
    poly = np.polynomial.Polynomial(coefficients)
    (grad,) = gradcheck.numeric_gradient(lambda x: poly(x).sum(), {"x": x}).values()
    exact = poly.deriv()(x)
    size = max(float(np.max(np.abs(exact))), abs(poly(scale)) / scale, 1e-300)
    np.testing.assert_allclose(grad, exact, rtol=1e-7, atol=1e-9 * size)


@fast
@given(st.data())
def test_vector_jacobian_products_of_array_outputs(data):
    x = data.draw(gs.float_arrays((2, 3), max_magnitude=2.0))
    A = data.draw(gs.float_arrays((4, 2), max_magnitude=2.0))
    dout = data.draw(gs.float_arrays((4, 3), max_magnitude=2.0))
    grads = gradcheck.numeric_gradient(lambda A, x: np.tanh(A @ x), {"A": A, "x": x}, dout=dout)
    G = dout * (1 - np.tanh(A @ x) ** 2)
    np.testing.assert_allclose(grads["x"], A.T @ G, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(grads["A"], G @ x.T, rtol=1e-7, atol=1e-10)


def test_integer_inputs_are_held_constant_and_wrt_selects():
    grads = gradcheck.numeric_gradient(lambda x, k: (x**k).sum(), {"x": np.array([1.0, 2.0]), "k": 3})
    assert set(grads) == {"x"}
    np.testing.assert_allclose(grads["x"], [3.0, 12.0], rtol=1e-9)
    only = gradcheck.numeric_gradient(lambda x, y: (x * y).sum(), {"x": np.ones(2), "y": np.full(2, 2.0)}, wrt="y")
    assert set(only) == {"y"}


def test_float32_inputs_are_differentiated_in_float64():
    x = np.array([0.3, -1.2, 2.0], dtype=np.float32)
    (grad,) = gradcheck.numeric_gradient(lambda x: np.sin(x).sum(), {"x": x}).values()
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, np.cos(x.astype(np.float64)), rtol=1e-6)


@given(gs.float_arrays(gs.shapes(min_dims=0, max_dims=2), min_magnitude=1e-6, max_magnitude=1e6, zeros=True))
def test_steps_are_exact_and_positive(x):
    h = step_sizes(x, float(np.finfo(np.float64).eps))
    assert h.shape == np.shape(x) and np.all(h > 0)
    assert np.all((x + h) - x == h)


@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3), st.floats(1e-4, 1e-1))
def test_richardson_is_exact_on_cubics_and_finds_no_kink(a, b, c, h):
    f = lambda t: a * t + b * t**2 + c * t**3  # noqa: E731  f'(0) = a
    hs = np.array([h])
    gradient, error, kink, _left, _right = richardson(0.0, f(hs), f(-hs), f(2 * hs), f(-2 * hs), hs, 1e-17)
    assert gradient[0] == pytest.approx(a, abs=1e-9 * (1 + abs(c)))
    assert not kink[0]
    assert error[0] >= 0


@given(st.floats(-3, 3), st.floats(0.5, 3), st.floats(1e-4, 1e-1))
def test_richardson_reports_a_kink_with_its_one_sided_slopes(slope, jump, h):
    f = lambda t: slope * t + jump * np.maximum(t, 0)  # noqa: E731  slopes: slope | slope + jump
    hs = np.array([h])
    _, _, kink, left, right = richardson(0.0, f(hs), f(-hs), f(2 * hs), f(-2 * hs), hs, 1e-17)
    assert kink[0]
    assert left[0] == pytest.approx(slope, abs=1e-9)
    assert right[0] == pytest.approx(slope + jump, abs=1e-9)


def test_numeric_gradient_with_its_error_estimate():
    import gradcheck
    from gradcheck.estimates import NumericEstimate

    x = np.array([0.0, 0.5, -1.5, 2.0])
    found = gradcheck.numeric_gradient(lambda x: float(np.sum(np.abs(x) + np.sin(x))), {"x": x}, with_error=True)
    est = found["x"]
    assert isinstance(est, NumericEstimate)
    exact = np.sign(x) + np.cos(x)
    smooth = ~est.kink
    assert est.kink.tolist() == [True, False, False, False]  # |x| at 0
    assert np.all(np.abs(est.gradient[smooth] - exact[smooth]) <= est.error[smooth])
    assert np.all(est.error[smooth] < 1e-8) and np.all(est.error > 0)
    assert (est.left[0], est.right[0]) == pytest.approx((-1 + 1.0, 1 + 1.0), abs=1e-6)
    assert np.isnan(est.left[1:]).all()
    plain = gradcheck.numeric_gradient(lambda x: float(np.sum(np.abs(x) + np.sin(x))), {"x": x})
    assert isinstance(plain["x"], np.ndarray) and plain["x"].shape == x.shape
