"""Second order (``order=2``): autograd's double backward of a torch callable, with respect to its
inputs and ``dout``, and hand-written Hessian-vector products, each checked against central
differences of the first-order gradient; backwards autograd cannot differentiate are named."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import gradcheck
import gradcheck_reference
from gradcheck import run_json, run_table, runner, second_order, tolerance
from gradcheck.inputs import prepare_inputs
from gradcheck.options import Settings, order_of
from gradcheck.report import header_lines
from gradcheck.strategies import float_arrays

RNG = np.random.default_rng(0)


def relu_net(X, W1, W2):
    """A torch callable with ReLU kinks: sum((relu(X W1) W2)^2) / 2."""
    return ((torch.relu(X @ W1) @ W2) ** 2).sum() / 2


def net_point(kinks: bool) -> dict[str, np.ndarray]:
    X, W1, W2 = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 5)), RNG.normal(size=(5, 2))
    if kinks:
        X[1] = 0.0  # every hidden unit of example 1 sits at its kink
        W1[:, 2] = 0.0  # and unit 2 of every example
    return {"X": X, "W1": W1, "W2": W2}


def cube_function(backward):
    """x^3 as a custom autograd Function with the given ``backward(ctx, grad)``."""

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

    Cube.backward = staticmethod(backward)
    return Cube.apply


def _saved(ctx):
    return ctx.saved_tensors[0]


RIGHT = cube_function(lambda ctx, g: 3 * _saved(ctx) ** 2 * g)
X3 = np.array([0.5, -1.2, 2.0, 0.7])


# --- a torch callable: autograd's double backward ----------------------------------------------


@pytest.mark.parametrize("kinks", [False, True], ids=["away from kinks", "at ReLU kinks"])
def test_a_correct_double_backward_passes_at_and_away_from_relu_kinks(kinks):
    result = gradcheck.check_gradients(relu_net, None, net_point(kinks), order=2)
    assert result.ok, str(result)
    assert result.modes == ("reverse", "second order") and result.second_order is not None
    assert [s.name for s in result.second_order.inputs] == ["X", "W1", "W2", "dout"]
    assert (len(result.kinks) > 0) == kinks, str(result)  # where the gradient jumps, no false alarm


def test_a_custom_function_with_a_differentiable_backward_passes_with_an_array_output():
    result = gradcheck.check_gradients(RIGHT, None, {"x": X3}, order=2)
    assert result.ok, str(result)
    dout = next(s for s in result.second_order.inputs if s.name == "dout")
    assert dout.shape == (4,) and dout.compared == 4


@pytest.mark.parametrize(("backward", "named"), [
    (lambda ctx, g: (3 * _saved(ctx) ** 2 * g).detach(), "the gradient of x's gradient has no graph"),
    (lambda ctx, g: torch.from_numpy(3 * _saved(ctx).detach().numpy() ** 2 * g.detach().numpy()),
     "the gradient of x's gradient has no graph (a .detach() or a numpy call in the backward?)"),
    (lambda ctx, g: torch.from_numpy(3 * _saved(ctx).detach().numpy() ** 2 * g.numpy()),
     "autograd's gradient with create_graph=True raised RuntimeError"),
    (torch.autograd.function.once_differentiable(lambda ctx, g: 3 * _saved(ctx) ** 2 * g),
     "a backward marked once_differentiable"),
], ids=["detach", "numpy after detach", "numpy on the graph", "once_differentiable"])
def test_a_backward_autograd_cannot_differentiate_is_a_named_fault(backward, named):
    result = gradcheck.check_gradients(cube_function(backward), None, {"x": X3}, order=2)
    assert gradcheck.check_gradients(cube_function(backward), None, {"x": X3}).ok  # first order: right
    assert not result.ok and result.second_order is not None
    (fault,) = result.second_order.faults
    assert fault.startswith(second_order.NOT_DIFFERENTIABLE + ":") and named in fault, fault
    assert f"FAULT {fault}" in str(result)


def test_a_wrong_second_derivative_is_a_mismatch_with_its_likely_bug():
    half = cube_function(lambda ctx, g: 3 * _saved(ctx) * _saved(ctx).detach() * g)  # d/dx misses a term
    result = gradcheck.check_gradients(half, None, {"x": X3}, order=2)
    assert gradcheck.check_gradients(half, None, {"x": X3}).ok
    second = result.second_order
    assert not result.ok and second is not None and not second.faults
    wrong = {s.name: s for s in second.inputs if not s.ok}
    assert set(wrong) == {"x"} and wrong["x"].diagnosis.kind == "scale", str(result)


def test_the_derivative_with_respect_to_dout_is_checked():
    """``g.detach()`` in the backward: d/dx of the gradient is right, d/d(dout) is lost."""
    result = gradcheck.check_gradients(cube_function(lambda ctx, g: 3 * _saved(ctx) ** 2 * g.detach()), None,
                                       {"x": X3}, order=2)
    assert not result.ok
    assert [s.name for s in result.second_order.inputs if not s.ok] == ["dout"], str(result)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dout_takes_the_inputs_precision(dtype):
    """A float32 forward's derivatives with respect to dout are float32 arithmetic: dout is
    float32 too, and held to float32's rule."""
    x = torch.tensor(np.linspace(-1, 1, 5), dtype=dtype)
    result = gradcheck.check_gradients(lambda x: torch.tanh(x) ** 2, None, {"x": x}, order=2)
    assert result.ok, str(result)
    assert {s.name: s.dtype for s in result.second_order.inputs} == {"x": str(x.numpy().dtype),
                                                                     "dout": str(x.numpy().dtype)}


def test_an_input_named_dout_keeps_its_name():
    result = gradcheck.check_gradients(lambda dout: (dout**3).sum(), None, {"dout": X3}, order=2)
    assert result.ok and [s.name for s in result.second_order.inputs] == ["dout", "dout_"]


def test_order_1_checks_the_first_order_alone():
    result = gradcheck.check_gradients(RIGHT, None, {"x": X3})
    assert result.modes == ("reverse",) and result.second_order is None
    assert "second order" not in str(result) and result.to_dict()["modes"] == ["reverse"]


def test_the_second_order_is_reported_in_text_and_json():
    result = gradcheck.check_gradients(RIGHT, None, {"x": X3}, order=2)
    text = str(result)
    assert text.startswith("gradcheck PASS: ") and "modes reverse+second order;" in text.splitlines()[0]
    assert "\n  second order PASS:" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["modes"] == ["reverse", "second order"] and data["second_order"]["verdict"] == "pass"
    assert [i["name"] for i in data["second_order"]["inputs"]] == ["x", "dout"]


def test_a_first_order_fault_leaves_the_second_order_unchecked():
    def fails(x):
        raise ValueError("no")

    result = gradcheck.check_gradients(fails, None, {"x": X3}, order=2)
    assert not result.ok and result.second_order is None
    assert "second order not checked: the first order has faults" in result.notes


# --- a hand-written Hessian-vector product ------------------------------------------------------


def quartic(x, A):
    """sum((A x)^4) / 4 for x (n,), A (n, n) held constant: H = A^T diag(3 (A x)^2) A."""
    return ((A @ x) ** 4).sum() / 4


def quartic_backward(dout, x, A):
    return {"x": dout * A.T @ (A @ x) ** 3}


def quartic_hvp(vectors, x, A):
    return {"x": A.T @ (3 * (A @ x) ** 2 * (A @ vectors["x"]))}


def quartic_hvp_transposed(vectors, x, A):
    """A^T and A swapped: (A^T)^T D A^T v, the Hessian of another function."""
    return {"x": A @ (3 * (A @ x) ** 2 * (A.T @ vectors["x"]))}


QUARTIC = {"x": np.array([0.3, -0.8, 1.1]), "A": np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.5], [0.0, 0.3, 2.0]])}


def test_a_right_hvp_passes_against_the_backward_and_torch():
    result = gradcheck.check_gradients(quartic, quartic_backward, QUARTIC, wrt="x", order=2, hvp=quartic_hvp)
    assert result.ok, str(result)
    assert result.second_order.oracles == ("numeric", "torch") and not result.second_order.faults


def test_a_transposed_hvp_is_caught():
    result = gradcheck.check_gradients(quartic, quartic_backward, QUARTIC, wrt="x", order=2,
                                       hvp=quartic_hvp_transposed)
    assert not result.ok and gradcheck.check_gradients(quartic, quartic_backward, QUARTIC, wrt="x").ok
    (wrong,) = [s for s in result.second_order.inputs if not s.ok]
    assert wrong.name == "x" and {m.against for m in result.second_order.mismatches} == {("numeric", "torch")}


def test_an_hvp_of_a_numpy_forward_is_checked_against_the_backward_alone():
    result = gradcheck.check_gradients(lambda x, A: float(quartic(np.asarray(x), A)), quartic_backward, QUARTIC,
                                       wrt="x", order=2, hvp=quartic_hvp)
    assert result.ok and result.second_order.oracles == ("numeric",), str(result)


def test_an_hvp_of_a_torch_forward_is_checked_against_autograds_gradient():
    result = gradcheck.check_gradients(lambda x, A: ((A @ x) ** 4).sum() / 4, None,
                                       {k: torch.from_numpy(v) for k, v in QUARTIC.items()}, wrt="x", order=2,
                                       hvp=quartic_hvp)
    assert result.ok, str(result)
    assert "hvp against central differences of autograd's gradient" in str(result)


def test_torch_on_the_other_side_of_a_kink_is_a_disagreement_not_a_mismatch():
    """X W1 sums to 0 for hidden unit 4 in torch, and to 6e-22 in numpy where BLAS fuses the
    multiply-adds: the unit's mixed second derivatives with W2 differ between the sides, and
    differences in W2 do not cross the kink. The hvp agrees with the backward's differences."""
    net = next(c for c in gradcheck_reference.CORRECT if c.name == "twolayer.softmax_net")
    point = {"X": np.array([[-0.01, -0.01]]), "y": np.array([0]),
             "W1": np.array([[-1.0, -1.0, -1.0, -1.0, -0.01], [-1.0, -1.0, -1.0, -1.0, 0.01]]),
             "W2": np.array([[-1.0, -1.0]] * 4 + [[-0.01, -0.01]])}
    result = gradcheck.check_gradients(net.forward, net.backward, point, wrt=net.wrt, order=2, hvp=net.hvp)
    assert result.ok, str(result)
    second = result.second_order
    apart = [d for d in second.disagreements if "torch" in d.values]
    assert not apart or any("on whose sides numpy and torch may differ" in n for n in second.notes)


@pytest.mark.parametrize(("ujv", "vju", "errors", "loss", "asymmetric"), [
    (1.0, 1.0 + 0.9e-6, 0.0, 0.0, False),  # within the fit tolerance (1e-6 of the larger)
    (1.0, 1.0 + 1.1e-6, 0.0, 0.0, True),
    (1.0, 1.1, 0.2, 0.0, False),  # within the Richardson errors
    (1e-20, 3e-20, 0.0, 1.0, False),  # below 64 roundoff units of the loss
    (1e-12, 3e-12, 0.0, 1.0, True),
])
def test_the_symmetry_limit(ujv, vju, errors, loss, asymmetric):
    eps = float(np.finfo(np.float64).eps)
    assert (abs(ujv - vju) > tolerance.symmetry_limit(ujv, vju, errors, loss, eps)) == asymmetric


@pytest.mark.parametrize(("value", "error", "resolved"), [(1.0, 1e-3, True), (1.0, 1.1e-3, False),
                                                          (0.0, 0.0, True), (float("nan"), 0.0, False)])
def test_a_directional_derivative_is_measured_when_its_error_is_small(value, error, resolved):
    assert tolerance.symmetry_resolved(value, error) == resolved


HVP_CASES = [c for c in gradcheck_reference.CORRECT if c.hvp is not None]


def test_the_reference_families_carry_hvps():
    assert {c.name for c in HVP_CASES} >= {"circuits.sigmoid_neuron", "staged.f_xy_sum", "softplus.squiggle",
                                           "twolayer.softmax_net", "sigmoid_chain.one_per_layer",
                                           "sigmoid_chain.wide"}


@pytest.mark.parametrize("case", HVP_CASES, ids=lambda c: c.name)
def test_every_reference_hvp_passes_on_drawn_examples_and_its_points(case):
    @settings(max_examples=8, deadline=None, database=None, derandomize=True)
    @given(case.inputs, st.integers(0, 2**31 - 1))
    def passes(inputs, seed):
        result = gradcheck.check_gradients(case.forward, case.backward, inputs, wrt=case.wrt, seed=seed,
                                           order=case.order, hvp=case.hvp)
        assert result.ok, str(result)
        assert result.second_order is not None and result.second_order.oracles == ("numeric", "torch")

    passes()
    for point in case.points:
        assert gradcheck.check_gradients(case.forward, case.backward, point, wrt=case.wrt, order=2,
                                         hvp=case.hvp).ok


def rotation_backward(dout, x, A):
    """Not the gradient of anything: its Jacobian, [[0, 1], [-1, 0]], is not symmetric."""
    return {"x": dout * np.array([x[1], -x[0]])}


def test_a_backward_that_is_no_gradient_fails_the_symmetry_test():
    inputs = {"x": np.array([0.4, 1.3]), "A": np.eye(2)}
    result = gradcheck.check_gradients(lambda x, A: x[0] * x[1], rotation_backward, inputs, wrt="x", order=2,
                                       hvp=lambda vectors, x, A: {"x": np.array([vectors["x"][1], -vectors["x"][0]])})
    faults = result.second_order.faults
    assert any(f.startswith("the backward is not the gradient of anything: its Jacobian is not symmetric")
               for f in faults), str(result)


@settings(max_examples=8)
@given(x=float_arrays((3,), max_magnitude=2.0), A=float_arrays((3, 3), max_magnitude=2.0))
def test_the_symmetry_test_passes_every_gradient(x, A):
    """No false alarm: the Jacobian of a true gradient is its Hessian, symmetric at any point."""
    inputs = {"x": x, "A": A}
    note(inputs)
    gradient = second_order.backward_gradient(quartic, quartic_backward, ("x",))
    prepared = prepare_inputs(inputs)
    assert second_order.symmetry_fault(quartic, gradient, prepared, ("x",), seed=0) is None


# --- the order of a check in a run ----------------------------------------------------------------


ORDER_RULE = [  # (given for the check, the run's order, a hand-written backward, an hvp) -> order
    (None, 1, False, False, 1),
    (None, 2, False, False, 2),  # a torch callable: the run's order
    (None, 2, True, False, 1),  # a numpy backward without hvp cannot be checked at order 2
    (None, 2, True, True, 2),
    (2, 1, False, False, 2),  # given for the check: its own
    (1, 2, False, False, 1),
]


@pytest.mark.parametrize(("given_order", "run", "hand_written", "with_hvp", "order"), ORDER_RULE)
def test_a_run_checks_the_second_order_where_a_check_can(given_order, run, hand_written, with_hvp, order):
    backward = quartic_backward if hand_written else None
    hvp = quartic_hvp if with_hvp else None
    assert order_of(given_order, Settings(order=run), backward=backward, hvp=hvp) == order


def test_the_report_runs_a_torch_case_at_the_runs_order():
    case = gradcheck.Case("torch.cube", RIGHT, None, {"x": st.just(X3)})
    at_two = runner.run_case(case, Settings(examples=1, order=2))
    assert at_two.ok and at_two.modes == ("reverse", "second order")
    assert run_json.case_to_dict(at_two)["modes"] == ["reverse", "second order"]
    report = runner.RunReport(Settings(order=2), False, [at_two])
    assert run_table.rows(report)[0][2:4] == ("numeric", "reverse+second order")
    assert runner.run_case(case, Settings(examples=1)).modes == ("reverse",)


def test_a_failing_second_order_is_the_reports_note():
    case = gradcheck.Case("torch.cube_detached", cube_function(lambda ctx, g: (3 * _saved(ctx) ** 2 * g).detach()),
                          None, {"x": st.just(X3)}, order=2)
    run = runner.run_case(case, Settings(examples=1))
    assert run.verdict == "FAIL"
    assert run_table.note(run).startswith("second order: fault: backward is not differentiable")


def test_the_pytest_header_says_the_runs_order():
    assert header_lines(Settings(order=2))[0].endswith(", order 2 where a check can")
    assert "order" not in header_lines(Settings())[0]


@pytest.mark.parametrize(("mode", "limit", "expected"), [
    ("auto", 8, "full"),  # x (3,) and dout (3,): 6 elements, within the limit
    ("auto", 6, "full"),  # up to the limit included
    ("auto", 5, "directional"),
    ("full", 5, "full"),  # a mode given is kept
    ("directional", 8, "directional"),
])
def test_the_second_order_checks_every_element_up_to_its_limit(monkeypatch, mode, limit, expected):
    monkeypatch.setattr(second_order, "SECOND_ORDER_FULL_LIMIT", limit)
    result = gradcheck.check_gradients(RIGHT, None, {"x": X3[:3]}, order=2, mode=mode)
    assert result.ok and result.second_order.mode == expected


def test_gradient_test_takes_the_order_and_the_hvp():
    decorated = gradcheck.gradient_test(quartic, quartic_backward, inputs={"x": st.just(QUARTIC["x"]),
                                                                           "A": st.just(QUARTIC["A"])},
                                        wrt="x", order=2, hvp=quartic_hvp_transposed, examples=1)
    def test_quartic():
        """A transposed hvp fails the test, with the second order's report."""

    with pytest.raises(pytest.fail.Exception, match="second order FAIL"):
        decorated(test_quartic)(request=_Request())


class _Config:
    stash: ClassVar[dict] = {}


class _Request:
    """What ``gradient_test``'s test reads of pytest's ``request`` outside a pytest run."""

    config = _Config()
    node = None
