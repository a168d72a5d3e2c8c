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
from gradcheck_reference._common import onehot_np, softmax_np

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


def test_a_forward_that_loses_half_its_digits_is_reported_naming_the_rule():
    x = np.array([1.2345, -0.4321], dtype=np.float32)
    result = gradcheck.check_gradients(cancelling, lambda dout, x: {"x": np.asarray(dout, np.float32)}, {"x": x})
    (note,) = [n for n in result.notes if n.startswith("forward loses precision")]
    assert note.startswith("forward loses precision in float32 at this point: relative error")
    assert "tolerance.forward_precision_lost: eps ** FORWARD_DIGITS_KEPT" in note
    assert not result.faults  # reported, not failed: the gradients decide the verdict
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
    """Before, float32 was held to rtol 1e-3: a backward 1e-4 off passed. Now its formula is held
    to float64's rtol on its float64 run, and its float32 run to that with the budget."""
    point = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in gallery.representative("net").items()}
    result = gradcheck.check_gradients(twolayer.softmax_net, scaled(1 + 1e-4), point, wrt=WRT)
    assert all(s.tolerance.rtol == pytest.approx(1e-7) for s in result.inputs)
    assert "budget: float64 run held to float64's rules; the float32 run held to it with 2 x torch autograd's " \
           "error in float32" in str(result)
    assert "smallest relative error caught" in str(result)


# -- the float32 run held to the backward's own float64 run ------------------------------------

F32 = np.float32


@pytest.mark.parametrize("point, worst, rule", [
    ({"X": np.array([[-1]], F32), "y": np.array([0]), "W1": np.array([[-1.5, -1]], F32),
      "W2": np.array([[-87.5, -59.375], [-50, -100]], F32)}, "W1[0, 0]", "float64 run held to float64's rules"),
    ({"X": np.array([[-1]], F32), "y": np.array([0]), "W1": np.array([[-1]], F32),
      "W2": np.array([[75, 62.5]], F32)}, None, "not held to float64 here: the forward loses precision"),
], ids=["p0 - 1 at 4e-4", "p0 - 1 at 4e-6"])
def test_a_saturating_float32_softmax_loses_precision_but_is_no_mismatch(point, worst, rule):
    """Shrunk from the float32 net at logit scale 50: where a class probability is 4e-4 the
    notes' ``p0 - 1`` rounds at 1's ulp, 4.9e-4 of W1[0, 0] in float32 while torch's fused
    log-softmax rounds far better. The formula is held to float64 on the backward's own float64
    run; the float32 run's distance from it is a precision note. At 4e-6 the forward itself loses
    its digits in float32: the gradients are not held to float64 at that point (as before)."""
    result = gradcheck.check_gradients(twolayer.softmax_net, twolayer.softmax_net_backward, point, wrt=WRT)
    assert result.ok, str(result)
    assert all(s.budget.startswith(rule) for s in result.inputs), str(result)
    lost = [n for n in result.notes if n.startswith("float32 run loses precision against its own float64 run")]
    if worst is not None:
        assert lost and f"worst {worst}" in lost[0], str(result)
        # The same point with the backward 1e-4 off fails, on its float64 run.
        wrong = gradcheck.check_gradients(twolayer.softmax_net, scaled(1 + 1e-4), point, wrt=WRT)
        assert not wrong.ok and all(not s.ok for s in wrong.inputs), str(wrong)


def float16_accumulator(dout, X, y, W1, W2):
    """The notes' backward whose float32 path sums dW2 = Z1^T G2 over the batch in float16."""
    grads = twolayer.softmax_net_backward(dout, X, y, W1, W2)
    if X.dtype != np.float32:
        return grads
    Z1 = np.maximum(X @ W1, 0)
    G2 = (softmax_np(Z1 @ W2) - onehot_np(y, W2.shape[1], X.dtype)) / X.shape[0]
    acc = np.zeros(W2.shape, np.float16)
    for i in range(X.shape[0]):
        acc += np.outer(Z1[i], G2[i]).astype(np.float16)
    return {**grads, "W2": dout * acc.astype(np.float32)}


def truncating_cast(dout, **inputs):
    """The notes' backward whose float32 path truncates its gradients to bfloat16's 8 bits."""
    grads = twolayer.softmax_net_backward(dout, **inputs)
    if inputs["X"].dtype != np.float32:
        return grads
    return {k: (g.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for k, g in grads.items()}


@pytest.mark.parametrize("backward, wrong", [(float16_accumulator, {"W2"}), (truncating_cast, set(WRT))],
                         ids=["float16 accumulator", "truncating cast"])
def test_a_float32_only_bug_is_a_mismatch_against_the_float64_run(backward, wrong):
    rng = np.random.default_rng(0)
    point = {"X": rng.uniform(-3, 3, (128, 3)).astype(F32), "y": rng.integers(0, 3, 128),
             "W1": rng.uniform(-2, 2, (3, 4)).astype(F32), "W2": rng.uniform(-2, 2, (4, 3)).astype(F32)}
    assert gradcheck.check_gradients(twolayer.softmax_net, twolayer.softmax_net_backward, point, wrt=WRT).ok
    result = gradcheck.check_gradients(twolayer.softmax_net, backward, point, wrt=WRT)
    assert {s.name for s in result.inputs if not s.ok} == wrong, str(result)
    assert all(m.against == ("float64 run",) for m in result.mismatches), str(result)
    assert {s.diagnosis.kind for s in result.inputs if not s.ok} == {"precision"}
    assert "float32-only bug" in str(result)


def test_a_backward_that_runs_only_in_float32_keeps_the_budget_against_the_truth():
    """Without a float64 run (it returns float32 whatever it is given) the float32 gradient is
    held to the float64 truth with its budget, as before."""
    point = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in gallery.representative("net").items()}

    def float32_only(dout, **inputs):
        return {k: g.astype(np.float32) for k, g in twolayer.softmax_net_backward(dout, **inputs).items()}

    result = gradcheck.check_gradients(twolayer.softmax_net, float32_only, point, wrt=WRT)
    assert result.ok and all(s.budget.startswith("2 x torch autograd's error") for s in result.inputs), str(result)
    assert all(s.tolerance.rtol == 0.0 for s in result.inputs)


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


def test_a_saturated_float32_softmax_is_no_false_alarm():
    """Logits 25 apart: the notes' backward computes ``p - 1`` for the true class, which rounds to
    0 in float32, where torch's fused log-softmax keeps ``-1.4e-11``. Both are correct float32
    computations: the gradient is allowed the upstream gradient's rounding at float32's roundoff
    (``tolerance.torch_rounding``), and the loss's lost digits are a note, not a fault."""
    point = {"X": np.array([[-1.0]], np.float32), "y": np.array([0]), "W1": np.array([[-1.0]], np.float32),
             "W2": np.array([[75.0, 50.0]], np.float32)}
    result = gradcheck.check_gradients(twolayer.softmax_net, twolayer.softmax_net_backward, point, wrt=("W1", "W2"))
    assert result.ok, result
    assert any(n.startswith("forward loses precision in float32") for n in result.notes)
    # The same point with the gradient of W2 wrong by 1e-4 of its size still fails.
    def off(dout, **inputs):
        grads = twolayer.softmax_net_backward(dout, **inputs)
        return {**grads, "W2": grads["W2"] * np.float32(1 + 1e-4)}
    wide = {**point, "W2": np.array([[1.0, 0.5]], np.float32)}
    assert gradcheck.check_gradients(twolayer.softmax_net, off, wide, wrt=("W1", "W2")).verdict == "fail"


@pytest.mark.parametrize(("dtype", "off"), [(torch.float16, 0.05), (torch.bfloat16, 0.3)])
def test_a_half_precision_gradient_off_by_a_few_of_its_roundings_fails(dtype, off):
    """The budget below float64 is k times autograd's error in the same dtype, not a rounding
    of the loss's size over |x| (which excused a bfloat16 gradient 100% off). The backward runs
    only in half precision (as a kernel may), so it is held by that budget alone."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(8, 6)), dtype=dtype)
    w = torch.tensor(rng.normal(size=(6, 4)) * 0.5, dtype=dtype)

    def forward(x, w):
        xp = array_api_compat.array_namespace(x, w)
        return xp.sum(xp.tanh(x @ w))

    def backward(dout, x, w, scale=1.0):
        xp = array_api_compat.array_namespace(x, w)
        if x.dtype == xp.float64:  # (a bfloat16 input reaches a numpy backward as float32 values)
            raise TypeError(f"this kernel runs in half precision only, not {x.dtype}")
        t = xp.tanh(x @ w)
        g = (1 - t * t) * dout
        return {"x": (g @ w.T) * scale, "w": (x.T @ g) * scale}

    assert gradcheck.check_gradients(forward, backward, {"x": x, "w": w}).verdict == "pass"
    wrong = gradcheck.check_gradients(forward, lambda dout, x, w: backward(dout, x, w, 1 + off), {"x": x, "w": w})
    assert wrong.verdict == "fail", str(wrong)
