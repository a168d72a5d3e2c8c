"""Layout fuzzing: a torch callable's backward runs on transposed, narrowed, expanded and
channels-last tensors at the point; a gradient that moves with the layout is a mismatch of kind
"layout" naming the layout and the tensor, a backward that raises or a callable that mutates its
inputs there is a fault. Hypothesis runs draw one layout per example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from custom_functions import linear, pointer_input_square, pointer_square, viewed_square
from hypothesis import strategies as st

import gradcheck
from gradcheck.check import run_check
from gradcheck.errors import GradcheckError
from gradcheck.layouts import LAYOUTS, draw, lay_out
from gradcheck.options import CheckOptions
from gradcheck.runner import drive

RNG = np.random.default_rng(0)
X = torch.tensor(RNG.normal(size=(4, 3)))
W = torch.tensor(RNG.normal(size=(3, 5)))


def check(forward, inputs, layouts=None, backward=None):
    return run_check(forward, backward, inputs, CheckOptions(), layouts=layouts)


# -- the layouts themselves: same values, other strides ----------------------------------------

LAID_OUT = [
    # (layout, tensor, strides expected (None: does not apply))
    ("transposed", torch.zeros(4, 3), (1, 4)),
    ("transposed", torch.zeros(5), None),  # a vector has no transpose
    ("transposed", torch.zeros(1, 3), None),  # nor a single row: its strides would not change
    ("narrowed", torch.zeros(4, 3), (6, 1)),  # rows of a buffer 6 wide: 3 values, 3 of padding
    ("narrowed", torch.zeros(5), (1,)),  # a vector: contiguous but at an offset into the buffer
    ("expanded", torch.ones(4, 3), (0, 0)),
    ("expanded", torch.arange(3.0).expand(4, 3).clone(), (0, 1)),  # constant down the rows (as dout can be)
    ("expanded", torch.arange(12.0).reshape(4, 3), None),  # no axis along which it is constant
    ("channels_last", torch.zeros(2, 3, 2, 2), (12, 1, 6, 3)),
    ("channels_last", torch.zeros(4, 3), None),
]


@pytest.mark.parametrize("layout, tensor, strides", LAID_OUT, ids=[f"{r[0]}{tuple(r[1].shape)}" for r in LAID_OUT])
def test_a_layout_keeps_the_values_and_changes_the_strides(layout, tensor, strides):
    tensor = tensor + torch.arange(tensor.numel()).reshape(tensor.shape) * (layout != "expanded")
    laid = lay_out(torch, layout, tensor)
    if strides is None:
        assert laid is None
        return
    assert tuple(laid.stride()) == strides
    assert torch.equal(laid, tensor)
    if layout == "narrowed":
        assert laid.storage_offset() == 1  # a view into the buffer, past its padding


def test_a_narrowed_view_is_padded_with_nan():
    laid = lay_out(torch, "narrowed", torch.ones(2, 2))
    buffer = torch.as_strided(laid, (2, laid.stride(0)), (laid.stride(0), 1), 0)
    assert torch.isnan(buffer[:, 0]).all() and torch.isnan(buffer[:, 3:]).all()


# -- what the check finds ---------------------------------------------------------------------

def test_a_correct_function_passes_under_every_layout():
    result = check(linear, {"x": X, "W": W})
    assert result.ok, str(result)
    assert not any("layout" in n for n in result.notes)


def test_a_correct_4d_op_passes_channels_last():
    x = torch.tensor(RNG.normal(size=(2, 3, 2, 2)))
    result = check(lambda x: torch.tanh(x) * x, {"x": x}, layouts=("channels_last",))
    assert result.ok, str(result)


def test_a_backward_that_views_grad_output_raises_and_is_a_fault_naming_the_layout():
    result = check(viewed_square, {"x": X})
    assert not result.ok
    (fault,) = result.faults
    assert fault.startswith("backward raised RuntimeError: view size is not compatible")
    assert "when dout is transposed" in fault and "strides (1, 4)" in fault and "runs on contiguous tensors" in fault


@pytest.mark.parametrize("layout", ["transposed", "narrowed"])
def test_a_backward_reading_grad_output_as_contiguous_memory_is_a_layout_mismatch(layout):
    result = check(pointer_square, {"x": X}, layouts=(layout,))
    assert not result.ok and not result.faults
    (summary,) = result.inputs
    assert summary.diagnosis.kind == "layout"
    assert summary.diagnosis.params["layout"] == layout and summary.diagnosis.params["tensor"] == "dout"
    assert f"when dout is {'transposed' if layout == 'transposed' else 'a narrowed view'}" in summary.diagnosis.summary
    (mismatch,) = result.mismatches
    assert mismatch.against == ("contiguous",) and "contiguous" in mismatch.references
    # The truth at the element: the contiguous gradient, which the numeric oracle confirms.
    assert mismatch.references["numeric"] == pytest.approx(mismatch.references["contiguous"], rel=1e-6)
    assert "likely bug (layout)" in str(result)


def test_the_same_backward_passes_a_plain_check():
    """What torch's gradcheck sees: contiguous tensors only (the bug shows under layouts)."""
    result = check(pointer_square, {"x": X}, layouts=())
    assert result.ok, str(result)


def test_a_stride_0_dout_runs_at_a_constant_upstream_gradient():
    result = check(pointer_square, {"x": X}, layouts=("expanded",))
    assert not result.ok
    text = str(result)
    assert "expanded from one value" in text and "dout" in text


def test_a_backward_reading_its_saved_input_as_contiguous_names_the_input():
    result = check(pointer_input_square, {"x": X}, layouts=("transposed",))
    (summary,) = result.inputs
    assert summary.diagnosis.kind == "layout" and summary.diagnosis.params["tensor"] == "x"
    assert "when input 'x' is transposed" in summary.diagnosis.summary


class MutatesStrided(torch.autograd.Function):
    """``y = x**2``; the forward changes a non-contiguous input in place."""

    @staticmethod
    def forward(ctx, x):
        if not x.is_contiguous():
            x.add_(1.0)
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_output


def test_a_forward_that_mutates_an_input_under_a_layout_is_a_fault():
    result = check(MutatesStrided.apply, {"x": X}, layouts=("transposed",))
    assert result.faults == ("forward changes its input 'x' in place when input 'x' is transposed (a contiguous "
                             "copy of its transpose, transposed back) (strides (1, 4)); it runs on contiguous tensors",)


class ScalesGradOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_output.mul_(2.0)
        return x * grad_output


def test_a_backward_that_writes_into_grad_output_is_a_fault():
    result = check(ScalesGradOutput.apply, {"x": X})
    assert any(f.startswith("backward changes dout in place") for f in result.faults), result.faults


# -- numpy-API backwards given torch inputs ---------------------------------------------------

def square(x):
    return x * x


def viewing_backward(dout, x):
    """Right on numpy arrays and contiguous tensors; raises on a non-contiguous ``dout``."""
    return {"x": 2 * torch.as_tensor(x) * torch.as_tensor(dout).view(-1).reshape(x.shape)}


def numpy_backward(dout, x):
    return {"x": 2 * np.asarray(x) * np.asarray(dout)}


def test_a_backward_given_torch_inputs_runs_on_torch_tensors_under_the_layouts():
    result = check(square, {"x": X}, backward=viewing_backward)
    assert any("backward raised" in f and "when dout is" in f for f in result.faults), str(result)


def test_a_backward_given_numpy_inputs_runs_no_layouts():
    """``dout.view(-1)`` means another thing to numpy, which the check's own call gives it."""
    calls = []

    def backward(dout, x):
        calls.append(type(dout).__module__)
        return {"x": 2 * x * dout}

    result = check(square, {"x": X.numpy()}, backward=backward)
    assert result.ok, str(result)
    assert "torch" not in calls


def test_a_numpy_only_backward_given_torch_inputs_is_noted_not_faulted():
    def numpy_only(dout, x):
        if not isinstance(x, np.ndarray):
            raise TypeError("numpy arrays only")
        return numpy_backward(dout, x)

    result = check(square, {"x": X}, backward=numpy_only)
    assert result.ok, str(result)
    assert any(n.startswith("layouts not checked: the backward does not take torch tensors") for n in result.notes)


# -- Hypothesis runs draw the layout ----------------------------------------------------------

class _Data:
    def __init__(self):
        self.drawn = []

    def draw(self, strategy, label=None):
        self.drawn.append(label)
        return strategy.example()


@pytest.mark.parametrize("backward, inputs, draws", [
    (None, {"x": np.ones(2)}, ["layout"]),
    (numpy_backward, {"x": torch.ones(2)}, ["layout"]),
    (numpy_backward, {"x": np.ones(2)}, []),  # nothing drawn: numpy cases draw what they drew before
])
@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_a_layout_is_drawn_only_for_torch_callables(backward, inputs, draws):
    data = _Data()
    layout = draw(data, backward, inputs)
    assert data.drawn == draws
    assert (layout is None) == (not draws) and (layout is None or layout in LAYOUTS)


def test_a_shrunk_failure_names_the_layout_it_drew():
    case = gradcheck.Case(
        name="pointer_square", forward=pointer_square, backward=None,
        inputs=st.fixed_dictionaries({"x": st.sampled_from([X, X[:3, :2]])}),
    )
    failed = drive(case, CheckOptions(), examples=10)
    assert failed is not None
    (summary,) = failed.result.inputs
    assert summary.diagnosis.kind == "layout" and summary.diagnosis.params["layout"] in ("transposed", "narrowed")


def test_run_check_validates_the_layouts():
    with pytest.raises(GradcheckError, match="layouts must name some of"):
        check(linear, {"x": X, "W": W}, layouts=("diagonal",))
