"""check_gradients end to end: correct gradients pass, small errors fail, kinks are found and
not compared, and the result says what ran."""

from __future__ import annotations

import json

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import strategies as gs

checks = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def layer(x, W, b):
    """tanh(x W + b): x (m, n), W (n, k), b (k,) -> (m, k)."""
    xp = array_api_compat.array_namespace(x, W, b)
    return xp.tanh(x @ W + b)


def layer_backward(dout, x, W, b):
    G = dout * (1 - np.tanh(x @ W + b) ** 2)
    return {"x": G @ W.T, "W": x.T @ G, "b": G.sum(axis=0)}


@st.composite
def layer_inputs(draw):
    m, n, k = (draw(st.integers(1, 5)) for _ in range(3))
    return {"x": draw(gs.float_arrays((m, n), min_magnitude=0.1, max_magnitude=1.0)),
            "W": draw(gs.float_arrays((n, k), min_magnitude=0.1, max_magnitude=1.0)),
            "b": draw(gs.float_arrays((k,), min_magnitude=0.1, max_magnitude=1.0))}


def scaled(factor, name):
    def backward(dout, **inputs):
        grads = layer_backward(dout, **inputs)
        return {**grads, name: grads[name] * factor}
    return backward


@checks
@given(layer_inputs(), st.integers(0, 2**32 - 1))
def test_a_correct_gradient_always_passes_both_oracles(inputs, seed):
    result = gradcheck.check_gradients(layer, layer_backward, inputs, seed=seed)
    assert result.ok, str(result)
    assert result.oracles == ("numeric", "torch") and result.mode == "full"
    assert [s.name for s in result.inputs] == ["x", "W", "b"]


@checks
@given(layer_inputs(), st.sampled_from(["x", "W", "b"]), st.sampled_from([1 + 1e-5, 1 - 1e-5, 1 + 1e-6]))
def test_a_gradient_off_by_a_tiny_factor_always_fails(inputs, name, factor):
    result = gradcheck.check_gradients(layer, scaled(factor, name), inputs)
    assert not result.ok
    assert {m.input for m in result.mismatches} == {name}


@checks
@given(layer_inputs(), st.sampled_from(["x", "W", "b"]))
def test_numeric_oracle_alone_catches_1e_5_on_a_numpy_only_forward(inputs, name):
    def numpy_only(x, W, b):
        return np.tanh(np.asarray(x) @ np.asarray(W) + np.asarray(b))  # numpy calls: not on torch

    ok = gradcheck.check_gradients(numpy_only, layer_backward, inputs)
    assert ok.ok and ok.oracles == ("numeric",)
    assert any("torch oracle not used" in note for note in ok.notes)
    bad = gradcheck.check_gradients(numpy_only, scaled(1 + 1e-5, name), inputs)
    assert not bad.ok and {m.input for m in bad.mismatches} == {name}


def relu_sum(x, w):
    xp = array_api_compat.array_namespace(x, w)
    z = x @ w
    return xp.sum(xp.where(z > 0, z, xp.zeros_like(z)))


def relu_sum_backward(dout, x, w):
    mask = (x @ w > 0).astype(np.float64) * dout
    return {"x": np.outer(mask, w), "w": x.T @ mask}


@checks
@given(st.integers(2, 6), st.integers(1, 4), st.data())
def test_planted_kinks_are_found_and_not_compared(m, n, data):
    x = data.draw(gs.float_arrays((m, n), min_magnitude=0.1, max_magnitude=2.0))
    w = data.draw(gs.float_arrays((n,), min_magnitude=0.1, max_magnitude=2.0))
    row = data.draw(st.integers(0, m - 1))
    x[row] = 0.0  # that row's ReLU input is exactly 0: a kink along each of its elements
    z = x @ w
    assume(np.all(np.abs(np.delete(z, row)) > 1e-3))
    result = gradcheck.check_gradients(relu_sum, relu_sum_backward, {"x": x, "w": w})
    assert result.ok, str(result)
    kinks = {(k.input, k.index) for k in result.kinks}
    assert {("x", (row, j)) for j in range(n)} <= kinks
    assert all(k.index[0] == row for k in result.kinks if k.input == "x")
    for k in result.kinks:
        assert k.left is not None and k.right is not None and k.left != pytest.approx(k.right)


def test_array_outputs_check_a_random_vector_jacobian_product():
    inputs = {"x": np.array([[0.5, -0.2]]), "W": np.array([[0.3, 0.1, -0.7], [0.9, -0.4, 0.2]]),
              "b": np.array([0.1, 0.2, 0.3])}
    a = gradcheck.check_gradients(layer, layer_backward, inputs, seed=1)
    b = gradcheck.check_gradients(layer, layer_backward, inputs, seed=2)
    assert a.ok and b.ok and a.output_shape == (1, 3)
    wrong = gradcheck.check_gradients(layer, lambda dout, **kw: layer_backward(np.ones_like(dout), **kw), inputs)
    assert not wrong.ok  # ignoring dout is caught because dout is not all ones


def test_wrt_restricts_the_check_and_integers_are_held():
    def forward(x, W, b, k):
        return (layer(x, W, b) ** k).sum()

    def backward(dout, x, W, b, k):
        t = np.tanh(x @ W + b)
        return layer_backward(dout * k * t ** (k - 1), x, W, b)

    inputs = {"x": np.array([[0.5, -0.2]]), "W": np.array([[0.3], [0.9]]), "b": np.array([0.1]), "k": 2}
    result = gradcheck.check_gradients(forward, backward, inputs, wrt=["W"])
    assert result.ok and [s.name for s in result.inputs] == ["W"]


def test_float32_inputs_get_the_low_precision_budget():
    inputs = {"x": np.array([[0.5, -0.2]], dtype=np.float32), "W": np.array([[0.3], [0.9]], dtype=np.float32),
              "b": np.array([0.1], dtype=np.float32)}

    def backward32(dout, **kw):
        return {k: v.astype(np.float32) for k, v in layer_backward(dout, **kw).items()}

    result = gradcheck.check_gradients(layer, backward32, inputs)
    assert result.ok, str(result)
    # Held to the float64 truth with twice float32 autograd's own error, not a fixed rtol.
    assert all(s.tolerance.rtol == 0.0 and "torch autograd's error in float32" in s.budget for s in result.inputs)
    assert not gradcheck.check_gradients(layer, scaled(1.01, "W"), inputs).ok


def test_rtol_and_atol_override_the_defaults():
    inputs = {"x": np.array([[0.5, -0.2]]), "W": np.array([[0.3], [0.9]]), "b": np.array([0.1])}
    assert not gradcheck.check_gradients(layer, scaled(1 + 1e-4, "b"), inputs).ok
    assert gradcheck.check_gradients(layer, scaled(1 + 1e-4, "b"), inputs, rtol=1e-3).ok


def test_result_reads_well_and_serializes():
    inputs = {"x": np.array([[0.5, -0.2]]), "W": np.array([[0.3], [0.9]]), "b": np.array([0.1])}
    result = gradcheck.check_gradients(layer, scaled(2.0, "W"), inputs)
    text = str(result)
    assert text.startswith("gradcheck FAIL: oracles numeric, torch; mode full;")
    assert "FAIL W (2, 1) float64: 2/2 elements mismatch" in text
    assert "likely bug (scale)" in text and "W[0, 0]: analytic" in text
    assert "ok   x (1, 2) float64" in text
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["ok"] is False and data["oracles"] == ["numeric", "torch"]
    assert data["mismatches"][0]["input"] == "W" and data["inputs"][1]["diagnosis"]["kind"] == "scale"
    assert not result and bool(gradcheck.check_gradients(layer, layer_backward, inputs))


def test_assert_gradients_raises_an_assertion_error_with_the_report():
    inputs = {"x": np.array([[0.5, -0.2]]), "W": np.array([[0.3], [0.9]]), "b": np.array([0.1])}
    assert gradcheck.assert_gradients(layer, layer_backward, inputs).ok
    with pytest.raises(gradcheck.GradientMismatch) as info:
        gradcheck.assert_gradients(layer, scaled(-1.0, "x"), inputs)
    assert isinstance(info.value, AssertionError)
    assert "likely bug (sign)" in str(info.value) and info.value.result.ok is False


def test_a_forward_that_differs_on_torch_is_not_trusted_as_an_oracle():
    def split(x):
        if isinstance(x, np.ndarray):
            return (x**2).sum()
        return (x**2).sum() * 1.01  # torch sees a different function

    result = gradcheck.check_gradients(split, lambda d, x: {"x": 2 * x * d}, {"x": np.array([1.0, 2.0])})
    assert result.ok and result.oracles == ("numeric",)
    assert "different values on torch tensors and numpy arrays" in str(result)
