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


# -- what directional mode could have missed ---------------------------------------------------

def _linear(c):
    """``L(x) = c x_0``: the gradient is ``c e_0``, so ``|a . v| = |c| w_0`` along every +-1 direction."""

    def forward(x):
        return c * x[0]

    def backward(dout, x):
        g = np.zeros_like(x)
        g[0] = dout * c
        return {"x": g}

    return forward, backward


# (c, x): the stated size written out from the rule, by hand: each element moves by
# w_i = max(|x_i|, rms(x)), the step is h = eps^(1/3) / 4, the noise eps |L| (4 eps |L| / h of
# it in a derivative), the floor 1e-12 of the largest gradient per coordinate moved.
KNOWN = [
    (2.0, np.ones(50)),
    (-0.5, np.linspace(-3.0, 3.0, 40)),  # elements near 0 move by rms(x): the smallest w_i
    (1e3, np.full(64, 1e-3)),
    (1e-4, np.arange(1.0, 31.0)),  # x_0 = 1 is below rms(x): it moves by the rms
]


@pytest.mark.parametrize(("c", "x"), KNOWN, ids=[f"c={c:g}" for c, _ in KNOWN])
def test_the_stated_size_for_a_known_gradient_and_allowance(c, x):
    forward, backward = _linear(c)
    result = gradcheck.check_gradients(forward, backward, {"x": x}, mode="directional")
    assert result.ok, str(result)
    (summary,) = result.inputs
    eps = np.finfo(np.float64).eps
    w = np.maximum(np.abs(x), np.sqrt(np.mean(x * x)))
    h = eps ** (1 / 3) / 4
    noise = 4 * eps * abs(c * x[0]) / h
    stated = (1e-7 * (abs(c) * w[0] + noise) + 1e-12 * abs(c) * w.sum() + 3 * noise) / ((1 - 1e-7) * w.min())
    assert summary.detectable is not None
    assert summary.detectable.relative_error == pytest.approx(stated / abs(c), rel=1e-9)
    assert summary.detectable.probability == 0.999
    assert (f"a single element wrong by {summary.detectable.relative_error:.1e} or more (relative to x's largest "
            "gradient) would have been caught with probability >= 0.999") in str(result)
    assert result.to_dict()["inputs"][0]["detectable"] == {"relative_error": summary.detectable.relative_error,
                                                           "probability": 0.999}


@pytest.mark.parametrize("seed", range(6))
def test_a_single_element_wrong_by_1_5_times_the_stated_size_is_caught(seed):
    inputs = _net(seed, m=8, n=20, d=10, k=3)
    correct = gradcheck.check_gradients(_net_forward, _net_backward, inputs, mode="directional", wrt=WRT, seed=seed)
    assert correct.ok, str(correct)
    stated = {s.name: s.detectable for s in correct.inputs}
    assert all(d is not None and 0 < d.relative_error < 1e-4 for d in stated.values()), stated
    assert str(correct).count("would have been caught with probability >= 0.999") == 2
    rng = np.random.default_rng([seed, 11])
    grads = _net_backward(1.0, **inputs)
    for name in WRT:
        j = int(rng.integers(grads[name].size))
        error = rng.choice([-1.0, 1.0]) * 1.5 * stated[name].relative_error * np.max(np.abs(grads[name]))

        def planted(dout, name=name, j=j, error=error, **kw):
            g = _net_backward(dout, **kw)
            g[name] = g[name].copy()
            g[name].reshape(-1)[j] += dout * error
            return g

        result = gradcheck.check_gradients(_net_forward, planted, inputs, mode="directional", wrt=WRT, seed=seed)
        assert not result.ok, (name, j, str(result))
        assert {s.name for s in result.inputs if not s.ok} == {name}


def test_every_direction_moves_each_element_by_its_whole_scale(monkeypatch):
    from gradcheck import check
    from gradcheck.directional import DIRECTIONS
    from gradcheck.directions import Signs
    from gradcheck.evaluate import Evaluator
    from gradcheck.numeric import element_scale

    moved: list[tuple[str, np.ndarray]] = []
    signs: list[Signs] = []
    original = Evaluator.direction_values

    def spy(self, direction, steps):
        moved.extend((name, v.copy()) for name, v in direction.items())
        return original(self, direction, steps)

    class Counted(Signs):
        def __init__(self, *args):
            super().__init__(*args)
            signs.append(self)

    monkeypatch.setattr(Evaluator, "direction_values", spy)
    monkeypatch.setattr(check, "Signs", Counted)
    inputs = _net(0)
    result = gradcheck.check_gradients(_net_forward, _net_backward, inputs, mode="directional", wrt=WRT)
    assert result.ok, str(result)
    assert [name for name, _ in moved] == ["W1"] * DIRECTIONS + ["W2"] * DIRECTIONS
    for name, v in moved:
        assert np.array_equal(np.abs(v), element_scale(inputs[name])), name
    # The signs are drawn once and shared: W2 moves along the leading signs of W1's directions.
    (drawn,) = signs
    assert drawn.drawn == DIRECTIONS
    for k in range(DIRECTIONS):
        w2 = np.sign(moved[DIRECTIONS + k][1]).reshape(-1)
        assert np.array_equal(w2, np.sign(moved[k][1]).reshape(-1)[:w2.size])


def test_random_signs_are_plus_or_minus_one_balanced_and_replayable():
    from gradcheck.directions import Signs

    signs = Signs(7, 100_000)
    first = signs.vector(0, 100_000)
    assert first.dtype == np.float64 and set(np.unique(first).tolist()) == {-1.0, 1.0}
    assert abs(first.mean()) < 5 / np.sqrt(first.size)  # balanced: 5 standard deviations
    assert np.array_equal(signs.vector(0, 1000), first[:1000])  # a smaller input: the leading signs
    second = signs.vector(1, 100_000)
    assert abs(np.mean(first == second) - 0.5) < 5 * 0.5 / np.sqrt(first.size)  # independent of the first
    assert signs.drawn == 2  # each vector drawn once, however often it is used
    assert np.array_equal(Signs(7, 100_000).vector(1, 100_000), second)  # the seed replays them
    assert not np.array_equal(Signs(8, 100_000).vector(0, 100_000), first)
    with pytest.raises(ValueError, match="n=100001"):
        signs.vector(0, 100_001)


def test_directions_leave_the_working_copy_untouched():
    from gradcheck.evaluate import Evaluator

    x = np.linspace(-1.0, 2.0, 12)
    ev = Evaluator(lambda x: float(np.sum(np.sin(x))), {"x": x})
    ev.work["x"].setflags(write=False)  # the moved inputs are formed elsewhere
    v = np.random.default_rng(0).standard_normal(12)
    values = ev.direction_values({"x": v}, np.array([0.5, -0.25]))
    assert values.tolist() == [float(np.sum(np.sin(x + t * v))) for t in (0.5, -0.25)]
    assert np.array_equal(ev.work["x"], x) and ev.evaluations == 2
