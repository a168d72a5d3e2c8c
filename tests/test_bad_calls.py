"""Misuse of the harness raises GradcheckError naming the problem, with one message per rule
whichever entry point the bad value comes through; a bug in the code under test is a failed
check with a reason, never an uncaught exception; the caller's arrays are never mutated."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from bad_values import BAD_VALUES, FLAG_VALUES
from hypothesis import strategies as st

import gradcheck
from gradcheck import Case, GradcheckError, cli, torch_oracle
from gradcheck.inputs import PreparedInputs
from gradcheck.options import OPTIONS, CheckOptions, Settings, run_options
from gradcheck.testing import GradcheckFixture, gradient_test


def forward(x):
    return (x**2).sum()


def backward(dout, x):
    return {"x": 2 * x * dout}


X = np.array([1.0, 2.0])

MISUSE = [
    ("inputs not a mapping", lambda: gradcheck.check_gradients(forward, backward, [X]),
     "inputs must be a mapping of name -> array, got list"),
    ("no inputs", lambda: gradcheck.check_gradients(forward, backward, {}),
     "inputs is empty: there is nothing to check"),
    ("forward not callable", lambda: gradcheck.check_gradients(3, backward, {"x": X}),
     "forward must be callable, got forward=3"),
    ("backward not callable", lambda: gradcheck.check_gradients(forward, "b", {"x": X}),
     "backward must be callable or None, got backward='b'"),
    ("wrt names a missing input", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, wrt="y"),
     "wrt names 'y', but inputs are ['x']"),
    ("wrt names an integer input",
     lambda: gradcheck.check_gradients(lambda x, n: forward(x), backward, {"x": X, "n": np.array([1])}, wrt="n"),
     "wrt names 'n', an integer input (int64) that is held constant"),
    ("wrt repeats a name", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, wrt=["x", "x"]),
     "wrt repeats a name: wrt=('x', 'x')"),
    ("wrt is empty", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, wrt=[]),
     "wrt=() names no input to check"),
    ("NaN in an input", lambda: gradcheck.check_gradients(forward, backward, {"x": np.array([1.0, np.nan])}),
     "input 'x' has 1 non-finite value(s), first at index (1,)"),
    ("infinite number", lambda: gradcheck.check_gradients(forward, backward, {"x": float("inf")}),
     "input 'x' has 1 non-finite value(s)"),
    ("a string input", lambda: gradcheck.check_gradients(forward, backward, {"x": "abc"}),
     "input 'x' must be a number or an array, got str: 'abc'"),
    ("an object input", lambda: gradcheck.check_gradients(forward, backward, {"x": object()}),
     "input 'x' must be a number or an array, got object"),
    ("a ragged list", lambda: gradcheck.check_gradients(forward, backward, {"x": [[1.0, 2.0], [3.0]]}),
     "input 'x' must be a number or an array, got list"),
    ("a non-finite complex value", lambda: gradcheck.check_gradients(
        forward, backward, {"x": np.array([1j, complex(1.0, np.inf), np.nan])}),
     "input 'x' has 2 non-finite value(s), first at index (1,)"),
    ("a complex dtype other than complex64 and complex128", lambda: gradcheck.check_gradients(
        forward, backward, {"x": np.array([1j], dtype=np.clongdouble)}),
     "input 'x' has dtype complex256; use complex64 or complex128"),
    ("boolean values", lambda: gradcheck.check_gradients(forward, backward, {"x": np.array([True])}),
     "input 'x' is a boolean array"),
    ("a name that is not an identifier", lambda: gradcheck.check_gradients(forward, backward, {"1x": X}),
     "input names must be identifiers (they become keyword arguments), got '1x'"),
    ("no floating input", lambda: gradcheck.check_gradients(lambda n: 1.0, backward, {"n": np.array([1])}),
     "no floating inputs to check: inputs are 'n' (int64)"),
    ("unknown mode", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, mode="fast"),
     "mode must be one of ('auto', 'full', 'directional'), got mode='fast'"),
    ("negative rtol", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, rtol=-1),
     "rtol must be None or a finite number >= 0, got rtol=-1"),
    ("NaN atol", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, atol=float("nan")),
     "atol must be None or a finite number >= 0, got atol=nan"),
    ("negative seed", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, seed=-1),
     "seed must be a non-negative integer, got seed=-1"),
    ("numeric_gradient without a forward", lambda: gradcheck.numeric_gradient(None, {"x": X}),
     "forward must be callable, got forward=None"),
    ("numeric_gradient with a dout of the wrong shape",
     lambda: gradcheck.numeric_gradient(forward, {"x": X}, dout=np.ones(3)),
     "dout has shape (3,), but forward returns shape ()"),
    ("assert_gradients misused like check_gradients", lambda: gradcheck.assert_gradients(forward, backward, None),
     "inputs must be a mapping of name -> array, got NoneType"),
    ("jvp=True beside a hand-written backward",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, jvp=True),
     "jvp=True checks torch's forward-mode AD of a torch forward, with backward=None"),
    ("a jvp that cannot take the inputs",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, jvp=lambda tangents, y: y),
     "(tangents, y) cannot take the inputs as keywords (missing a required argument: 'y'); "
     "called as jvp(tangents, x=...)"),
    ("a jvp of complex inputs",
     lambda: gradcheck.check_gradients(forward, backward, {"x": np.array([1j])}, jvp=lambda tangents, x: x),
     "jvp checks real inputs only; ['x'] are complex (forward mode of complex inputs is not supported yet)"),
    ("a jvp of a forward with several outputs",
     lambda: gradcheck.check_gradients(lambda x: (x, 2 * x), lambda dout, x: {"x": dout[0] + 2 * dout[1]}, {"x": X},
                                       jvp=lambda tangents, x: (tangents["x"], 2 * tangents["x"])),
     "jvp checks a forward with one output; this one returns several (forward mode of several outputs is not "
     "supported yet)"),
    ("a jvp without the tangents",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, jvp=lambda x: x),
     "(x) cannot take the inputs as keywords"),
    ("reference_factor without a reference",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, reference_factor=3),
     "reference_factor=3 scales a reference's error: pass reference= too"),
    ("a reference that does not take the inputs",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, reference=lambda y: y),
     "(y) cannot take the inputs as keywords (missing a required argument: 'y'); called as reference(x=...)"),
    ("a reference that raises", lambda: _with_reference(lambda x: x.nope()),
     "reference <lambda> raised on float64 torch tensors of the inputs: AttributeError"),
    ("a reference with no autograd graph", lambda: _with_reference(lambda x: (x * x).sum().detach()),
     "reference <lambda> returned a tensor with no autograd graph on float64 torch tensors (requires_grad=False)"),
    ("a reference of another shape", lambda: _with_reference(lambda x: x * x),
     "reference <lambda> returns shape (2,) on float64 torch tensors, but forward returns shape ()"),
    ("a reference returning a tuple", lambda: _with_reference(lambda x: ((x * x).sum(), x)),
     "reference <lambda> returned tuple on float64 torch tensors, not one tensor"),
    ("a reference returning numpy", lambda: _with_reference(lambda x: (x * x).sum().detach().numpy()),
     "reference <lambda> returned ndarray on float64 torch tensors, not one tensor"),
    ("a reference failing in the inputs' low dtype",
     lambda: _with_reference(_float64_only, x=np.array([1.0, 2.0], dtype=np.float32)),
     "reference _float64_only raised on low-dtype torch tensors of the inputs: TypeError: float64 only"),
    ("paths with a hand-written backward",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, paths=("eager", "aot_eager")),
     "paths=('eager', 'aot_eager') compares torch autograd's gradients along execution paths: it needs "
     "backward=None"),
    ("numeric_gradient of a forward with several outputs",
     lambda: gradcheck.numeric_gradient(lambda x: (x, x), {"x": X}),
     "forward returns a tuple of 2 outputs; numeric_gradient takes a forward with one output"),
    ("a complex output among several",
     lambda: gradcheck.check_gradients(lambda x: (x * 2, x * 1j), lambda dout, x: {"x": 2 * dout[0]}, {"x": X}),
     "forward returns output `[1]` of complex dtype complex128: complex outputs are not supported yet"),
    # second order
    ("order 3", lambda: gradcheck.check_gradients(forward, None, {"x": X}, order=3),
     "order must be 1 or 2 (first derivatives, or second derivatives as well), got order=3"),
    ("order 2 with a numpy backward and no hvp",
     lambda: gradcheck.check_gradients(forward, backward, {"x": X}, order=2),
     "order=2 with a hand-written backward needs hvp=, its Hessian-vector product"),
    ("an hvp at order 1", lambda: gradcheck.check_gradients(forward, backward, {"x": X}, hvp=lambda vectors, x: {}),
     "hvp is checked at the second order: pass order=2 with it, got order=1"),
    ("order 2 on a forward torch cannot differentiate", lambda: gradcheck.check_gradients(
        lambda x: float(np.sum(np.asarray(x) ** 2)), None, {"x": X}, order=2),
     "backward=None needs a forward that torch can differentiate"),
    ("an hvp of a forward that is not scalar", lambda: gradcheck.check_gradients(
        lambda x: x**2, lambda dout, x: {"x": 2 * x * dout}, {"x": X}, order=2, hvp=lambda vectors, x: vectors),
     "hvp needs a scalar forward (its Hessian), but forward returns shape (2,)"),
    ("order 2 with several outputs", lambda: gradcheck.check_gradients(
        lambda x: (x * 2, x * 3), None, {"x": X}, order=2),
     "order=2 with several outputs is not supported yet (forward returns 2)"),
    ("order 2 with complex inputs", lambda: gradcheck.check_gradients(
        lambda z: (z * z.conj()).real.sum(), None, {"z": np.array([1 + 2j, 3 - 1j])}, order=2),
     "order=2 with complex inputs is not supported yet (complex: ['z'])"),
    ("an hvp that does not take the inputs", lambda: gradcheck.check_gradients(
        forward, backward, {"x": X}, order=2, hvp=lambda vectors, y: vectors),
     "cannot take the inputs as keywords"),
]


def _with_reference(reference, x=X):
    import torch

    return gradcheck.check_gradients(lambda x: (x * x).sum(), None, {"x": torch.tensor(x)}, reference=reference)


def _float64_only(x):
    import torch

    if x.dtype != torch.float64:
        raise TypeError("float64 only")
    return (x * x).sum()


@pytest.mark.parametrize(("what", "call", "message"), MISUSE, ids=[m[0] for m in MISUSE])
def test_misuse_raises_a_gradcheck_error_naming_the_problem(what, call, message):
    with pytest.raises(GradcheckError) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


# --- bugs in the code under test: failed checks with a reason ---------------------------------


def matmul_sum(x, W):
    return (x @ W).sum()


def matmul_backward(dout, x, W):
    D = np.full((x.shape[0], W.shape[1]), dout)
    return {"x": D @ W.T, "W": x.T @ D}


INPUTS = {"x": np.arange(6.0).reshape(2, 3) / 7 + 0.1, "W": np.arange(12.0).reshape(3, 4) / 5 - 1}


def raising_backward(dout, x, W):
    raise KeyError("boom")


def raising_forward(x, W):
    raise ValueError("bad forward")


def mutating_forward(x, W):
    x *= 2
    return (x @ W).sum()


def mutating_backward(dout, x, W):
    grads = matmul_backward(dout, x, W)
    x[0, 0] = 5.0
    return grads


class Drifting:
    """A forward that returns a slightly different value on every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, W):
        self.calls += 1
        return (x @ W).sum() + 1e-3 * self.calls


class Alternating:
    """A forward that returns ``odd(x, W)`` on odd calls and ``even(x, W)`` on even ones."""

    def __init__(self, odd, even) -> None:
        self.odd, self.even = odd, even
        self.calls = 0

    def __call__(self, x, W):
        self.calls += 1
        return (self.odd if self.calls % 2 else self.even)(x, W)


class DriftingIndex:
    """A forward whose integer output changes on every call at the same point."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, W):
        self.calls += 1
        return (x @ W).sum(), np.array([self.calls])


FAULTS = [
    ("backward raises", matmul_sum, raising_backward, "backward raised KeyError: 'boom'"),
    ("a gradient is missing", matmul_sum, lambda d, x, W: {"x": matmul_backward(d, x, W)["x"]},
     "backward returned no gradient for 'W'"),
    ("an extra gradient", matmul_sum, lambda d, x, W: {**matmul_backward(d, x, W), "z": 1.0},
     "backward returned gradients for ['z'], which are not inputs"),
    ("a transposed gradient", matmul_sum,
     lambda d, x, W: {**matmul_backward(d, x, W), "W": matmul_backward(d, x, W)["W"].T},
     "has shape (4, 3), but 'W' has shape (3, 4) (it looks transposed)"),
    ("a gradient of the wrong shape", matmul_sum, lambda d, x, W: {**matmul_backward(d, x, W), "W": np.zeros(5)},
     "backward's gradient for 'W' has shape (5,), but 'W' has shape (3, 4)"),
    ("non-finite gradient values", matmul_sum,
     lambda d, x, W: {**matmul_backward(d, x, W), "x": np.full((2, 3), np.inf)},
     "backward's gradient for 'x' has 6 non-finite value(s)"),
    ("backward returns a list", matmul_sum, lambda d, x, W: [1, 2],
     "backward returned list, not a dict mapping input names to gradients"),
    ("a string gradient", matmul_sum, lambda d, x, W: {**matmul_backward(d, x, W), "x": "a"},
     "backward's gradient for 'x' returned str"),
    ("backward mutates its input", matmul_sum, mutating_backward, "backward mutates its input 'x' in place"),
    ("forward raises", raising_forward, matmul_backward, "forward raised ValueError: bad forward"),
    ("forward returns NaN", lambda x, W: np.nan * (x @ W).sum(), matmul_backward,
     "forward returns 1 non-finite value(s) at the given point"),
    ("forward returns a string", lambda x, W: "s", matmul_backward, "forward returned str"),
    ("forward mutates its input", mutating_forward, matmul_backward,
     "forward mutates its input 'x' in place; a forward must not change its inputs"),
    ("forward is nondeterministic", Drifting(), matmul_backward,
     "forward is nondeterministic: two calls at the same point gave"),
    ("an empty tuple output", lambda x, W: (), matmul_backward,
     "forward returns an empty tuple: there is no output to differentiate"),
    ("an output entry that is not an array", lambda x, W: ((x @ W).sum(), "s"), matmul_backward,
     "forward returns output `[1]` of type str, not an array or number"),
    ("only integer outputs", lambda x, W: (np.argmax(x), np.argmax(W)), matmul_backward,
     "forward returns only integer or boolean outputs ['[0]', '[1]']: there is nothing to differentiate"),
    ("outputs whose structure changes between evaluations",
     Alternating(lambda x, W: (x @ W, x), lambda x, W: {"h": x @ W, "c": x}), matmul_backward,
     "forward returns a dict of outputs ['h', 'c'], but returned a tuple of outputs ['[0]', '[1]'] before"),
    ("an integer output that changes between evaluations at the point", DriftingIndex(), matmul_backward,
     "forward returns output `[1]` (int64) with other values in two evaluations at the same point"),
    ("an output whose shape changes between evaluations",
     Alternating(lambda x, W: ((x @ W).sum(), x), lambda x, W: ((x @ W).sum(), x[:1])), matmul_backward,
     "forward returns output `[1]` of shape (1, 3), but it had shape (2, 3) before"),
]


COMPLEX_INPUTS = {"x": INPUTS["x"] * (1 - 0.5j), "W": INPUTS["W"] * (1 + 0.25j)}


def matmul_complex_backward(dout, x, W):
    D = np.full((x.shape[0], W.shape[1]), dout)
    return {"x": D @ np.conj(W).T, "W": np.conj(x).T @ D}


COMPLEX_FAULTS = [
    ("forward takes real values only", lambda x, W: np.logaddexp(x @ W, 0).real.sum(), matmul_complex_backward,
     "it was called with the complex input(s) 'x' (complex128), 'W' (complex128): does it take complex values?"),
    ("a real gradient for a complex input", lambda x, W: (x @ W).real.sum(),
     lambda d, x, W: {k: v.real for k, v in matmul_complex_backward(d, x, W).items()},
     "backward returns a real gradient (float64) for the complex input 'x' (complex128): its imaginary part is "
     "missing"),
    ("a complex gradient of the wrong shape", lambda x, W: (x @ W).real.sum(),
     lambda d, x, W: {**matmul_complex_backward(d, x, W), "x": np.zeros((3, 2), complex)},
     "backward's gradient for 'x' has shape (3, 2), but 'x' has shape (2, 3) (it looks transposed)"),
    ("backward mutates its complex input", lambda x, W: (x @ W).real.sum(),
     lambda d, x, W: (matmul_complex_backward(d, x, W), x.__setitem__((0, 0), 5j))[0],
     "backward mutates its input 'x' in place"),
    ("forward mutates its complex input", lambda x, W: (x.__imul__(2), (x @ W).real.sum())[1],
     matmul_complex_backward, "forward mutates its input 'x' in place"),
]


@pytest.mark.parametrize(("what", "fwd", "bwd", "reason"), FAULTS + COMPLEX_FAULTS,
                         ids=[f[0] for f in FAULTS + COMPLEX_FAULTS])
def test_bugs_under_test_fail_the_check_with_a_reason(what, fwd, bwd, reason):
    original = COMPLEX_INPUTS if (what, fwd, bwd, reason) in COMPLEX_FAULTS else INPUTS
    inputs = {k: v.copy() for k, v in original.items()}
    result = gradcheck.check_gradients(fwd, bwd, inputs)
    assert not result.ok
    assert any(reason in fault for fault in result.faults), result.faults
    assert all(np.array_equal(inputs[k], original[k]) for k in original), "the caller's arrays were mutated"
    assert "FAULT" in str(result) and reason in str(result)
    with pytest.raises(gradcheck.GradientMismatch) as info:
        gradcheck.assert_gradients(fwd, bwd, inputs)
    assert reason in str(info.value)


def hvp_of_square(vectors, x):
    return {"x": 2 * vectors["x"]}


HVP_FAULTS = [
    ("hvp raises", lambda vectors, x: vectors["y"], "hvp raised KeyError: 'y'"),
    ("hvp returns a list", lambda vectors, x: [vectors["x"]],
     "hvp returned list, not a dict mapping input names to Hessian-vector products"),
    ("a product is missing", lambda vectors, x: {"z": vectors["x"]}, "hvp returned no product for 'x' (keys: ['z'])"),
    ("a product of the wrong shape", lambda vectors, x: {"x": np.zeros(3)},
     "hvp's product for 'x' has shape (3,), but 'x' has shape (2,)"),
    ("a product of an integer dtype", lambda vectors, x: {"x": (2 * vectors["x"]).astype(int)},
     "hvp's product for 'x' has dtype int64; a Hessian-vector product is real floating"),
    ("a complex product", lambda vectors, x: {"x": 2 * vectors["x"] + 0j},
     "hvp's product for 'x' has dtype complex128"),
    ("a non-finite product", lambda vectors, x: {"x": vectors["x"] / 0.0},
     "hvp's product for 'x' has 2 non-finite value(s)"),
]


@pytest.mark.parametrize(("what", "hvp", "reason"), HVP_FAULTS, ids=[f[0] for f in HVP_FAULTS])
def test_hvp_bugs_fail_the_second_order_with_a_reason(what, hvp, reason):
    assert gradcheck.check_gradients(forward, backward, {"x": X}, order=2, hvp=hvp_of_square).ok
    with np.errstate(divide="ignore", invalid="ignore"):
        result = gradcheck.check_gradients(forward, backward, {"x": X}, order=2, hvp=hvp)
    assert not result.ok and result.second_order is not None
    assert any(reason in fault for fault in result.second_order.faults), result.second_order.faults
    assert reason in str(result)


def test_callers_arrays_and_dtypes_are_untouched_by_a_passing_check():
    inputs = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "W": np.ones((3, 4)), "n": 3}
    before = {k: np.array(v, copy=True) for k, v in inputs.items()}
    result = gradcheck.check_gradients(lambda x, W, n: (x @ W).sum() * n,
                                       lambda d, x, W, n: {k: v * n for k, v in matmul_backward(d, x, W).items()},
                                       inputs)
    assert result.ok, str(result)
    for k, v in before.items():
        assert np.array_equal(np.asarray(inputs[k]), v) and np.asarray(inputs[k]).dtype == v.dtype
    assert inputs["n"] == 3


# --- bugs in a hand-written jvp: failed checks with a reason ------------------------------------


def matmul_jvp(tangents, x, W):
    return (tangents["x"] @ W + x @ tangents["W"]).sum()


def mutating_jvp(tangents, x, W):
    tangents["x"][0, 0] = 7.0
    return matmul_jvp(tangents, x, W)


def labelled_matmul(x, W, labels):
    return (x @ W).sum() + 0.0 * labels.sum()


def labelled_backward(dout, x, W, labels):
    return matmul_backward(dout, x, W)


def jvp_with_a_label_tangent(tangents, x, W, labels):
    return matmul_jvp(tangents, x, W) + tangents["labels"].sum()


JVP_FAULTS = [
    ("jvp raises", lambda t, x, W: 1 / 0, "jvp raised ZeroDivisionError: division by zero"),
    ("jvp returns a tuple", lambda t, x, W: (np.ones(2), np.ones(2)),
     "jvp returned a tuple of 2 arrays, but the forward returns one array of shape ()"),
    ("jvp returns None", lambda t, x, W: None, "jvp returned None, not the output's tangent (shape ())"),
    ("jvp returns the wrong shape", lambda t, x, W: np.ones(3), "jvp returned shape (3,), but the forward's output "
                                                                "has shape ()"),
    ("jvp returns integers", lambda t, x, W: np.int64(3),
     "jvp returned int64 values; the output's tangent is floating"),
    ("jvp returns a string", lambda t, x, W: "a", "jvp returned str"),
    ("jvp returns complex values", lambda t, x, W: np.complex128(1j), "dtype complex128, not a real array or number"),
    ("jvp returns NaN", lambda t, x, W: np.float64(np.nan), "jvp returned 1 non-finite value(s)"),
    ("jvp mutates its tangent", mutating_jvp, "jvp mutates its tangent for 'x' in place"),
]


@pytest.mark.parametrize(("what", "jvp", "reason"), JVP_FAULTS, ids=[f[0] for f in JVP_FAULTS])
def test_bugs_in_a_jvp_fail_the_check_with_a_reason(what, jvp, reason):
    inputs = {k: v.copy() for k, v in INPUTS.items()}
    result = gradcheck.check_gradients(matmul_sum, matmul_backward, inputs, jvp=jvp)
    assert not result.ok
    assert any(reason in fault for fault in result.faults), result.faults
    assert "FAULT" in str(result) and all(np.array_equal(inputs[k], INPUTS[k]) for k in INPUTS)
    assert result.inputs and all(s.ok for s in result.inputs)  # reverse mode was checked all the same


def test_a_jvp_asking_for_an_integer_inputs_tangent_is_told_it_has_none():
    inputs = {**INPUTS, "labels": np.array([0, 1])}
    result = gradcheck.check_gradients(labelled_matmul, labelled_backward, inputs, jvp=jvp_with_a_label_tangent)
    assert not result.ok
    (fault,) = result.faults
    assert "'labels' is an integer input (int64), held constant: it has no tangent; tangents hold ['x', 'W']" in fault


# --- one rule, one message, at every entry point -----------------------------------------------


DRAWN = st.fixed_dictionaries({"x": st.just(X)})
CHECK_OPTIONS = {"wrt", "seed", "rtol", "atol", "mode", "progress", "deterministic", "jvp", "order", "hvp",
                 "reference", "reference_factor", "paths"}


def _fixture() -> GradcheckFixture:
    return GradcheckFixture(Settings(), lambda result: None)


def _checking(fn):
    """An entry point shaped like ``check_gradients``, called on ``{"x": X}``."""
    def call(forward=forward, backward=backward, **options):
        return fn(forward, backward, {"x": X}, **options)
    return call


def _decorator(forward=forward, backward=backward, inputs=DRAWN, **options):
    return gradient_test(forward, backward, inputs=inputs, **options)


def _case(forward=forward, backward=backward, inputs=DRAWN, **fields):
    return Case("c", forward, backward, inputs, **fields)


# entry point -> (a call taking one argument by name, the arguments it takes)
ENTRY_POINTS = {
    "check_gradients": (_checking(gradcheck.check_gradients), {"forward", "backward", *CHECK_OPTIONS}),
    "assert_gradients": (_checking(gradcheck.assert_gradients), {"forward", "backward", *CHECK_OPTIONS}),
    "fixture.check": (lambda **kw: _checking(_fixture().check)(**kw), {"forward", "backward", *CHECK_OPTIONS}),
    "fixture.assert_gradients": (lambda **kw: _checking(_fixture().assert_gradients)(**kw),
                                 {"forward", "backward", *CHECK_OPTIONS}),
    "numeric_gradient": (lambda forward=forward, **kw: gradcheck.numeric_gradient(forward, {"x": X}, **kw),
                         {"forward", "wrt"}),
    "gradient_test": (_decorator, {"forward", "backward", "inputs", "wrt", "examples", "mode", "rtol", "atol",
                                   "jvp", "order", "hvp"}),
    "Case": (_case, {"forward", "backward", "inputs", "wrt", "jvp", "order", "hvp"}),
    "CheckOptions": (CheckOptions, CHECK_OPTIONS),
    "Settings": (Settings, {"seed", "examples", "rtol", "atol", "order"}),
}
CALLS = [(entry, name, value, message) for name, value, message in BAD_VALUES
         for entry, (_, takes) in ENTRY_POINTS.items() if name in takes]


def test_every_rule_enters_through_several_entry_points():
    reached = {name: {entry for entry, n, _, _ in CALLS if n == name} for name, _, _ in BAD_VALUES}
    assert all(len(entries) >= 2 for entries in reached.values()), reached


@pytest.mark.parametrize(("entry", "name", "value", "message"), CALLS,
                         ids=[f"{entry}-{name}={value!r}" for entry, name, value, _ in CALLS])
def test_each_entry_point_gives_a_bad_value_its_rules_one_message(entry, name, value, message):
    call, _ = ENTRY_POINTS[entry]
    with pytest.raises(GradcheckError) as info:
        call(**{name: value})
    text = str(info.value)
    assert text == message or text.endswith(f": {message}")  # a context may come first: "Case 'c': "


@pytest.mark.parametrize(("name", "text", "message"), FLAG_VALUES, ids=[f"--{n}={t}" for n, t, _ in FLAG_VALUES])
def test_the_command_line_gives_a_bad_flag_its_rules_one_message(name, text, message, capsys):
    option = next(o for o in OPTIONS if o.name == name)
    with pytest.raises(GradcheckError) as info:
        Settings(**{name: option.type(text)})
    assert str(info.value) == message  # the flag's value, parsed, is the API's bad value
    assert cli.main(["report", f"--{name}={text}"]) == 2
    assert capsys.readouterr().err == f"gradcheck: error: {message}\n"


@pytest.mark.parametrize("seed", [3, np.int64(3), np.uint8(3)], ids=repr)
def test_a_seed_is_any_non_negative_integral_number_everywhere(seed):
    assert CheckOptions(seed=seed) == CheckOptions(seed=3) and type(CheckOptions(seed=seed).seed) is int
    assert Settings(seed=seed) == Settings(seed=3) and type(Settings(seed=seed).seed) is int
    for check in (gradcheck.check_gradients, gradcheck.assert_gradients, _fixture().check):
        result = check(forward, backward, {"x": X}, seed=seed)
        assert result.ok and result.seed == 3 and type(result.seed) is int


def test_examples_are_any_positive_integral_number_everywhere():
    assert Settings(examples=np.int64(2)) == Settings(examples=2)
    assert callable(gradient_test(forward, backward, inputs=DRAWN, examples=np.int64(2)))


def test_the_options_of_a_check_are_one_frozen_value():
    options = CheckOptions(wrt="x", seed=np.int64(2))
    assert (options.wrt, options.seed) == (("x",), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 3
    assert run_options(Settings(seed=4, rtol=1e-3), rtol=1e-2) == CheckOptions(seed=4, rtol=1e-2)


@pytest.mark.parametrize(
    "fn",
    [gradcheck.check_gradients, gradcheck.assert_gradients, GradcheckFixture.check,
     GradcheckFixture.assert_gradients],
    ids=lambda fn: fn.__qualname__,
)
def test_every_checking_function_takes_the_options_of_a_check_by_keyword(fn):
    keywords = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in keywords] == [f.name for f in dataclasses.fields(CheckOptions)]
    if fn in (gradcheck.check_gradients, gradcheck.assert_gradients):
        assert {p.name: p.default for p in keywords} == dataclasses.asdict(CheckOptions())


def test_run_options_forwards_every_option_of_a_check():
    every = {f.name: getattr(CheckOptions(), f.name) for f in dataclasses.fields(CheckOptions)}
    assert run_options(Settings(), **every) == CheckOptions()
    with pytest.raises(TypeError, match="unexpected keyword argument 'tags'"):
        run_options(Settings(), tags=("x",))


# --- what is gone: unused names ----------------------------------------------------------------


def test_unused_names_are_gone():
    assert "tags" not in {f.name for f in dataclasses.fields(Case)}
    assert "from_torch" not in {f.name for f in dataclasses.fields(PreparedInputs)}
    assert not hasattr(torch_oracle, "torch_available")
    with pytest.raises(TypeError):
        Case("c", forward, backward, DRAWN, tags={"a"})
