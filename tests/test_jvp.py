"""Forward mode: a hand-written jvp (or torch's forward-mode AD) is checked along tangents against
the numeric JVP and the exact oracles', and against the backward; mismatches name the tangent and
the side that is wrong."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck
import gradcheck_reference
from gradcheck import Case
from gradcheck.options import Settings
from gradcheck.run_json import run_to_dict
from gradcheck.run_table import rows
from gradcheck.runner import RunReport, run_case
from gradcheck.strategies import float_arrays
from gradcheck.tangents import BASIS_LIMIT, RANDOM_TANGENTS
from gradcheck.testing import gradient_test


def layer(x, W):
    """tanh(x W): x (2, 3), W (3, 2) -> (2, 2); numpy-only."""
    return np.tanh(np.asarray(x) @ np.asarray(W))


def layer_backward(dout, x, W):
    g = dout * (1 - np.tanh(x @ W) ** 2)
    return {"x": g @ W.T, "W": x.T @ g}


def layer_jvp(tangents, x, W):
    """d tanh(x W) = (1 - tanh^2) (dx W + x dW)."""
    return (1 - np.tanh(x @ W) ** 2) * (tangents["x"] @ W + x @ tangents["W"])


def jvp_without_dW(tangents, x, W):
    return (1 - np.tanh(x @ W) ** 2) * (tangents["x"] @ W)


def backward_doubling_dW(dout, x, W):
    grads = layer_backward(dout, x, W)
    return {**grads, "W": 2 * grads["W"]}


RNG = np.random.default_rng(0)
INPUTS = {"x": RNG.standard_normal((2, 3)), "W": RNG.standard_normal((3, 2))}


def test_a_correct_jvp_passes_in_both_modes_at_four_evaluations_per_tangent_at_most():
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, jvp=layer_jvp)
    assert result.ok, str(result)
    assert result.modes == ("reverse", "forward")
    forward = result.forward
    # 12 elements in all: every basis direction is checked beside the random tangents.
    assert len(forward.tangents) == RANDOM_TANGENTS + 12 and BASIS_LIMIT >= 12
    assert forward.tangents[:2] == ("random 1", "random 2") and "basis W[2, 1]" in forward.tangents
    assert forward.checked == forward.compared == 4 * len(forward.tangents)
    assert forward.evaluations <= 4 * len(forward.tangents)
    assert forward.worst["numeric"] < 1e-7
    assert len(result.consistency) == len(forward.tangents) and all(c.ok for c in result.consistency)
    assert "ok   forward mode (jvp) along 15 tangents (3 random, 12 basis)" in str(result)


def test_a_jvp_missing_a_term_is_caught_and_the_forward_mode_side_named():
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, jvp=jvp_without_dW)
    assert not result.ok
    assert all(s.ok for s in result.inputs)  # the backward is right
    wrong = [m for m in result.mismatches if m.mode == "forward"]
    assert wrong and len(wrong) == result.forward.mismatches
    # The basis tangents of x leave out no term: only those moving W mismatch.
    assert {m.tangent for m in wrong} >= {"random 1", "basis W[0, 0]"}
    assert not any(m.tangent.startswith("basis x") for m in wrong)
    m = next(m for m in wrong if m.tangent == "basis W[0, 0]")
    assert m.input == "W" and m.against == ("numeric",) and m.difference > m.tolerance
    assert {c.wrong for c in result.consistency if not c.ok} == {"jvp"}
    text = str(result)
    assert "(moves x, W), output[" in text and "(disagrees with numeric)" in text
    assert "the jvp (forward-mode side) is wrong" in text


def test_a_wrong_backward_beside_a_right_jvp_is_named_as_the_reverse_mode_side():
    result = gradcheck.check_gradients(layer, backward_doubling_dW, INPUTS, jvp=layer_jvp)
    assert not result.ok and result.forward.ok
    assert {c.wrong for c in result.consistency if not c.ok} == {"backward"}
    assert "the backward (reverse-mode side) is wrong" in str(result)


def test_with_an_array_api_forward_the_exact_oracles_check_the_jvp_too():
    staged = next(c for c in gradcheck_reference.CORRECT if c.name == "staged.f_xy")
    inputs = {"x": np.array([0.5, -1.0, 2.0]), "y": np.array([1.5, 0.3, -0.7])}
    result = gradcheck.check_gradients(staged.forward, staged.backward, inputs, jvp=staged.jvp)
    assert result.ok, str(result)
    assert set(result.forward.worst) == {"numeric", "torch"} and result.forward.worst["torch"] < 1e-12
    bad = gradcheck.check_gradients(staged.forward, staged.backward, inputs,
                                    jvp=next(c for c in gradcheck_reference.GALLERY
                                             if c.name == "gallery.staged_jvp_missing_term").jvp)
    assert any(m.against == ("numeric", "torch") for m in bad.mismatches if m.mode == "forward")


@pytest.mark.parametrize("shape", [(), (1,)], ids=["0-d", "one element"])
def test_the_exact_jvp_of_a_one_element_output_is_the_gradient_along_the_tangent(shape):
    """A one-element output that is no scalar gets a random dout: the exact oracle's gradient is
    dout times the Jacobian, which the JVP taken from it undoes."""
    staged = next(c for c in gradcheck_reference.CORRECT if c.name == "staged.f_xy")
    inputs = {"x": np.full(shape, -1.0), "y": np.full(shape, -1.0)}
    result = gradcheck.check_gradients(staged.forward, staged.backward, inputs, jvp=staged.jvp, seed=2093948098)
    assert result.ok, str(result)
    assert result.forward.worst["torch"] < 1e-12


def test_a_saturated_softmax_whose_loss_rounds_to_zero_leaves_crumbs_not_mismatches():
    """logits -200 and -400: the loss is log(1 + e^-200), exactly 0 in float64; the jvp, torch and
    central differences give JVPs of 1e-85 or 0, all rounding."""
    net = next(c for c in gradcheck_reference.CORRECT if c.name == "twolayer.softmax_net")
    inputs = {"X": np.array([[-1.0]]), "y": np.array([0]), "W1": np.array([[-1.0]]), "W2": np.array([[-200.0, -400.0]])}
    result = gradcheck.check_gradients(net.forward, net.backward, inputs, wrt=net.wrt, jvp=net.jvp, seed=721283864)
    assert result.ok, str(result)
    assert result.forward.compared == len(result.forward.tangents)


def test_a_gradient_that_should_be_zero_may_carry_its_floors_rounding_into_the_consistency_check():
    """Equal logits: the loss does not move with W1, whose gradient the backward computes as -2e-19
    (rounding within its floor) and the jvp as 0."""
    net = next(c for c in gradcheck_reference.CORRECT if c.name == "twolayer.softmax_net")
    inputs = {"X": np.array([[-1.0]]), "y": np.array([0]), "W1": np.array([[-1.0]]),
              "W2": np.full((1, 3), -0.011719)}
    result = gradcheck.check_gradients(net.forward, net.backward, inputs, wrt=net.wrt, jvp=net.jvp, seed=1327813976)
    assert result.ok, str(result)
    assert all(c.ok for c in result.consistency)


def test_a_saturated_sigmoid_leaves_the_jvp_rounding_of_each_coordinate_it_moves():
    """sigmoid(23.5): 1 - f keeps 5 digits, so the jvp and torch differ by a relative 1.6e-6, the
    rounding each of the five coordinates a random tangent moves carries."""
    neuron = next(c for c in gradcheck_reference.CORRECT if c.name == "circuits.sigmoid_neuron")
    inputs = {"w": np.array([2.0, 4.0, 1.5]), "x": np.array([3.0, 4.0])}
    result = gradcheck.check_gradients(neuron.forward, neuron.backward, inputs, jvp=neuron.jvp, seed=1839700749)
    assert result.ok, str(result)
    assert 1e-7 < result.forward.worst["torch"] < 1e-5


def test_random_tangents_that_cross_a_dead_units_kinks_are_drawn_again_not_failed():
    """A zero column of W1: unit 0's ReLU inputs are exactly 0 for every example, and a random
    tangent moving W1[:, 0] switches it on for some examples on either side; the jvp's convention
    (off) is the slope of neither side. The drawn example of the report that found it."""
    net = next(c for c in gradcheck_reference.CORRECT if c.name == "twolayer.softmax_net")
    rng = np.random.default_rng(0)
    W1 = rng.uniform(-2, 2, (4, 5))
    W1[:, 0] = 0.0
    inputs = {"X": rng.uniform(-3, 3, (5, 4)), "y": np.array([1, 2, 2, 0, 2]), "W1": W1,
              "W2": rng.uniform(-800, 800, (5, 3))}
    result = gradcheck.check_gradients(net.forward, net.backward, inputs, wrt=net.wrt, jvp=net.jvp, seed=3723467899)
    assert result.ok, str(result)
    assert any("crossed a kink and were drawn again" in n for n in result.notes)
    assert len(result.forward.tangents) > RANDOM_TANGENTS


def test_the_jax_oracle_gives_the_jvp_of_an_array_api_forward():
    """Imports jax (a few seconds, once per process, as the jax oracle's own tests do)."""
    pytest.importorskip("jax")
    from gradcheck.jax_oracle import JAX

    staged = next(c for c in gradcheck_reference.CORRECT if c.name == "staged.f_xy")
    x, y = np.array([0.5, -1.0]), np.array([1.5, 0.3])
    u = {"x": np.array([1.0, -2.0])}
    found = JAX.jvp(staged.forward, {"x": x, "y": y}, u)
    expected = staged.jvp({"x": u["x"], "y": np.zeros(2)}, x, y)
    np.testing.assert_allclose(found.gradients["jvp"], expected, rtol=1e-12)
    assert JAX.jvp(layer, INPUTS, {"x": np.ones((2, 3))}).reason.startswith("forward does not run on JAX arrays")


def test_with_backward_none_a_numpy_forward_checks_forward_mode_alone():
    result = gradcheck.check_gradients(layer, None, INPUTS, jvp=layer_jvp)
    assert result.ok and result.modes == ("forward",) and result.inputs == ()
    assert result.verdict == "pass" and result.consistency == ()
    assert any("reverse mode not checked" in n for n in result.notes)
    bad = gradcheck.check_gradients(layer, None, INPUTS, jvp=jvp_without_dW)
    assert not bad.ok and bad.forward.mismatches and bad.modes == ("forward",)


class Cube(torch.autograd.Function):
    """x^3 with all three rules written by hand (the older style: ctx in forward)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * tangent


class CubeWithWrongJvp(Cube):
    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 2 * x**2 * tangent  # 2 instead of 3


def cube(x):
    return Cube.apply(x)


def wrong_cube(x):
    return CubeWithWrongJvp.apply(x)


def test_torch_forward_mode_of_a_custom_function_is_checked_against_numeric_and_reverse_mode():
    """torch's forward-mode AD loads torch's compiler stack on first use (seconds, once per process)."""
    x = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
    result = gradcheck.check_gradients(cube, None, {"x": x}, jvp=True)
    assert result.ok, str(result)
    assert result.modes == ("reverse", "forward") and result.forward.source == "torch"
    assert all(c.ok for c in result.consistency)


def test_a_custom_functions_wrong_jvp_is_caught_and_named():
    x = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
    result = gradcheck.check_gradients(wrong_cube, None, {"x": x}, jvp=True)
    assert not result.ok and all(s.ok for s in result.inputs)  # its backward is right
    # Every element a tangent moves is 2/3 of the truth: 3 per random tangent, 1 per basis one.
    assert result.forward.mismatches == 3 * 3 + 3
    assert {c.wrong for c in result.consistency} == {"jvp"}
    assert "the torch forward-mode AD (forward-mode side) is wrong" in str(result)


def test_a_hand_written_jvp_of_a_torch_forward_gets_tensors():
    seen = []

    def jvp(tangents, x):
        seen.append(type(tangents["x"]))
        return 3 * x**2 * tangents["x"]

    result = gradcheck.check_gradients(cube, None, {"x": torch.tensor([0.5, 2.0], dtype=torch.float64)}, jvp=jvp)
    assert result.ok and result.modes == ("reverse", "forward") and set(seen) == {torch.Tensor}


WITH_JVP = sorted(c.name for c in gradcheck_reference.CORRECT if c.jvp is not None)


def test_the_notes_cases_carry_their_forward_mode():
    assert set(WITH_JVP) == {"staged.f_xy", "circuits.sigmoid_neuron", "softplus.squiggle", "twolayer.softmax_net",
                             "sigmoid_chain.one_per_layer", "sigmoid_chain.wide"}


@pytest.mark.parametrize("name", WITH_JVP)
def test_reference_jvps_pass_on_drawn_examples(name):
    case = next(c for c in gradcheck_reference.CORRECT if c.name == name)

    @settings(max_examples=4, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case.inputs)
    def passes(inputs):
        result = gradcheck.check_gradients(case.forward, case.backward, inputs, wrt=case.wrt, jvp=case.jvp)
        assert result.ok, str(result)
        assert result.modes == ("reverse", "forward")

    passes()


def test_the_report_table_and_json_say_which_modes_were_checked():
    staged = next(c for c in gradcheck_reference.CORRECT if c.name == "staged.f_xy")
    reverse_only = Case("reverse_only", staged.forward, staged.backward, staged.inputs)
    settings_ = Settings(examples=2)
    report = RunReport(settings_, False, [run_case(staged, settings_), run_case(reverse_only, settings_)])
    table = {row[0]: row for row in rows(report)}
    assert "reverse+forward" in table["staged.f_xy"] and "reverse" in table["reverse_only"]
    document = run_to_dict(report)
    modes = {c["name"]: c["modes"] for c in document["cases"]}
    assert modes == {"staged.f_xy": ["reverse", "forward"], "reverse_only": ["reverse"]}
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, jvp=jvp_without_dW)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["modes"] == ["reverse", "forward"] and data["forward"]["mismatches"] > 0
    assert {c["wrong"] for c in data["consistency"] if not c["ok"]} == {"jvp"}
    assert any(m["mode"] == "forward" and m["tangent"] for m in data["mismatches"])


def test_the_gallery_jvp_bug_is_noted_in_the_table():
    case = next(c for c in gradcheck_reference.GALLERY if c.name == "gallery.staged_jvp_missing_term")
    run = run_case(case, Settings(examples=2))
    assert run.verdict == "caught"
    (row,) = rows(RunReport(Settings(examples=2), True, [run]))
    assert row[-1].startswith("forward mode:") and "the jvp is wrong" in row[-1]


def test_the_fixture_and_assert_gradients_take_the_jvp(gradcheck):
    assert gradcheck.check(layer, layer_backward, INPUTS, jvp=layer_jvp).modes == ("reverse", "forward")
    assert gradcheck.assert_gradients(layer, layer_backward, INPUTS, jvp=layer_jvp).modes == ("reverse", "forward")
    # The failing call goes through the module's function: the fixture would count it in the
    # run's summary as a failed check.
    with pytest.raises(gradcheck.GradientMismatch, match="forward-mode side"):
        sys.modules["gradcheck"].assert_gradients(layer, layer_backward, INPUTS, jvp=jvp_without_dW)


@gradient_test(layer, layer_backward, jvp=layer_jvp, examples=3,
               inputs={"x": float_arrays((2, 3), max_magnitude=2.0), "W": float_arrays((3, 2), max_magnitude=2.0)})
def test_gradient_test_takes_a_jvp(result):
    assert result.modes == ("reverse", "forward") and result.forward.ok


def test_a_case_carries_its_jvp_into_gradient_test():
    case = Case("layer", layer, layer_backward, {"x": st.just(INPUTS["x"]), "W": st.just(INPUTS["W"])},
                jvp=layer_jvp)
    assert case.jvp is layer_jvp
    with pytest.raises(gradcheck.GradcheckError, match="takes the case's own backward, inputs, wrt and jvp"):
        gradient_test(case, jvp=layer_jvp)
