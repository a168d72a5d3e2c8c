"""reference=: a reference implementation as an exact oracle in float64, and the low-dtype budget
(the forward's error at most ``reference_factor`` times the reference's own error in that dtype,
floored at a few roundoff units: ``tolerance.low_precision_allowance``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcheck
from gradcheck.reference_oracle import Finding, _finding
from gradcheck.tolerance import LOW_PRECISION_FACTOR, low_precision_allowance


def matvec(x, w):
    """The reference: ``x @ w`` (torch accumulates low dtypes in float32)."""
    return x @ w


class MatVec(torch.autograd.Function):
    """``x @ w`` with a hand-written backward; ``NARROW`` accumulates ``dw`` in the inputs'
    dtype, one row at a time, as a kernel with a bfloat16 accumulator would."""

    NARROW = False

    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @classmethod
    def backward(cls, ctx, dout):
        x, w = ctx.saved_tensors
        if not cls.NARROW:
            return dout[:, None] * w, x.T @ dout
        dw = torch.zeros_like(w)
        for i in range(x.shape[0]):
            dw = dw + dout[i] * x[i]  # rounded to x's dtype after every row
        return dout[:, None] * w, dw


class NarrowMatVec(MatVec):
    NARROW = True


class Doubled(MatVec):
    """A wrong backward: ``dw`` twice the truth."""

    @staticmethod
    def backward(ctx, dout):
        x, w = ctx.saved_tensors
        return dout[:, None] * w, 2 * (x.T @ dout)


def reference_faults(result):
    """The faults of the low-dtype comparison (the check's other findings aside)."""
    return [f for f in result.faults if "x the reference's error in" in f]


def inputs(dtype=torch.float64, rows=64, cols=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, cols, generator=g, dtype=torch.float64) + 1
    w = torch.randn(cols, generator=g, dtype=torch.float64)
    return {"x": x.to(dtype), "w": w.to(dtype)}


def test_the_reference_is_an_exact_oracle_named_reference():
    result = gradcheck.check_gradients(Doubled.apply, None, inputs(rows=4), reference=matvec)
    assert result.oracles == ("numeric", "reference")
    assert not result.ok and {m.input for m in result.mismatches} == {"w"}
    assert all("reference" in m.against and "reference" in m.references for m in result.mismatches)
    assert gradcheck.check_gradients(MatVec.apply, None, inputs(rows=4), reference=matvec).ok


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_a_correct_function_is_within_twice_its_reference_in_each_low_dtype(dtype):
    result = gradcheck.check_gradients(MatVec.apply, None, inputs(dtype), reference=matvec)
    assert result.ok, str(result)
    name = str(dtype).removeprefix("torch.")
    assert [s.dtype for s in result.inputs] == [name, name]
    assert any(n.startswith(f"reference in {name}: the forward's gradients and output are within 2 x")
               for n in result.notes)


def summed(op):
    """The op's outputs summed to a scalar loss: ``dw`` then sums the rows of ``x`` (all in
    [1, 2)), so a bfloat16 accumulator drifts far beyond rounding once it passes 256."""
    return lambda x, w: op(x, w).sum()


@pytest.mark.parametrize("seed", range(3))
def test_a_bfloat16_accumulator_is_caught_where_float64_sees_nothing(seed):
    given = inputs(torch.bfloat16, rows=256, seed=seed)
    bf16 = gradcheck.check_gradients(summed(NarrowMatVec.apply), None, given, reference=summed(matvec), wrt="w")
    assert not bf16.ok and not bf16.mismatches  # in float64 the narrow accumulator is float64: right
    (fault,) = bf16.faults
    assert fault.startswith("gradient of 'w' in bfloat16: ")
    assert "elements beyond 2 x the reference's error in bfloat16; worst w[" in fault
    assert "the forward's error" in fault and "the reference's" in fault and "allowed" in fault
    assert gradcheck.check_gradients(summed(NarrowMatVec.apply), None, inputs(rows=256, seed=seed),
                                     reference=summed(matvec), wrt="w").ok
    assert gradcheck.check_gradients(summed(MatVec.apply), None, given, reference=summed(matvec), wrt="w").ok


class ShuffledMatVec(MatVec):
    """``dw`` summed over the rows in a new random order each call, as atomic adds land: correct,
    but not reproducible bit for bit."""

    @staticmethod
    def backward(ctx, dout):
        x, w = ctx.saved_tensors
        order = torch.randperm(x.shape[0])
        return dout[:, None] * w, x[order].T @ dout[order]


@pytest.mark.parametrize("seed", [2, 19, 25, 27])
def test_a_summation_order_that_changes_from_call_to_call_is_no_false_alarm(seed):
    """Its rounding differs from the reference's element by element, at these seeds by more than
    twice the reference's somewhere among dw's 8 elements (a budget floored at ulps of |dw| alone
    flags them); the floor at ulps of the magnitudes summed into each element holds it. The
    comparison alone, so that the shuffles it sees do not depend on the rest of the check."""
    from gradcheck.inputs import prepare_inputs
    from gradcheck.reference_oracle import low_precision

    given = inputs(torch.float32, rows=256, seed=seed)
    dout = np.random.default_rng(seed).standard_normal(256)
    torch.manual_seed(seed)
    found = low_precision(ShuffledMatVec.apply, matvec, given, prepare_inputs(given), ("w",), dout, (256,))
    assert not found.faults, found.faults
    assert found.note().startswith("reference in float32: the forward's gradients and output are within 2 x")


def test_the_check_runs_the_comparison_of_a_shuffled_summation():
    torch.manual_seed(0)
    result = gradcheck.check_gradients(ShuffledMatVec.apply, None, inputs(torch.float32, rows=256), reference=matvec,
                                       wrt="w")
    assert not reference_faults(result), str(result)
    assert any(n.startswith("reference in float32: ") for n in result.notes)


# The budget of one element: (forward's error, reference's error, |truth|, factor) -> allowed.
BUDGETS = [
    ("twice the reference's error", 3e-3, 1e-3, 0.0, None, 2e-3),
    ("the factor given", 3e-3, 1e-3, 0.0, 4.0, 4e-3),
    ("the ulps floor where the reference rounds exactly", 1e-3, 0.0, 1.0, None, 4 * 2.0**-7),
]


@pytest.mark.parametrize(("what", "error", "reference_error", "truth", "factor", "allowed"), BUDGETS,
                         ids=[b[0] for b in BUDGETS])
def test_the_budget_is_the_shared_low_precision_rule(what, error, reference_error, truth, factor, allowed):
    t = torch.tensor([truth], dtype=torch.float64)
    found = _finding("x", torch, (t + error).to(torch.bfloat16).to(torch.float64).to(torch.bfloat16),
                     t + reference_error, t, (1,), LOW_PRECISION_FACTOR if factor is None else factor)
    measured = abs(float((t + error).to(torch.bfloat16)) - truth)
    rule = low_precision_allowance(np.array([reference_error]), np.array([truth]), eps=2.0**-7, factor=factor)[0]
    assert found.allowed == pytest.approx(rule) and rule == pytest.approx(allowed, rel=1e-2)
    assert found.error == pytest.approx(measured) and found.failed == int(measured > rule)
    assert found.dtype == "bfloat16"


def test_a_finding_names_the_element_the_errors_and_the_budget():
    found = Finding("w", "bfloat16", 3, 8, (5,), 1.5, 1.25, 1.2578125, 0.25, 0.0078, 0.05, 2.0)
    assert found.fault() == (
        "gradient of 'w' in bfloat16: 3/8 elements beyond 2 x the reference's error in bfloat16; worst w[5]: "
        "forward 1.5, reference 1.25781 in bfloat16 and 1.25 in float64; the forward's error 0.25, the "
        "reference's 0.0078, allowed 0.05")


def test_a_forward_whose_float64_output_differs_from_the_reference_is_a_fault():
    result = gradcheck.check_gradients(lambda x: x.sin().sum(), None, {"x": torch.ones(3, dtype=torch.float64)},
                                       reference=lambda x: x.cos().sum())
    assert not result.ok and result.oracles == ("numeric",)
    assert result.faults[0].startswith("forward's output differs from the reference's in float64 at output: "
                                       "forward 2.52441, reference 1.62091")


def test_low_dtype_inputs_keep_the_callers_strides():
    seen = []

    def forward(x):
        seen.append((x.dtype, x.stride()))
        return (x * x).sum()

    x = torch.arange(12.0).reshape(4, 3).t()  # float32, strides (1, 3)
    assert gradcheck.check_gradients(forward, None, {"x": x}, reference=lambda x: (x * x).sum()).ok
    assert (torch.float32, (1, 3)) in seen
    sliced = torch.arange(16.0, dtype=torch.float16).reshape(2, 8)[:, ::2]  # strides (8, 2)
    assert gradcheck.check_gradients(forward, None, {"x": sliced}, reference=lambda x: (x * x).sum()).ok
    assert (torch.float16, (8, 2)) in seen


def test_an_input_the_forward_does_not_use_has_a_zero_gradient_in_each_dtype():
    given = {"x": torch.ones(3), "unused": torch.ones(2)}
    result = gradcheck.check_gradients(lambda x, unused: (x * x).sum(), None, given,
                                       reference=lambda x, unused: (x * x).sum())
    assert result.ok, str(result)


def test_the_forward_failing_in_a_low_dtype_is_a_fault():
    from gradcheck.inputs import prepare_inputs
    from gradcheck.reference_oracle import low_precision

    def float64_only(x):
        if x.dtype != torch.float64:
            raise TypeError("needs float64")
        return (x * x).sum()

    given = {"x": torch.ones(3)}
    found = low_precision(float64_only, lambda x: (x * x).sum(), given, prepare_inputs(given), ("x",), 1.0, ())
    assert found.faults == ("forward raised on low-dtype torch tensors of the inputs: TypeError: needs float64 "
                            f"(at {__file__.rsplit('/', 1)[-1]}:{float64_only.__code__.co_firstlineno + 2} in "
                            "float64_only)",)
    # The check itself stops earlier: the forward fails at the point in the inputs' own dtype.
    assert not gradcheck.check_gradients(float64_only, None, given, reference=lambda x: (x * x).sum()).ok


def test_with_a_hand_written_backward_the_reference_is_a_float64_oracle():
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    result = gradcheck.check_gradients(lambda x: (x * x).sum(), lambda dout, x: {"x": 2 * x * dout}, {"x": x},
                                       reference=lambda x: (x * x).sum())
    assert result.ok and result.oracles == ("numeric", "torch", "reference")
    assert any("with a hand-written backward the reference is a float64 oracle only" in n for n in result.notes)


def test_a_bfloat16_tensor_is_checked_with_its_dtype_named():
    result = gradcheck.check_gradients(lambda x: (x * x).sum(), None, {"x": torch.ones(3, dtype=torch.bfloat16)})
    assert result.ok and result.inputs[0].dtype == "bfloat16"


def test_the_magnitudes_summed_into_each_element_come_from_the_jacobian():
    from gradcheck.reference_oracle import OUTPUT, _magnitudes

    given = inputs(rows=5, cols=3)
    x, w = given["x"], given["w"]
    dout = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sizes = _magnitudes(torch, matvec, dict(given), ("x", "w"), ("x", "w"), dout, (5,))
    assert np.allclose(sizes["w"], (dout.abs()[:, None] * x.abs()).sum(0).numpy(), rtol=1e-15)
    assert np.allclose(sizes["x"], (dout.abs()[:, None] * w.abs()[None, :]).reshape(-1).numpy(), rtol=1e-15)
    # Each term x_ij w_j reaches output i through x and through w.
    assert np.allclose(sizes[OUTPUT], 2 * (x * w).abs().sum(1).numpy(), rtol=1e-15)


def test_beyond_the_jacobian_limit_the_gradient_magnitudes_are_estimated(monkeypatch):
    from gradcheck import reference_oracle

    monkeypatch.setattr(reference_oracle, "JACOBIAN_LIMIT", 0)
    torch.manual_seed(0)
    result = gradcheck.check_gradients(ShuffledMatVec.apply, None, inputs(torch.float32, rows=256), reference=matvec,
                                       wrt="w")
    assert not reference_faults(result), str(result)
    assert any(n.startswith("reference: the Jacobian is too large to sum the magnitudes") for n in result.notes)


def test_a_reference_of_complex_inputs_sees_them_as_the_forward_does():
    z = torch.tensor([1 + 2j, -0.5 + 0.25j], dtype=torch.complex128)
    result = gradcheck.check_gradients(lambda z: (z * z.conj()).real.sum(), None, {"z": z},
                                       reference=lambda z: (z.abs() ** 2).sum())
    assert result.ok and result.oracles == ("numeric", "reference")


def test_a_reference_of_several_outputs_is_flattened_as_the_forward_is():
    x = torch.linspace(-1, 1, 6).reshape(3, 2)  # float32: the low-dtype comparison runs too
    result = gradcheck.check_gradients(lambda x: (x.sin(), x.cos().sum()), None, {"x": x},
                                       reference=lambda x: (torch.sin(x), torch.cos(x).sum()))
    assert result.ok and result.oracles == ("numeric", "reference")
    assert any(n.startswith("reference in float32: ") for n in result.notes)


def test_at_the_second_order_the_reference_serves_the_first():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    result = gradcheck.check_gradients(lambda x: (x.sin() ** 2).sum(), None, {"x": x}, order=2,
                                       reference=lambda x: (torch.sin(x) ** 2).sum())
    assert result.ok and result.oracles == ("numeric", "reference")
