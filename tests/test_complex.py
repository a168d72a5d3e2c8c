"""Complex inputs and outputs: torch's convention, checked in both modes on numpy and torch
forwards, reported in the caller's terms (``z[1, 2].imag``, complex dtype and shape).

The convention: for a real loss L of z = a + ib the gradient is dL/da + i dL/db; for a complex
output y with upstream gradient g it is that gradient of Re(sum(conj(g) y)).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import complex_values
from gradcheck.strategies import complex_arrays
from gradcheck_reference import GALLERY
from gradcheck_reference import complex as cases

RNG = np.random.default_rng(7)


def c(*shape, dtype=np.complex128):
    return (RNG.normal(size=shape) + 1j * RNG.normal(size=shape)).astype(dtype)


# --- the convention is torch's ------------------------------------------------------------------

# (name, forward on torch tensors, its hand-written vector-Jacobian product in numpy)
CONVENTION = [
    ("y = z w", lambda z, w: z * w, lambda g, z, w: {"z": g * np.conj(w), "w": g * np.conj(z)}),
    ("y = |z|^2", lambda z, w: (z * z.conj()).real * w.real, lambda g, z, w: {
        "z": 2 * z * np.real(g) * w.real, "w": (np.real(g) * np.abs(z) ** 2).astype(complex)}),
    ("y = conj(z)", lambda z, w: z.conj() + 0 * w, lambda g, z, w: {"z": np.conj(g), "w": np.zeros_like(w)}),
]


@pytest.mark.parametrize(("what", "forward", "vjp"), CONVENTION, ids=[row[0] for row in CONVENTION])
def test_torch_autograd_is_the_gradient_of_re_conj_g_y_by_real_and_imaginary_parts(what, forward, vjp):
    z, w = c(3), c(3)
    g = c(3) if torch.is_complex(forward(torch.tensor(z), torch.tensor(w))) else RNG.normal(size=3)
    # torch's vector-Jacobian product ...
    zt, wt = torch.tensor(z, requires_grad=True), torch.tensor(w, requires_grad=True)
    forward(zt, wt).backward(torch.tensor(g))
    # ... is dL/da + i dL/db for L = Re(sum(conj(g) y)), differentiated through real leaves a, b.
    parts = [torch.tensor(p, requires_grad=True) for p in (z.real, z.imag, w.real, w.imag)]
    y = forward(torch.complex(parts[0], parts[1]), torch.complex(parts[2], parts[3]))
    torch.sum(torch.real(torch.tensor(g).conj() * y)).backward()
    by_parts = {"z": parts[0].grad + 1j * parts[1].grad, "w": parts[2].grad + 1j * parts[3].grad}
    for name, t in (("z", zt), ("w", wt)):
        np.testing.assert_allclose(t.grad.numpy(force=True), by_parts[name].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vjp(g, z, w)[name], t.grad.numpy(force=True), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("what", "forward", "vjp"), CONVENTION, ids=[row[0] for row in CONVENTION])
def test_the_check_holds_a_backward_to_torchs_convention(what, forward, vjp):
    inputs = {"z": torch.tensor(c(2, 3)), "w": torch.tensor(c(2, 3))}
    result = gradcheck.check_gradients(forward, vjp, inputs)
    assert result.ok and result.oracles == ("numeric", "torch"), str(result)
    conjugated = gradcheck.check_gradients(forward, lambda g, z, w: {k: np.conj(v) for k, v in vjp(g, z, w).items()},
                                           inputs)
    assert not conjugated.ok and all(m.part == "imag" for m in conjugated.mismatches), str(conjugated)


# --- both modes, numpy and torch forwards -------------------------------------------------------


def numpy_linear(W, x, b):
    return np.matmul(W, x) + b  # numpy only: the numeric oracle alone


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize(("forward", "oracles"), [(cases.linear, ("numeric", "torch")),
                                                  (numpy_linear, ("numeric",))], ids=["array-api", "numpy"])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_a_correct_complex_backward_passes_and_a_conjugated_one_fails(mode, forward, oracles, dtype):
    inputs = {"W": c(3, 4, dtype=dtype), "x": c(4, dtype=dtype), "b": c(3, dtype=dtype)}
    result = gradcheck.check_gradients(forward, cases.linear_backward, inputs, mode=mode)
    assert result.ok and result.oracles == oracles and result.mode == mode, str(result)
    assert [(s.name, s.shape, s.dtype) for s in result.inputs] == [
        ("W", (3, 4), np.dtype(dtype).name), ("x", (4,), np.dtype(dtype).name), ("b", (3,), np.dtype(dtype).name)]
    assert result.output_shape == (3,)
    bug = GALLERY_BY_NAME["gallery.complex_linear_not_conjugated"].backward
    wrong = gradcheck.check_gradients(forward, bug, inputs, mode=mode)
    assert not wrong.ok and {s.name for s in wrong.inputs if not s.ok} == {"W", "x", "b"}, str(wrong)


GALLERY_BY_NAME = {case.name: case for case in GALLERY}


def test_a_torch_callable_with_complex_inputs_checks_autograd_with_backward_none():
    def forward(z, w):
        return torch.sin(z) * w.conj() + torch.exp(z).abs()

    result = gradcheck.check_gradients(forward, None, {"z": torch.tensor(c(2, 2)), "w": torch.tensor(c(2, 2))})
    assert result.ok, str(result)
    assert "analytic gradients are torch autograd's (backward=None)" in result.notes
    assert {s.dtype for s in result.inputs} == {"complex128"} and result.output_shape == (2, 2)


def test_a_real_input_with_a_complex_output_gets_a_complex_dout():
    phase = np.exp(1j * np.linspace(0, 2, 4))
    seen = []

    def backward(g, x):
        seen.append(g)
        return {"x": np.real(g * np.conj(phase))}

    result = gradcheck.check_gradients(lambda x: x * phase, backward, {"x": RNG.normal(size=4)})
    assert result.ok and result.output_shape == (4,), str(result)
    assert np.iscomplexobj(seen[0]) and seen[0].shape == (4,) and np.all(seen[0].imag != 0)
    assert result.inputs[0].dtype == "float64"


def test_a_complex_scalar_output_gets_a_complex_number_as_dout():
    seen = []

    def backward(g, z):
        seen.append(g)
        return {"z": g * np.conj(2 * z)}

    result = gradcheck.check_gradients(lambda z: (z * z).sum(), backward, {"z": c(3)})
    assert result.ok and result.output_shape == (), str(result)
    assert isinstance(seen[0], complex)


# --- the report in the caller's terms -----------------------------------------------------------


def test_mismatches_name_the_complex_element_and_its_part():
    z = c(2, 3)

    def off_in_one_imaginary_part(dout, z):
        grad = 2 * z * dout
        grad[1, 2] += 0.5j
        return {"z": grad}

    result = gradcheck.check_gradients(cases.abs2_sum, off_in_one_imaginary_part, {"z": z})
    (m,) = result.mismatches
    assert (m.input, m.index, m.part) == ("z", (1, 2), "imag")
    assert "z[1, 2].imag: analytic" in str(result)
    assert "z (2, 3) complex128: 1/12 elements mismatch" in str(result)
    assert result.to_dict()["mismatches"][0]["part"] == "imag"
    json.dumps(result.to_dict(), allow_nan=False)


def test_abs_has_kinks_at_zero_in_both_parts_and_a_correct_gradient_lies_between_the_slopes():
    z = np.array([0.0, 1 + 2j, -0.5j])

    def abs_backward(dout, z):
        size = np.abs(z)
        return {"z": dout * np.divide(z, size, out=np.zeros_like(z), where=size > 0)}

    result = gradcheck.check_gradients(lambda z: np.sum(np.abs(z)), abs_backward, {"z": z})
    assert result.ok, str(result)
    assert sorted((k.index, k.part) for k in result.kinks) == [((0,), "imag"), ((0,), "real")]
    assert "z[0].real slopes -1 | 1" in str(result)


def test_the_conjugation_bug_is_named_conjugated():
    case = GALLERY_BY_NAME["gallery.complex_linear_not_conjugated"]
    result = gradcheck.check_gradients(case.forward, case.backward, case.points[0])
    assert case.expected_diagnosis == "conjugated"
    assert {s.diagnosis.kind for s in result.inputs if s.diagnosis} == {"conjugated"}
    assert "likely bug (conjugated)" in str(result)


def test_a_real_gradient_for_a_complex_input_is_a_fault_even_where_the_imaginary_part_is_zero():
    # L = sum(Re z): the right gradient is 1 + 0i, but a real array drops the convention's type.
    result = gradcheck.check_gradients(lambda z: np.sum(z.real), lambda d, z: {"z": np.ones(z.shape)}, {"z": c(3)})
    assert not result.ok
    assert result.faults == ("backward returns a real gradient (float64) for the complex input 'z' (complex128): "
                             "its imaginary part is missing; return dL/d(Re z) + 1j * dL/d(Im z)",)


def test_only_the_checked_complex_inputs_need_complex_gradients():
    def backward(dout, z, w):
        return {"z": dout * np.conj(w), "w": np.zeros(w.shape)}  # w is not checked

    result = gradcheck.check_gradients(lambda z, w: np.sum((z * w).real), backward, {"z": c(3), "w": c(3)}, wrt="z")
    assert result.ok and [s.name for s in result.inputs] == ["z"], str(result)


def test_a_complex_gradient_for_a_real_input_is_a_fault():
    phase = np.exp(1j * np.linspace(0, 2, 4))
    result = gradcheck.check_gradients(lambda x: x * phase, lambda g, x: {"x": g * np.conj(phase)},
                                       {"x": RNG.normal(size=4)})
    assert result.faults == ("backward's gradient for 'x' returned ndarray of dtype complex128, not a real array "
                             "or number",)


def test_complex_tensors_conjugate_views_and_python_numbers_are_inputs():
    z = torch.tensor(c(3)).conj()  # a lazily conjugated view
    result = gradcheck.check_gradients(lambda z, s: z * s, lambda g, z, s: {"z": g * np.conj(s), "s": np.sum(
        g * np.conj(z))}, {"z": z, "s": 1.5 - 2j})
    assert result.ok, str(result)
    assert [(s.name, s.shape, s.dtype) for s in result.inputs] == [("z", (3,), "complex128"), ("s", (), "complex128")]


# --- the real-pair view -------------------------------------------------------------------------


SHAPES = st.tuples(st.integers(0, 3), st.integers(1, 3)) | st.just(())


@given(complex_arrays(SHAPES, zeros=True) | complex_arrays(SHAPES, dtype=np.complex64, zeros=True))
@settings(deadline=None, max_examples=25)
def test_the_real_pair_view_round_trips(z):
    pairs = complex_values.to_pairs(z)
    assert pairs.shape == (*z.shape, 2) and pairs.dtype == z.real.dtype and pairs.flags.c_contiguous
    assert np.array_equal(pairs[..., 0], z.real) and np.array_equal(pairs[..., 1], z.imag)
    back = complex_values.from_pairs(pairs)
    assert back.dtype == z.dtype and np.array_equal(back, z)
    assert back.size == 0 or np.shares_memory(back, pairs)  # writes to the complex view reach the pairs
    on_torch = complex_values.from_pairs(torch.from_numpy(pairs))
    assert on_torch.dtype == {np.complex64: torch.complex64, np.complex128: torch.complex128}[z.dtype.type]
    assert np.array_equal(on_torch.numpy(), z)
