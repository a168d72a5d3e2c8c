"""Verdicts that never over-claim: layouts, empty shapes, kinks and ties, and what was compared.

Each test here failed on the engine before its rule existed: a wrong verdict (a missed bug or a
false alarm), an exception where a shape is legitimate, or a pass that counted elements it never
compared.
"""

from __future__ import annotations

import json

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import strategies as gs
from gradcheck.numeric import kink_range
from gradcheck.ties import check_ties

torch = pytest.importorskip("torch")


def sin_sum(x):
    xp = array_api_compat.array_namespace(x)
    return xp.sum(xp.sin(x))


def sin_sum_backward(dout, x):
    return {"x": dout * np.cos(x)}


def zeros_backward(dout, x):
    return {"x": np.zeros_like(x)}


# -- A: every perturbation reaches the forward, whatever the caller's layout ------------------

BASE = np.random.default_rng(0).normal(size=(4, 6))
LAYOUTS = [
    pytest.param(np.asfortranarray(BASE), id="fortran"),
    pytest.param(BASE.T, id="transposed"),
    pytest.param(BASE[:, ::2], id="strided-slice"),
    pytest.param(BASE[1:3, 1:5], id="sub-block"),
]


@pytest.mark.parametrize("x", LAYOUTS)
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_layout_of_the_input_changes_no_verdict(x, mode):
    assert not x.flags.c_contiguous
    right = gradcheck.check_gradients(sin_sum, sin_sum_backward, {"x": x}, mode=mode)
    assert right.verdict == "pass", str(right)
    wrong = gradcheck.check_gradients(sin_sum, zeros_backward, {"x": x}, mode=mode)
    assert wrong.verdict == "fail", str(wrong)


@pytest.mark.parametrize("make", [lambda t: t.t(), lambda t: t[:, ::2], lambda t: t.expand(3, 4, 4)[1]],
                         ids=["transposed", "strided", "expanded"])
def test_layout_of_a_torch_input_changes_no_verdict(make):
    x = make(torch.randn(4, 4, dtype=torch.float64))
    result = gradcheck.check_gradients(torch.sin, None, {"x": x})
    assert result.verdict == "pass", str(result)
    worst = result.inputs[0].worst["numeric"]
    assert worst is not None and worst < 1e-6


def test_numeric_gradient_of_a_fortran_array():
    x = np.asfortranarray(BASE)
    got = gradcheck.numeric_gradient(sin_sum, {"x": x})["x"]
    np.testing.assert_allclose(got, np.cos(x), rtol=1e-8)


# -- B: empty inputs and outputs are shapes, not errors ----------------------------------------

def matmul(a, b):
    return a @ b


def matmul_backward(dout, a, b):
    return {"a": dout @ b.T, "b": a.T @ dout}


EMPTY = [
    pytest.param({"a": np.zeros((0, 5)), "b": np.ones((5, 3))}, id="empty-rows"),
    pytest.param({"a": np.ones((3, 0)), "b": np.ones((0, 4))}, id="empty-inner"),
    pytest.param({"a": np.ones((2, 5)), "b": np.ones((5, 0))}, id="empty-output"),
]


@pytest.mark.parametrize("inputs", EMPTY)
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_empty_shapes_are_inconclusive_not_errors(inputs, mode):
    for forward, backward, given_inputs in (
        (matmul, matmul_backward, inputs),
        (matmul, None, {k: torch.from_numpy(v) for k, v in inputs.items()}),
    ):
        result = gradcheck.check_gradients(forward, backward, given_inputs, mode=mode)
        assert result.ok and result.verdict == "inconclusive", str(result)
        text = str(result)
        assert text.startswith("gradcheck INCONCLUSIVE")
        assert "match" not in text  # no element is said to match
        assert result.to_dict()["verdict"] == "inconclusive"


def test_empty_output_still_catches_a_backward_that_is_not_zero():
    def backward(dout, a, b):
        return {"a": np.ones_like(a), "b": np.ones_like(b)}

    result = gradcheck.check_gradients(matmul, backward, {"a": np.ones((2, 5)), "b": np.ones((5, 0))})
    assert result.verdict == "fail"
    assert result.evaluations == 0  # an empty output needs no differences


# -- C, D, E: torch values the oracles must take or refuse clearly ----------------------------

def test_zero_tensor_gradient_from_autograd():
    result = gradcheck.check_gradients(torch.sgn, None, {"x": torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)})
    assert result.verdict == "pass", str(result)


def test_bfloat16_output_is_checked_not_a_fault():
    def forward(x):
        return torch.sin(x).to(torch.bfloat16)

    result = gradcheck.check_gradients(forward, None, {"x": torch.linspace(-1, 1, 5, dtype=torch.float64)})
    assert not result.faults, str(result)
    assert result.verdict == "pass", str(result)


@pytest.mark.parametrize("make", [lambda: torch.eye(3, dtype=torch.float64).to_sparse(),
                                  lambda: torch.eye(3, dtype=torch.float64).to_sparse_csr()],
                         ids=["coo", "csr"])
def test_sparse_input_is_misuse(make):
    with pytest.raises(gradcheck.GradcheckError, match=r"input 'x' is a torch.sparse.*to_dense"):
        gradcheck.check_gradients(torch.sin, None, {"x": make()})


# -- 3: a kink does not excuse any value ------------------------------------------------------

def relu_sum(x):
    return np.maximum(x, 0).sum()


def const_backward(value):
    def backward(dout, x):
        return {"x": np.zeros_like(x) + value}
    return backward


# (forward, analytic at the kink, point, verdict, why)
KINK_RULES = [
    (relu_sum, 123.0, np.zeros(5), "fail", "far outside the slopes 0 | 1"),
    (relu_sum, -40.0, np.zeros(5), "fail", "the sign flipped, and far out"),
    (relu_sum, 0.0, np.zeros(5), "pass", "relu'(0) = 0, the x > 0 convention"),
    (relu_sum, 1.0, np.zeros(5), "pass", "relu'(0) = 1, the x >= 0 convention"),
    (relu_sum, 0.5, np.zeros(5), "pass", "a blend of the slopes"),
    (lambda x: np.abs(x).sum(), 0.0, np.zeros(3), "pass", "sign(0) = 0 for |x|"),
    (lambda x: np.abs(x).sum(), 20.0, np.zeros(3), "fail", "far outside -1 | 1"),
    (lambda x: float(np.sum(3 * x + np.maximum(x, 0))), 3.5, np.zeros(3), "pass", "3x + relu(x): between 3 and 4"),
    (lambda x: float(np.sum(3 * x + np.maximum(x, 0))), 200.0, np.zeros(3), "fail", "3x + relu(x): far beyond"),
]


@pytest.mark.parametrize("forward, value, x, verdict, why", KINK_RULES, ids=[r[-1] for r in KINK_RULES])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_gradient_at_a_kink_lies_between_the_one_sided_slopes(forward, value, x, verdict, why, mode):
    result = gradcheck.check_gradients(forward, const_backward(value), {"x": x}, mode=mode)
    assert result.verdict == verdict, why + "\n" + str(result)
    if verdict == "fail" and mode == "full":
        shown = result.mismatches[0]
        assert shown.slopes is not None and "numeric" not in shown.references
        assert "outside the one-sided slopes" in str(result)


def test_abs_with_a_sign_backward_reports_the_kink():
    """The second-difference jump test: |x| at 0 is a kink, not a mismatch of sign(x) = 0."""
    result = gradcheck.check_gradients(lambda x: np.abs(x).sum(), lambda dout, x: {"x": dout * np.sign(x)},
                                       {"x": np.array([0.0, 1.5, -2.0])})
    assert result.verdict == "pass", str(result)
    assert [k.index for k in result.kinks] == [(0,)]
    assert result.inputs[0].compared == 2 and result.inputs[0].kinks == 1


def test_a_dead_unit_is_no_false_alarm_in_full_mode():
    """Every example's ReLU input for unit 0 is 0: each element's slopes mix the examples, and
    the x > 0 convention gives 0, outside them; it is a correct gradient all the same."""
    rng = np.random.default_rng(3)
    X, G = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    W = rng.normal(size=(4, 3))
    W[:, 0] = 0.0

    def forward(W):
        return float(np.sum(np.maximum(X @ W, 0) * G))

    for convention in (lambda z: z > 0, lambda z: z >= 0):
        def backward(dout, W, convention=convention):
            return {"W": X.T @ (convention(X @ W) * G) * dout}

        result = gradcheck.check_gradients(forward, backward, {"W": W}, mode="full")
        assert result.verdict == "pass", str(result)


@given(left=st.floats(-5, 5), right=st.floats(-5, 5))
@settings(max_examples=50, deadline=None)
def test_kink_range_holds_the_slopes_zero_and_their_sum(left, right):
    low, high = kink_range(left, right)
    for value in (left, right, 0.0, left + right, (left + right) / 2):
        assert low <= value <= high


# -- 3: ties couple elements -----------------------------------------------------------------

def max_of(x):
    xp = array_api_compat.array_namespace(x)
    return xp.max(x)


def to_every_tied_max(dout, x):
    return {"x": dout * (x == x.max()).astype(float)}


def to_first_tied_max(dout, x):
    g = np.zeros_like(x)
    g[np.argmax(x)] = dout
    return {"x": g}


def pooled(x):
    """Max over windows of 2 along the last axis, summed with weights."""
    return float(np.sum(x.reshape(-1, 2).max(axis=1) * np.arange(1, x.size // 2 + 1)))


def pooled_backward(first_only):
    def backward(dout, x):
        pairs = x.reshape(-1, 2)
        w = np.arange(1, x.size // 2 + 1)[:, None] * dout
        mask = (pairs == pairs.max(axis=1, keepdims=True)).astype(float)
        if first_only:
            mask[:, 1] = np.where(mask[:, 0] == 1, 0.0, mask[:, 1])
        return {"x": (mask * w).reshape(x.shape)}
    return backward


TIES = [
    (max_of, to_every_tied_max, np.array([1.0, 1.0, 0.5]), "fail", "the whole gradient to both tied maxima"),
    (max_of, to_first_tied_max, np.array([1.0, 1.0, 0.5]), "pass", "the first tied maximum takes it"),
    (max_of, to_every_tied_max, np.array([2.0, 2.0, 2.0, 2.0]), "fail", "four-way tie"),
    (pooled, pooled_backward(False), np.array([1.0, 1.0, 3.0, -2.0, 0.5, 0.5]), "fail", "max-pool ties"),
    (pooled, pooled_backward(True), np.array([1.0, 1.0, 3.0, -2.0, 0.5, 0.5]), "pass", "max-pool, one per tie"),
    (relu_sum, const_backward(1.0), np.zeros(4), "pass", "separate kinks are not a tie"),
    (lambda x: np.maximum(x[0], 0) - np.maximum(x[1], 0), lambda dout, x: {"x": np.array([1.0, 0.0])},
     np.zeros(2), "pass", "mixed conventions on separate kinks"),
]


@pytest.mark.parametrize("forward, backward, x, verdict, why", TIES, ids=[r[-1] for r in TIES])
def test_tied_elements_are_moved_together(forward, backward, x, verdict, why):
    result = gradcheck.check_gradients(forward, backward, {"x": x}, mode="full")
    assert result.verdict == verdict, why + "\n" + str(result)
    if verdict == "fail":
        tie = [m for m in result.mismatches if m.tied]
        assert tie and "tied: moved together" in str(result)


def test_a_tie_across_two_inputs():
    """gates.max's notes write 1(x >= y) and 1(y >= x): at x == y both get the gradient."""
    def both(dout, x, y):
        return {"x": dout * (x >= y), "y": dout * (y >= x)}

    def one(dout, x, y):
        return {"x": dout * (x >= y), "y": dout * (y > x)}

    inputs = {"x": np.array([0.0, 1.0, 2.0]), "y": np.array([0.0, 3.0, 2.0])}
    def forward(x, y):
        return np.maximum(x, y).sum()

    assert gradcheck.check_gradients(forward, both, inputs).verdict == "fail"
    assert gradcheck.check_gradients(forward, one, inputs).verdict == "pass"


def test_check_ties_needs_two_elements_and_makes_four_evaluations():
    from gradcheck.evaluate import Evaluator
    from gradcheck.result import Tolerance

    ev = Evaluator(lambda x: float(np.max(x)), {"x": np.array([1.0, 1.0, 0.0])})
    f0 = ev.value()
    flat = {"x": np.array([0.01, 0.01, 0.01])}
    args = dict(steps=flat, left={"x": np.zeros(3)}, right={"x": np.ones(3)},
                analytic={"x": np.array([1.0, 1.0, 0.0])}, shapes={"x": (3,)}, tol=Tolerance(1e-7, None, 1e-12))
    assert check_ties(ev, f0, 1e-16, {"x": np.array([0])}, **args) == []
    before = ev.evaluations
    moves = check_ties(ev, f0, 1e-16, {"x": np.array([0, 1])}, **args)
    assert ev.evaluations - before == 4
    assert len(moves) == 1 and moves[0].judged and moves[0].mismatch is not None
    assert moves[0].low == pytest.approx(1.0) and moves[0].high == pytest.approx(1.0)
    assert np.array_equal(ev.work["x"], [1.0, 1.0, 0.0])  # the point is restored


# -- 4, 5: what was compared, in comparable units ---------------------------------------------

def test_counts_keep_kinks_apart_from_compared_elements():
    x = np.array([0.0, 0.0, 1.0, -2.0, 3.0])
    result = gradcheck.check_gradients(relu_sum, lambda dout, x: {"x": dout * (x > 0)}, {"x": x})
    s = result.inputs[0]
    assert (s.checked, s.compared, s.kinks) == (5, 3, 2)
    assert "3 elements match, 2 at kinks, held to their one-sided slopes" in str(result)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["inputs"][0]["compared"] == 3 and data["verdict"] == "pass"


def test_mismatch_line_shows_the_difference_and_the_allowance_in_one_unit():
    x = np.linspace(0.1, 1.0, 4)
    result = gradcheck.check_gradients(sin_sum, lambda dout, x: {"x": 1.5 * dout * np.cos(x)}, {"x": x},
                                       rtol=0.2)
    for m in result.mismatches:
        reference = m.references["torch" if "torch" in m.against else "numeric"]
        assert m.difference == pytest.approx(abs(m.analytic - reference))
        assert m.difference > m.tolerance  # a listed mismatch exceeds what it was allowed
    assert "off by " in str(result) and "rel. error" not in str(result).split("\n", 2)[2]


@given(x=gs.float_arrays((3,), min_magnitude=0.1, max_magnitude=2.0),
       factor=st.floats(0.05, 0.5))
@settings(max_examples=20, deadline=None)
def test_every_listed_mismatch_exceeds_its_allowance(x, factor):
    result = gradcheck.check_gradients(sin_sum, lambda dout, x: {"x": (1 + factor) * dout * np.cos(x)},
                                       {"x": x}, rtol=factor / 4)
    assert result.verdict == "fail"
    assert all(m.difference > m.tolerance for m in result.mismatches)


# -- 10, 11, 12: messages in our words, misuse as misuse ---------------------------------------

def test_numpy_only_forward_gets_one_line_of_our_own():
    result = gradcheck.check_gradients(lambda x: np.sin(x).sum(), sin_sum_backward, {"x": BASE}, oracles=["torch"])
    (note,) = [n for n in result.notes if n.startswith("torch oracle not used")]
    assert note == ("torch oracle not used: forward is numpy-only; write it against the array API "
                    "to add the torch oracle")
    assert "\n" not in str(result).split("note:")[1].strip()
    assert "numpy()" in result.oracle_errors["torch"]  # the original error, on request


@pytest.mark.parametrize("inputs, pattern", [
    ({"x": np.ones(3), "extra": np.ones(2)}, r"forward .*\(x\) cannot take the inputs.*'extra'"),
    ({"y": np.ones(3)}, r"forward .*\(x\) cannot take the inputs"),
])
def test_inputs_that_do_not_fit_the_forward_are_misuse(inputs, pattern):
    with pytest.raises(gradcheck.GradcheckError, match=pattern):
        gradcheck.check_gradients(lambda x: (x * x).sum(), lambda dout, **kw: {}, inputs)


def test_inputs_that_do_not_fit_the_backward_are_misuse():
    with pytest.raises(gradcheck.GradcheckError, match=r"backward .* cannot take the inputs"):
        gradcheck.check_gradients(lambda x: (x * x).sum(), lambda dout, y: {}, {"x": np.ones(3)})


def test_a_users_own_module_subclass_is_checked_with_its_parameters():
    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 2))

        def forward(self, input):
            return torch.tanh(input @ self.weight)

    result = gradcheck.check_gradients(Affine(), None, {"input": torch.randn(4, 3)})
    assert result.verdict == "pass", str(result)
    assert [s.name for s in result.inputs] == ["input", "weight"]


def test_numpy_scalars_keep_their_dtype():
    result = gradcheck.check_gradients(lambda x: x * x, lambda dout, x: {"x": 2 * x * dout}, {"x": np.float32(1.5)})
    assert result.inputs[0].dtype == "float32"


def test_noise_measurement_counts_as_evaluations():
    """The noise probe is part of the check's cost and of its progress."""
    stages = []
    result = gradcheck.check_gradients(lambda x: float(np.sum(np.abs(x))), lambda dout, x: {"x": np.sign(x)},
                                       {"x": np.array([0.0, 1.0, -2.0])}, progress=lambda p: stages.append(p.stage))
    assert "noise" in stages
    # 2 per element, the refinement of the kink (2), the noise probe (48) and the tie move (none: one kink).
    assert result.evaluations >= 2 * 3 + 2 + 48


def test_a_gradient_near_the_slopes_of_several_coincident_kinks_is_no_false_alarm():
    """ReLU inputs at exactly 0 in several examples at once (integer data and weights): an
    element's one-sided slopes mix the examples, and the correct gradient lies outside them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import relu_net

    flagged, outside = 0, 0
    for seed in range(8):
        inputs = relu_net.inputs(seed, m=6, n=5, d=7, k=3)
        inputs["X"] = np.round(inputs["X"])  # integers, and weights in halves: ReLU inputs at 0
        inputs["W1"] = np.round(inputs["W1"] * 2) / 2
        result = gradcheck.check_gradients(relu_net.forward, relu_net.backward, inputs, wrt=relu_net.WRT,
                                           mode="full", seed=seed)
        flagged += not result.ok
        # Kinks whose correct gradient lies outside the range the slopes allow: the case at hand.
        for k in result.kinks:
            low, high = kink_range(k.left, k.right)
            outside += not low - 1e-9 <= k.analytic <= high + 1e-9
    assert flagged == 0
    assert outside > 0  # the data does put correct gradients beyond their slopes
