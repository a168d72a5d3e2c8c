"""Code checked in its own dtype: the forward at the point and the backward get the caller's
dtypes (float32, float16, bfloat16), the forward's overflow and precision loss are faults, and a
low-precision gradient is held to the float64 truth with a budget (``gradcheck.precision``)."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import strategies as gs
from gradcheck.precision import neighbours
from gradcheck.testing import gradient_test
from gradcheck_reference import gallery, twolayer

WRT = ("W1", "W2")


def logits_100(dtype=np.float32):
    return gallery.representative("logits100") if dtype == np.float32 else {
        k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in gallery.representative("logits100").items()}


def tensors(point, dtype=None):
    return {k: torch.from_numpy(v).to(dtype) if dtype is not None and v.dtype.kind == "f" else torch.from_numpy(v)
            for k, v in point.items()}


def scaled(factor, backward=twolayer.softmax_net_backward):
    def wrong(dout, **kw):
        return {k: (g * factor).astype(g.dtype) for k, g in backward(dout, **kw).items()}
    return wrong


# -- the forward in its own dtype -------------------------------------------------------------

@pytest.mark.parametrize("on", ["numpy", "torch, numpy backward", "torch, backward=None"])
def test_the_max_free_float32_softmax_overflows_and_its_float64_twin_passes(on):
    point = logits_100()
    assert point["W2"].dtype == np.float32
    backward = None if on.endswith("None") else twolayer.softmax_net_backward
    given_point = point if on == "numpy" else tensors(point)
    result = gradcheck.check_gradients(gallery.softmax_net_max_free, backward, given_point, wrt=WRT)
    assert not result.ok and len(result.faults) == 1, str(result)
    assert result.faults[0].startswith("forward overflows in float32 at this point; finite in float64 (e.g. nan")
    twin = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in point.items()}
    twin_given = twin if on == "numpy" else tensors(twin)
    assert gradcheck.check_gradients(gallery.softmax_net_max_free, backward, twin_given, wrt=WRT).verdict == "pass"


def cancelling(x):
    """``(x + 1e4) - 1e4``: in float32 the sum keeps 3 decimals of x (1e4's ulp is 1e-3)."""
    return (x + 1e4) - 1e4


def test_a_forward_that_loses_half_its_digits_is_a_fault_naming_the_rule():
    x = np.array([1.2345, -0.4321], dtype=np.float32)
    result = gradcheck.check_gradients(cancelling, lambda dout, x: {"x": np.asarray(dout, np.float32)}, {"x": x})
    (fault,) = result.faults
    assert fault.startswith("forward loses precision in float32 at this point: relative error")
    assert "tolerance.forward_precision_lost: eps ** FORWARD_DIGITS_KEPT" in fault
    # In float64 the same forward keeps its digits (1e4's ulp is 2e-12).
    assert gradcheck.check_gradients(cancelling, lambda dout, x: {"x": dout}, {"x": x.astype(np.float64)}).ok


def test_the_forward_at_the_point_and_the_backward_get_the_callers_dtypes():
    seen = []

    def forward(x, w):
        seen.append(("forward", type(x).__module__.split(".")[0], str(x.dtype)))
        xp = array_api_compat.array_namespace(x, w)
        return xp.sum(xp.sin(x * w))

    def backward(dout, x, w):
        seen.append(("backward", type(x).__module__.split(".")[0], str(x.dtype)))
        c = np.cos(x * w) * dout
        return {"x": c * w, "w": c * x}

    x = np.linspace(-1, 1, 4, dtype=np.float16)
    gradcheck.check_gradients(forward, backward, {"x": x, "w": x[::-1].copy()})
    assert ("forward", "numpy", "float16") in seen and ("backward", "numpy", "float16") in seen
    assert ("forward", "numpy", "float64") in seen  # the numeric oracle, on float64 copies
    seen.clear()
    gradcheck.check_gradients(forward, backward, tensors({"x": x.astype(np.float32), "w": x[::-1].copy()},
                                                         torch.bfloat16))
    assert ("forward", "torch", "torch.bfloat16") in seen
    assert ("backward", "numpy", "float32") in seen  # numpy has no bfloat16: its values, as float32


# -- the gradient's budget ----------------------------------------------------------------------

def numpy_only(X, y, W1, W2):
    """The two-layer net on numpy arrays only: no exact oracle runs it."""
    return twolayer.softmax_net(*(np.asarray(a) for a in (X, y, W1, W2)))


@pytest.mark.parametrize("forward", [twolayer.softmax_net, numpy_only],
                         ids=["torch forward", "numpy-only forward"])
def test_a_float32_backward_1e_4_off_fails(forward):
    point = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in gallery.representative("net").items()}
    assert gradcheck.check_gradients(forward, twolayer.softmax_net_backward, point, wrt=WRT).verdict == "pass"
    result = gradcheck.check_gradients(forward, scaled(1 + 1e-4), point, wrt=WRT)
    assert not result.ok and {s.name for s in result.inputs if not s.ok} == set(WRT), str(result)
    assert all(s.smallest_caught < 1e-4 for s in result.inputs)
    rule = "torch autograd's error in float32" if forward is twolayer.softmax_net else "condition_allowance"
    assert all(rule in s.budget for s in result.inputs), str(result)


@pytest.mark.parametrize("oracles", [None, ()], ids=["torch", "numeric only"])
def test_directional_mode_weighs_a_float32_gradient_by_its_budget(oracles):
    point = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in gallery.representative("net").items()}
    right = gradcheck.check_gradients(twolayer.softmax_net, twolayer.softmax_net_backward, point, wrt=WRT,
                                      mode="directional", oracles=oracles)
    assert right.verdict == "pass" and right.mode == "directional", str(right)
    wrong = gradcheck.check_gradients(twolayer.softmax_net, scaled(1 + 1e-3), point, wrt=WRT, mode="directional",
                                      oracles=oracles)
    assert not wrong.ok


def test_a_float32_budget_is_what_decides_not_a_fixed_rtol():
    """Before, float32 was held to rtol 1e-3: a backward 1e-4 off passed."""
    point = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in gallery.representative("net").items()}
    result = gradcheck.check_gradients(twolayer.softmax_net, scaled(1 + 1e-4), point, wrt=WRT)
    assert all(s.tolerance.rtol == 0.0 for s in result.inputs)
    assert "budget: 2 x torch autograd's error in float32" in str(result)
    assert "smallest relative error caught" in str(result)


@gradient_test(twolayer.softmax_net, twolayer.softmax_net_backward, wrt=WRT, examples=15, inputs={
    "X": gs.float_arrays((5, 3), dtype=np.float32, max_magnitude=3.0),
    "y": gs.labels(5, 3),
    "W1": gs.float_arrays((3, 4), dtype=np.float32, max_magnitude=2.0),
    "W2": gs.float_arrays((4, 3), dtype=np.float32, max_magnitude=2.0),
})
def test_a_correct_float32_backward_passes_on_drawn_inputs(result):
    """No false alarm: gradient_test takes a dict of strategies, here of float32 arrays."""
    assert {s.dtype for s in result.inputs} == {"float32"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_torch_forwards_with_autograd_and_with_a_numpy_backward(dtype):
    def forward(x, w):
        xp = array_api_compat.array_namespace(x, w)
        return xp.sum(xp.tanh(x * w))

    def backward(dout, x, w):
        g = (1 - np.tanh(x * w) ** 2) * dout
        return {"x": g * w, "w": g * x}

    rng = np.random.default_rng(0)
    point = {n: torch.from_numpy(rng.uniform(-2, 2, 6)).to(dtype) for n in ("x", "w")}
    name = str(dtype).removeprefix("torch.")
    for code in (None, backward):
        result = gradcheck.check_gradients(forward, code, point)
        assert result.verdict == "pass", str(result)
        assert [s.dtype for s in result.inputs] == [name, name] and all(s.budget for s in result.inputs)
    wrong = gradcheck.check_gradients(forward, lambda dout, x, w: {k: -g for k, g in backward(dout, x, w).items()},
                                      point)
    assert not wrong.ok and {m.input for m in wrong.mismatches} == {"x", "w"}


@given(st.integers(0, 2**31 - 1))
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_autograd_in_float32_passes_and_a_wrong_custom_function_fails(seed):
    class Cube(torch.autograd.Function):
        factor = 3.0

        @staticmethod
        def forward(x):
            return x**3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, dout):
            (x,) = ctx.saved_tensors
            return Cube.factor * x * x * dout

    x = torch.from_numpy(np.random.default_rng(seed).uniform(0.5, 2.0, 5)).float()
    note(f"x={x}")
    assert gradcheck.check_gradients(Cube.apply, None, {"x": x}).ok
    Cube.factor = 3.0 * (1 + 1e-3)
    assert not gradcheck.check_gradients(Cube.apply, None, {"x": x}).ok


def test_a_float32_module_is_checked_in_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x = torch.randn(5, 4)
    result = gradcheck.check_gradients(net, None, {"input": x})
    assert result.verdict == "pass", str(result)
    assert {s.name: s.dtype for s in result.inputs} == {
        "input": "float32", "_0_weight": "float32", "_0_bias": "float32", "_2_weight": "float32", "_2_bias": "float32"}
    assert "torch autograd's in the inputs' own dtypes" in str(result)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    # A closure over the float32 module cannot run in float64: differenced in float32, no fault.
    closure = gradcheck.check_gradients(lambda x: net(x), None, {"x": x})
    assert closure.verdict == "pass" and closure.inputs[0].dtype == "float32", str(closure)


# -- dtypes as given, and mixed -----------------------------------------------------------------

@pytest.mark.parametrize("value, name", [
    (torch.ones(3, dtype=torch.bfloat16), "bfloat16"),
    (torch.ones(3, dtype=torch.float16), "float16"),
    (torch.ones(3, dtype=torch.float32), "float32"),
    (np.ones(3, dtype=np.float16), "float16"),
    (np.ones(3, dtype=np.float32), "float32"),
    (np.ones(3), "float64"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_dtypes_are_reported_as_given(value, name):
    result = gradcheck.check_gradients(lambda x: (x * x).sum(), None, {"x": value})
    assert result.ok and result.inputs[0].dtype == name, str(result)
    assert bool(result.inputs[0].budget) == (name != "float64")


def test_mixed_dtypes_are_checked_and_reported_per_input():
    def forward(x, w):
        xp = array_api_compat.array_namespace(x, w)
        return xp.sum(xp.sin(x * w))

    def backward(dout, x, w):
        c = np.cos(x * w) * dout
        return {"x": (c * w).astype(x.dtype), "w": c * x}

    point = {"x": np.linspace(-1, 1, 5, dtype=np.float32), "w": np.linspace(0.5, 2, 5)}
    result = gradcheck.check_gradients(forward, backward, point)
    assert result.verdict == "pass", str(result)
    (x, w) = result.inputs
    assert (x.dtype, w.dtype) == ("float32", "float64")
    assert "float32" in x.budget and not w.budget
    assert w.tolerance.rtol == pytest.approx(1e-7)  # the float64 rule, unchanged


# -- the neighbouring points a budget is measured at ----------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_neighbours_move_each_nonzero_element_by_one_unit_in_its_dtype(dtype):
    values = np.array([1.0, -3.0, 0.0, 0.15625], dtype=np.float16 if dtype == "float16" else np.float32)
    (moved,) = neighbours({"x": values, "k": np.array([2])}, {"x": dtype}, np.random.default_rng(0), 1)
    ulp = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    step = np.abs(moved["x"].astype(np.float64) - values) / np.abs(values.astype(np.float64) + (values == 0))
    assert moved["x"].dtype == values.dtype and moved["x"][2] == 0.0 and moved["k"][0] == 2
    assert np.all((step[[0, 1, 3]] >= ulp / 2 - 1e-12) & (step[[0, 1, 3]] <= ulp + 1e-12)), step
    if dtype == "bfloat16":
        assert np.array_equal(gs.to_bfloat16(moved["x"]), moved["x"])


def test_the_neighbours_are_measured_only_where_the_budget_at_the_point_does_not_clear_the_gradient():
    """One trusted call when the gradient is within the budget measured at the point; the point
    and two neighbours (``JITTER_POINTS``) when it is not, and the largest error is used."""
    from gradcheck.inputs import prepare_inputs
    from gradcheck.precision import Computations, budgets

    prepared = prepare_inputs({"x": np.array([1.0, 2.0], dtype=np.float32)})
    truth = {"x": np.array([1.0, 1.0])}
    calls = []

    def trusted(values):
        calls.append(values["x"].copy())
        return {"x": truth["x"] + (1e-6 if len(calls) > 1 else 1e-7)}  # neighbours round worse

    def run(analytic):
        calls.clear()
        found = budgets({"x": "float32"}, prepared, {"x": analytic}, Computations(truth, trusted, "torch", None),
                        np.random.default_rng(0))
        return found["x"].allowance, len(calls)

    allowance, count = run(truth["x"] + 1e-7)
    assert count == 1 and allowance[0] == pytest.approx(2e-7 + 4 * 2.0**-23 * 2 * 2.0)
    allowance, count = run(truth["x"] + 5e-6)  # past 2e-7 + 16 ulps of |g| + rms(g) = 2.1e-6
    assert count == 3 and allowance[0] == pytest.approx(2e-6 + 4 * 2.0**-23 * 2 * 2.0)
    assert not np.array_equal(calls[1], calls[0]) and not np.array_equal(calls[2], calls[0])
