"""The reference implementations: published numbers, sound numerics, and every correct case
passing both oracles on drawn examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck
import gradcheck_reference
from gradcheck.registry import all_cases
from gradcheck_reference import gates, softplus, staged, twolayer
from gradcheck_reference.gates import PUBLISHED_CIRCUIT, PUBLISHED_NEURON

CORRECT = {case.name: case for case in gradcheck_reference.CORRECT}


def as_torch(inputs):
    return {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}


# --- published numbers -----------------------------------------------------------------------


def test_circuit_reproduces_the_published_values():
    assert gates.circuit(**PUBLISHED_CIRCUIT) == -12.0
    grads = gates.circuit_backward(1.0, **PUBLISHED_CIRCUIT)
    assert (grads["x"], grads["y"], grads["z"]) == (-4.0, -4.0, 3.0)


def test_sigmoid_neuron_reproduces_the_published_values():
    # dot = 2*(-1) + (-3)*(-2) - 3 = 1; f = sigmoid(1); ddot = (1 - f) f ~ 0.2
    f = 1 / (1 + np.exp(-1.0))
    ddot = (1 - f) * f
    assert gates.neuron(**PUBLISHED_NEURON) == pytest.approx(f)
    assert ddot == pytest.approx(0.2, abs=0.01)
    grads = gates.neuron_backward(1.0, **PUBLISHED_NEURON)
    np.testing.assert_allclose(grads["x"], [2 * ddot, -3 * ddot])
    np.testing.assert_allclose(grads["w"], [-ddot, -2 * ddot, ddot])


def test_staged_f_at_the_published_point_matches_the_closed_form():
    x, y = 3.0, -4.0
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    num, den = x + sig(y), sig(x) + (x + y) ** 2
    assert staged.f_xy(**staged.PUBLISHED) == pytest.approx(num / den)
    dx = (1 / den) - num / den**2 * (sig(x) * (1 - sig(x)) + 2 * (x + y))
    dy = sig(y) * (1 - sig(y)) / den - num / den**2 * 2 * (x + y)
    grads = staged.f_xy_backward(1.0, **staged.PUBLISHED)
    assert grads["x"] == pytest.approx(dx, rel=1e-12)
    assert grads["y"] == pytest.approx(dy, rel=1e-12)


def test_softplus_descent_on_b3_reproduces_the_published_walk():
    point = softplus.published_point()
    predicted = softplus.predict(point["x"], **{k: point[k] for k in softplus.PARAMS})
    np.testing.assert_allclose(predicted, [-2.6, -1.6, -2.61], atol=0.05)
    path = softplus.descend_b3(lr=0.1, steps=200)
    (b0, slope0), (b1, slope1), (b2, _) = path[:3]
    assert b0 == 0.0 and slope0 == pytest.approx(-15.7, abs=0.05)
    assert b1 == pytest.approx(1.57, abs=0.01) and slope1 == pytest.approx(-6.26, abs=0.01)
    assert b2 == pytest.approx(2.19, abs=0.01)
    assert path[-1][0] == pytest.approx(2.61, abs=0.01) and abs(path[-1][1]) < 1e-6


def test_softplus_gradient_of_b3_is_the_notes_formula():
    point = softplus.published_point()
    predicted = softplus.predict(point["x"], **{k: point[k] for k in softplus.PARAMS})
    grads = softplus.ssr_backward(1.0, **point)
    assert set(grads) == set(softplus.PARAMS)
    assert grads["b3"] == pytest.approx(np.sum(-2 * (point["observed"] - predicted)))


# --- the SGD epoch ---------------------------------------------------------------------------


def separable_problem(m=60, n=4, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = 4 * rng.normal(size=(k, n))
    y = rng.integers(0, k, m)
    X = (centers[y] + rng.normal(size=(m, n))).astype(dtype)
    W1 = (rng.normal(size=(n, 16)) / np.sqrt(n)).astype(dtype)
    W2 = (rng.normal(size=(16, k)) / 4).astype(dtype)
    return X, y, W1, W2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nn_epoch_lowers_the_training_loss_and_keeps_the_dtype(dtype):
    X, y, W1, W2 = separable_problem(dtype=dtype)
    before = float(twolayer.softmax_net(X, y, W1, W2))
    for _ in range(10):
        twolayer.nn_epoch(X, y, W1, W2, lr=0.1, batch=16)
    after = float(twolayer.softmax_net(X, y, W1, W2))
    assert W1.dtype == dtype and W2.dtype == dtype
    assert after < 0.5 * before
    accuracy = np.mean(np.argmax(np.maximum(X @ W1, 0) @ W2, axis=1) == y)
    assert accuracy > 0.9


def test_nn_epoch_divides_each_step_by_the_actual_minibatch_size():
    # 10 rows in minibatches of 8: the second step has 2 rows and divides by 2, not 8.
    X, y, W1, W2 = separable_problem(m=10)
    W1a, W2a = W1.copy(), W2.copy()
    twolayer.nn_epoch(X, y, W1a, W2a, lr=0.5, batch=8)
    W1b, W2b = W1.copy(), W2.copy()
    for rows in (slice(0, 8), slice(8, 10)):
        g1, g2 = twolayer.batch_gradients(X[rows], y[rows], W1b, W2b, len(y[rows]))
        W1b -= 0.5 * g1
        W2b -= 0.5 * g2
    np.testing.assert_allclose(W1a, W1b, rtol=1e-12)
    np.testing.assert_allclose(W2a, W2b, rtol=1e-12)
    # The published epoch divides the short step by 8: a different update.
    W1c, W2c = W1.copy(), W2.copy()
    twolayer.nn_epoch_published(X, y, W1c, W2c, lr=0.5, batch=8)
    assert not np.allclose(W2c, W2a)


def test_nn_epoch_survives_logits_where_the_published_one_overflows():
    X, y, W1, W2 = separable_problem(m=8)
    W2 *= 2000.0
    W1a, W2a = W1.copy(), W2.copy()
    twolayer.nn_epoch(X, y, W1a, W2a, lr=0.01, batch=8)
    assert np.all(np.isfinite(W1a)) and np.all(np.isfinite(W2a))
    with np.errstate(over="ignore", invalid="ignore"):
        twolayer.nn_epoch_published(X, y, W1, W2, lr=0.01, batch=8)
    assert not (np.all(np.isfinite(W1)) and np.all(np.isfinite(W2)))


def test_softmax_cross_entropy_is_finite_for_huge_logits():
    X, y, W1, W2 = separable_problem(m=8)
    loss = twolayer.softmax_net(X, y, W1, W2 * 1e6)
    assert np.isfinite(loss)


# --- every correct case ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_forward_agrees_on_numpy_and_torch(name):
    case = CORRECT[name]

    @settings(max_examples=5, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case.inputs)
    def agree(inputs):
        # A forward with several outputs returns a tuple of them: each agrees.
        on_numpy = case.forward(**inputs)
        on_torch = case.forward(**as_torch(inputs))
        several = isinstance(on_numpy, tuple)
        for numpy_value, torch_value in zip(*((on_numpy, on_torch) if several else ((on_numpy,), (on_torch,))),
                                            strict=True):
            expected = np.asarray(numpy_value)
            assert isinstance(torch_value, torch.Tensor) and torch_value.numpy().dtype == expected.dtype
            # Other kernels round differently: by far less than this many units of the dtype's.
            tol = 1e-10 if expected.dtype.kind != "f" or expected.dtype == np.float64 else \
                1e3 * np.finfo(expected.dtype).eps
            np.testing.assert_allclose(torch_value.numpy(), expected, rtol=tol, atol=tol / 100)

    agree()


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_case_passes_both_oracles_on_drawn_examples(name):
    case = CORRECT[name]
    kinks = []

    @settings(max_examples=12, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case.inputs, st.integers(0, 2**31 - 1))
    def passes(inputs, seed):
        result = gradcheck.check_gradients(case.forward, case.backward, inputs, wrt=case.wrt, seed=seed)
        assert result.ok, str(result)
        assert result.oracles == ("numeric", "torch")
        kinks.extend(result.kinks)

    passes()
    for point in case.points:
        result = gradcheck.check_gradients(case.forward, case.backward, point, wrt=case.wrt)
        assert result.ok, str(result)


def test_cases_with_piecewise_forwards_meet_kinks_and_pass_there():
    net = CORRECT["twolayer.softmax_net"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 3))
    X[1] = 0.0  # a zero row: every ReLU input of that example is exactly 0
    W1 = rng.normal(size=(3, 5))
    W1[:, 2] = 0.0  # a zero column of W1
    inputs = {"X": X, "y": np.array([0, 1, 2, 1]), "W1": W1, "W2": rng.normal(size=(5, 3))}
    result = gradcheck.check_gradients(net.forward, net.backward, inputs, wrt=net.wrt)
    assert result.ok and result.kinks
    assert {k.input for k in result.kinks} == {"W1"}

    tie = CORRECT["gates.max"]
    inputs = {"x": np.array([1.0, 2.0]), "y": np.array([1.0, 0.5])}
    result = gradcheck.check_gradients(tie.forward, tie.backward, inputs)
    assert result.ok and [(k.input, k.index) for k in result.kinks] == [("x", (0,)), ("y", (0,))]


def test_every_family_of_the_notes_is_registered():
    families = {case.name.split(".")[0] for case in gradcheck_reference.CORRECT}
    assert families == {"gates", "circuits", "staged", "matmul", "twolayer", "regression",
                        "sigmoid_chain", "softplus", "complex", "multi"}
    assert all(case.description and not case.is_gallery for case in gradcheck_reference.CORRECT)
    names = [c.name for c in all_cases()]
    assert set(CORRECT) <= set(names)
