"""Nondeterminism, measured: the backward runs at least ``REPEATS`` times at the point, up to
``MAX_REPEATS`` when the runs differ; a rounding-level spread is reported and added to the
allowance, a larger one (or any, with ``deterministic=True``) is a fault. The forward likewise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from custom_functions import linear, racy_linear, shuffled_linear

import gradcheck
from gradcheck.tolerance import MAX_REPEATS, REPEATS

RNG = np.random.default_rng(2)
X = torch.tensor(RNG.normal(size=(6, 3)))
W = torch.tensor(RNG.normal(size=(3, 4)))


@pytest.fixture(autouse=True)
def seeded_torch():
    """The random orders and races below draw from torch's generator: the same ones every run."""
    torch.manual_seed(0)


def test_a_correct_backward_summing_in_a_random_order_passes_and_is_reported():
    result = gradcheck.check_gradients(shuffled_linear, None, {"x": X, "W": W})
    assert result.ok, str(result)
    (note,) = [n for n in result.notes if n.startswith("backward nondeterministic")]
    assert note.endswith(f"over {MAX_REPEATS} runs") and "relative spread" in note
    spread = {s.name: s.tolerance.spread for s in result.inputs}
    assert spread["W"] > 0 and spread["x"] == 0  # only dW is summed in a random order


def test_with_deterministic_true_a_rounding_level_spread_is_a_fault():
    result = gradcheck.check_gradients(shuffled_linear, None, {"x": X, "W": W}, deterministic=True)
    assert not result.ok
    assert any(f.startswith("backward is nondeterministic") and "deterministic=True" in f for f in result.faults)


def test_a_real_nondeterminism_bug_fails_though_each_run_is_close_enough():
    result = gradcheck.check_gradients(racy_linear, None, {"x": X, "W": W})
    assert not result.ok
    (fault,) = result.faults
    assert fault.startswith("backward is nondeterministic: relative spread") and "beyond rounding" in fault
    assert all(s.ok for s in result.inputs)  # one run alone is within the oracles' tolerance


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_deterministic_backward_passes_either_way(deterministic):
    result = gradcheck.check_gradients(linear, None, {"x": X, "W": W}, deterministic=deterministic)
    assert result.ok, str(result)
    assert not any("nondeterministic" in n for n in result.notes)


def counted(shuffle):
    """A numpy backward of ``sum(x**3)`` counting its calls; with ``shuffle`` it sums its terms
    in a random order (the gradient of ``s = sum(x) * x``, which adds every element)."""
    calls = []

    def backward(dout, x):
        calls.append(1)
        order = np.random.default_rng(len(calls)).permutation(x.size) if shuffle else np.arange(x.size)
        total = 0.0
        for i in order:
            total += x.reshape(-1)[i]
        return {"x": dout * (total + x * 0 + x)}

    return backward, calls


def total_times_x(x):
    return 0.5 * (x.sum() * x.sum() + (x * x).sum())


@pytest.mark.parametrize("shuffle, runs", [(False, REPEATS), (True, MAX_REPEATS)])
def test_the_backward_runs_three_times_and_more_when_the_runs_differ(shuffle, runs):
    backward, calls = counted(shuffle)
    x = np.random.default_rng(3).normal(size=40) * 1e3
    result = gradcheck.check_gradients(total_times_x, backward, {"x": x})
    assert result.ok, str(result)
    assert len(calls) == runs  # a scalar loss: no structured upstream gradients


def test_deterministic_true_on_a_numpy_backward_summing_in_a_random_order_is_a_fault():
    backward, calls = counted(True)
    x = np.random.default_rng(3).normal(size=40) * 1e3
    result = gradcheck.check_gradients(total_times_x, backward, {"x": x}, deterministic=True)
    assert any(f.startswith("backward is nondeterministic") and "deterministic=True" in f for f in result.faults)
    assert len(calls) == MAX_REPEATS


def test_deterministic_true_on_a_deterministic_numpy_backward_passes():
    backward, calls = counted(False)
    result = gradcheck.check_gradients(total_times_x, backward, {"x": np.linspace(-1, 1, 5)}, deterministic=True)
    assert result.ok, str(result)
    assert len(calls) == REPEATS


def shuffled_sum(x):
    """``sum(x**2)`` in a random order: a forward that rounds differently from call to call."""
    terms = (x * x).reshape(-1)
    return terms[torch.randperm(terms.numel())].cumsum(0)[-1]


def noisy_forward(x):
    """``x**2`` with noise of a relative 1e-6: a forward that is really nondeterministic."""
    return x * x * (1 + 1e-6 * torch.rand(x.shape, dtype=x.dtype))


def test_a_forward_nondeterministic_by_rounding_is_reported():
    x = torch.tensor(np.random.default_rng(4).normal(size=200))
    result = gradcheck.check_gradients(shuffled_sum, None, {"x": x})
    assert result.ok, str(result)
    assert any(n.startswith("forward nondeterministic: relative spread") and n.endswith("(rounding: allowed)")
               for n in result.notes)
    strict = gradcheck.check_gradients(shuffled_sum, None, {"x": x}, deterministic=True)
    assert strict.faults[0].startswith("forward is nondeterministic") and "deterministic=True" in strict.faults[0]


def test_a_forward_nondeterministic_beyond_rounding_is_a_fault():
    result = gradcheck.check_gradients(noisy_forward, None, {"x": X})
    assert not result.ok
    assert "nondeterministic" in result.faults[0]


def test_a_forward_that_changes_only_at_its_third_call_is_caught_by_the_repeats():
    """The point's own two calls agree; the repeats' third call is what shows it."""
    calls = []

    def drifting(x):
        calls.append(1)
        return x * x * (1 + 1e-6 * (len(calls) >= 3))

    result = gradcheck.check_gradients(drifting, None, {"x": X})
    assert not result.ok
    assert result.faults[0].startswith("forward is nondeterministic: relative spread") and "beyond rounding" in \
        result.faults[0]


@pytest.mark.parametrize("seed", range(6))
def test_a_float32_backward_summing_many_cancelling_terms_in_a_random_order_passes(seed):
    """In float32 a sum of 256 terms of both signs, reordered, moves by far more than ulps of its
    result: the runs' spread and the structured upstream gradients are held to the rounding of
    the terms summed at float32's roundoff, not float64's."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(256, 4)), dtype=torch.float32)
    w = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32)
    result = gradcheck.check_gradients(shuffled_linear, None, {"x": x, "W": w}, seed=seed)
    assert result.ok, str(result)
