"""Directional mode: sensitivity, localization, kinks, and the mode the result reports."""

import numpy as np
import pytest
from relu_net import WRT
from relu_net import backward as _net_backward
from relu_net import forward as _net_forward
from relu_net import inputs as _net

import gradcheck
from gradcheck.registry import load_entry_points


@pytest.mark.parametrize("seed", range(5))
def test_correct_relu_net_passes(seed):
    result = gradcheck.check_gradients(_net_forward, _net_backward, _net(seed), mode="directional", wrt=WRT)
    assert result.ok, str(result)
    assert result.mode == "directional"
    assert all(s.checked >= 1 for s in result.inputs)


@pytest.mark.parametrize("seed", range(3))
def test_relative_error_of_1e_6_is_caught(seed):
    def scaled(dout, **kw):
        return {k: v * (1 + 1e-6) for k, v in _net_backward(dout, **kw).items()}

    result = gradcheck.check_gradients(_net_forward, scaled, _net(seed), mode="directional", wrt=WRT)
    assert not result.ok
    assert {s.name for s in result.inputs if not s.ok} == {"W1", "W2"}


def test_single_wrong_element_is_localized():
    def one_wrong(dout, **kw):
        grads = _net_backward(dout, **kw)
        grads["W1"][7, 3] *= 1.5
        return grads

    inputs = _net(0)
    assert abs(_net_backward(1.0, **inputs)["W1"][7, 3]) > 1e-4  # the planted error is visible
    result = gradcheck.check_gradients(_net_forward, one_wrong, inputs, mode="directional", wrt=WRT)
    assert not result.ok
    assert [(m.input, m.index) for m in result.mismatches] == [("W1", (7, 3))]
    m = result.mismatches[0]
    assert m.references["numeric"] == pytest.approx(m.analytic / 1.5, rel=1e-5)


def test_kink_at_the_point_is_no_false_alarm():
    inputs = _net(1)
    inputs["W1"][:, 4] = 0.0  # hidden unit 4 sits exactly at the ReLU kink for every example
    result = gradcheck.check_gradients(_net_forward, _net_backward, inputs, mode="directional", wrt=WRT)
    assert result.ok, str(result)
    assert result.kinks and all(k.input == "W1" and k.index[1] == 4 for k in result.kinks)


def test_wrong_element_is_found_beside_a_kink_at_the_point():
    inputs = _net(3)
    inputs["W1"][:, 4] = 0.0  # every random direction crosses this unit's kink
    grads = _net_backward(1.0, **inputs)
    i, j = np.unravel_index(np.argmax(np.abs(grads["W1"])), grads["W1"].shape)

    def one_wrong(dout, **kw):
        g = _net_backward(dout, **kw)
        g["W1"] = g["W1"].copy()
        g["W1"][i, j] *= 1.01
        return g

    result = gradcheck.check_gradients(_net_forward, one_wrong, inputs, mode="directional", wrt=WRT)
    assert not result.ok
    assert [(m.input, m.index) for m in result.mismatches] == [("W1", (i, j))]
    assert any("W1[:, 4] (40 element(s)) sit at it and were left out" in n for n in result.notes), result.notes
    assert all(k.index[1] == 4 for k in result.kinks)
    correct = gradcheck.check_gradients(_net_forward, _net_backward, inputs, mode="directional", wrt=WRT)
    assert correct.ok, str(correct)


def test_kinks_in_every_slice_are_no_false_alarm():
    inputs = _net(4, m=6, n=10, d=5, k=3)
    rng = np.random.default_rng(4)
    W1 = rng.integers(-8, 9, size=(10, 5)) / 16.0  # dyadic: the sums below are exact
    W1[-1] = -W1[:-1].sum(axis=0)
    inputs["W1"] = W1
    inputs["X"][0] = 1.0  # example 0 puts every hidden unit exactly at its kink
    assert np.all(inputs["X"][0] @ W1 == 0.0)
    result = gradcheck.check_gradients(_net_forward, _net_backward, inputs, mode="directional", wrt=WRT)
    assert result.ok, str(result)
    assert any("no few slices of the input hold it" in n for n in result.notes), result.notes


def test_auto_picks_directional_for_large_inputs():
    inputs = _net(2, m=8, n=200, d=120, k=3)  # 24,360 parameters
    result = gradcheck.check_gradients(_net_forward, _net_backward, inputs, wrt=WRT)
    assert result.mode == "directional"
    assert result.ok, str(result)
    assert result.evaluations < 500
    small = gradcheck.check_gradients(_net_forward, _net_backward, _net(2, m=4, n=5, d=3, k=2), wrt=WRT)
    assert small.mode == "full"


def test_directions_through_kinks_at_the_point_are_no_false_alarm():
    # A three-layer ReLU net where units sit exactly at 0 (Hypothesis found it): random
    # directions through those kinks fail unless the kinks are found and left out.
    case = next(c for c in load_entry_points() if c.name == "twolayer.llayer_relu")
    inputs = {
        "X": np.array([[-0.01, -0.01], [-0.01, -0.01], [-0.01, 0.01], [-0.01, -0.01]]),
        "y": np.array([0, 0, 0, 0]),
        "W1": np.array([[-0.01, 0.01], [0.01, -0.01]]),
        "W2": np.array([[0.01, -0.01], [-0.01, -0.01]]),
        "W3": np.array([[0.01, -0.01], [-0.01, -0.01]]),
    }
    for seed in range(5):
        result = gradcheck.check_gradients(case.forward, case.backward, inputs, wrt=case.wrt, mode="directional",
                                           seed=seed)
        assert result.ok, str(result)
        assert result.kinks


def _saturated(x):
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    return xp.log(1 + xp.sum(xp.exp(x - 500)))  # 1 + 1e-217 rounds to 1: flat in float64


def _saturated_backward(dout, x):
    e = np.exp(x - 500)
    return {"x": dout * e / (1 + e.sum())}


def test_numeric_that_cannot_resolve_a_saturated_loss_is_no_false_alarm():
    x = np.random.default_rng(0).standard_normal(50)
    result = gradcheck.check_gradients(_saturated, _saturated_backward, {"x": x}, mode="directional")
    assert result.oracles == ("numeric", "torch")
    assert result.ok, str(result)
    assert any("disagrees with both the backward and torch" in n for n in result.notes), result.notes
    assert gradcheck.check_gradients(_saturated, _saturated_backward, {"x": x}, mode="full").ok


def test_full_mode_reports_a_flat_loss_as_an_oracle_disagreement():
    # Full mode: the exact oracle confirms the backward where central differences see nothing.
    x = np.random.default_rng(1).standard_normal(6) + 460  # exp(x - 500) ~ 1e-17: 1 + sum rounds to 1
    result = gradcheck.check_gradients(_saturated, _saturated_backward, {"x": x}, mode="full")
    assert result.ok, str(result)
    assert result.disagreements and all(d.values["numeric"] == 0 for d in result.disagreements)
    assert "central differences see a flat loss" in str(result)
    # The worst error against numeric leaves out the elements where it is the oracle that fails.
    assert result.inputs[0].worst["numeric"] is None


@pytest.mark.parametrize("x", [np.float64(0.0), np.zeros(5)], ids=["scalar", "vector"])
def test_an_input_entirely_at_kinks_is_reported_not_failed(x):
    result = gradcheck.check_gradients(
        lambda x: float(np.maximum(x, 0).sum()),
        lambda dout, x: {"x": dout * (np.asarray(x) > 0).astype(float)},
        {"x": x}, mode="directional",
    )
    assert result.ok, str(result)
    assert len(result.kinks) == np.size(x)
    assert "x: every element sits at a kink at the point; none can be compared" in result.notes
