"""Torch code under test with backward=None: functions of tensors, custom autograd Functions,
and modules whose parameters are checked through ``module_forward`` / ``module_case``."""

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.errors import GradcheckError
from gradcheck.torch_callables import module_case, module_forward, parameter_inputs


def _cube(scale: float) -> type:
    """A custom Function computing x**3 whose backward is ``scale * x**2`` (3 is correct)."""

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x**3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, dout):
            (x,) = ctx.saved_tensors
            return scale * x * x * dout

    return Cube


def _x(seed: int = 0, shape: tuple[int, ...] = (3, 4)) -> "torch.Tensor":
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape))


def _mlp() -> "torch.nn.Module":
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def test_function_of_tensors_passes() -> None:
    result = gradcheck.check_gradients(lambda x, w: torch.tanh(x @ w).sum(), None, {"x": _x(), "w": _x(1, (4, 2))})
    assert result.ok, str(result)
    assert result.oracles == ("numeric",)
    assert [s.name for s in result.inputs] == ["x", "w"]


def test_custom_function_is_checked_against_the_numeric_oracle() -> None:
    assert gradcheck.check_gradients(_cube(3.0).apply, None, {"x": _x()}).ok
    wrong = gradcheck.check_gradients(_cube(3.0 * (1 + 1e-5)).apply, None, {"x": _x()})
    assert not wrong.ok
    assert wrong.mismatches[0].input == "x" and wrong.mismatches[0].against == ("numeric",)


def test_module_parameters_become_named_inputs() -> None:
    net = _mlp()
    assert parameter_inputs(net) == {
        "_0_weight": "0.weight", "_0_bias": "0.bias", "_2_weight": "2.weight", "_2_bias": "2.bias"
    }
    forward, inputs = module_forward(net, {"input": _x(0, (5, 4)).float()})
    assert sorted(inputs) == ["_0_bias", "_0_weight", "_2_bias", "_2_weight", "input"]
    # Copies in their own dtype: a float32 module is checked in float32.
    assert all(v.dtype == torch.float32 for v in inputs.values())
    result = gradcheck.check_gradients(forward, None, inputs)
    assert result.ok, str(result)
    assert {s.name for s in result.inputs} == set(inputs)


def test_module_and_caller_tensors_are_not_changed() -> None:
    net = _mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = _x(0, (5, 4)).float()
    x_before = x.clone()
    forward, inputs = module_forward(net, {"input": x})
    gradcheck.check_gradients(forward, None, inputs)
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in net.state_dict().items())
    assert torch.equal(x, x_before) and x.dtype == torch.float32


def test_frozen_parameters_and_parameters_false_hold_them_constant() -> None:
    net = _mlp()
    net[0].weight.requires_grad_(False)
    assert "_0_weight" not in parameter_inputs(net)
    forward, inputs = module_forward(net, {"input": _x(0, (5, 4))})
    assert "_0_weight" not in inputs and gradcheck.check_gradients(forward, None, inputs).ok
    forward, inputs = module_forward(net, {"input": _x(0, (5, 4))}, parameters=False)
    assert list(inputs) == ["input"] and gradcheck.check_gradients(forward, None, inputs).ok


def test_module_buffers_run_in_float64() -> None:
    norm = torch.nn.BatchNorm1d(4).eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    forward, inputs = module_forward(norm, {"input": _x(0, (5, 4))})
    assert sorted(inputs) == ["bias", "input", "weight"]
    assert gradcheck.check_gradients(forward, None, inputs).ok


def test_a_wrong_custom_function_inside_a_module_is_located() -> None:
    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            return _cube(2.0).apply(x) * self.scale

    forward, inputs = module_forward(Layer(), {"x": _x()})
    result = gradcheck.check_gradients(forward, None, inputs)
    assert not result.ok
    assert {s.name for s in result.inputs if not s.ok} == {"x"}


@pytest.mark.parametrize(
    ("module", "inputs", "message"),
    [
        (lambda x: x, {"x": 1.0}, "module must be a torch.nn.Module"),
        (torch.nn.Linear(2, 2), [1.0, 2.0], "inputs must be a mapping"),
        (torch.nn.Linear(2, 2), {"weight": np.ones(2)}, "inputs ['weight'] have the names of parameters"),
    ],
)
def test_misuse_raises_gradcheck_error(module, inputs, message) -> None:
    with pytest.raises(GradcheckError) as caught:
        module_forward(module, inputs)
    assert message in str(caught.value)


def test_module_case_rejects_a_non_strategy() -> None:
    with pytest.raises(GradcheckError, match="inputs must be a Hypothesis strategy"):
        module_case("mlp", _mlp(), {"input": np.ones((2, 4))})


_MLP_CASE = module_case(
    "mlp",
    _mlp(),
    st.fixed_dictionaries(
        {"input": hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.just(4)), elements=st.floats(-2, 2))}
    ),
)


@settings(max_examples=5, deadline=None, database=None)
@given(_MLP_CASE.inputs)
def test_module_case_checks_drawn_inputs_and_the_parameters(inputs) -> None:
    note(f"input shape {tuple(inputs['input'].shape)}")
    assert _MLP_CASE.backward is None
    result = gradcheck.check_gradients(_MLP_CASE.forward, None, inputs)
    assert result.ok, str(result)
    assert {s.name for s in result.inputs} == {"input", "_0_weight", "_0_bias", "_2_weight", "_2_bias"}
