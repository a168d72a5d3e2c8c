"""The project's layer norm, guarded by gradcheck in the three ways a test suite can use it."""

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.testing import gradient_test
from gradcheck.torch_callables import module_forward
from mylayer import LayerNorm, LayerNormFunction, layer_norm, layer_norm_backward

# Values on a grid of 0.001: no tiny or subnormal numbers, whose gradients drown in rounding.
values = st.floats(-3, 3).map(lambda v: round(v, 3))


@st.composite
def layer_norm_inputs(draw):
    """x of shape (rows, d) and gamma, beta of shape (d,), with 1 <= rows <= 4, 2 <= d <= 6."""
    rows, d = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    return {
        "x": draw(hnp.arrays(np.float64, (rows, d), elements=values)),
        "gamma": draw(hnp.arrays(np.float64, (d,), elements=values)),
        "beta": draw(hnp.arrays(np.float64, (d,), elements=values)),
    }


def fixed_inputs(seed=0, shape=(3, 5)):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=shape), "gamma": rng.normal(size=shape[-1]), "beta": rng.normal(size=shape[-1])}


# 1. The decorator: a Hypothesis-driven test in one line (plus its docstring).
@gradient_test(layer_norm, layer_norm_backward, inputs=layer_norm_inputs())
def test_backward_on_drawn_inputs(result):
    """The hand-written backward agrees with the numeric oracle and torch autograd."""
    assert result.oracles == ("numeric", "torch")


# 2. The fixture: the run's --gradcheck-seed and tolerances, counted in the summary.
def test_backward_with_the_fixture(gradcheck):
    gradcheck.assert_gradients(layer_norm, layer_norm_backward, fixed_inputs())


def test_a_batch_of_sequences(gradcheck):
    gradcheck.assert_gradients(layer_norm, layer_norm_backward, fixed_inputs(1, shape=(2, 3, 4)))


# 3. Plain assert_gradients, with nothing from the plugin.
def test_backward_with_assert_gradients():
    result = gradcheck.assert_gradients(layer_norm, layer_norm_backward, fixed_inputs(2))
    assert [s.name for s in result.inputs] == ["x", "gamma", "beta"]


def test_a_wrong_backward_is_caught():
    def forgets_the_mean_term(dout, x, gamma, beta):
        grads = layer_norm_backward(dout, x, gamma, beta)
        xc = x - x.mean(axis=-1, keepdims=True)
        rstd = 1 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + 1e-5)
        grads["x"] = grads["x"] + rstd * (dout * gamma).mean(axis=-1, keepdims=True)
        return grads

    with pytest.raises(gradcheck.GradientMismatch) as caught:
        gradcheck.assert_gradients(layer_norm, forgets_the_mean_term, fixed_inputs(3))
    assert [s.name for s in caught.value.result.inputs if not s.ok] == ["x"]


# The custom autograd Function and the module: backward=None checks autograd's gradient.
def test_custom_function(gradcheck):
    gradcheck.assert_gradients(LayerNormFunction.apply, None, fixed_inputs(4))


def test_module_with_its_parameters(gradcheck):
    torch.manual_seed(0)
    module = LayerNorm(5)
    with torch.no_grad():
        module.gamma.normal_()
        module.beta.normal_()
    forward, inputs = module_forward(module, {"x": torch.randn(3, 5)})
    result = gradcheck.assert_gradients(forward, None, inputs)
    assert sorted(s.name for s in result.inputs) == ["beta", "gamma", "x"]
