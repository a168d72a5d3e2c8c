"""paths=: a torch callable's gradients and output along other execution paths (torch.compile)
against eager's; a disagreement is a fault naming the path."""

from __future__ import annotations

import pytest
import torch

import gradcheck
from gradcheck import paths


def _dynamo_supported() -> bool:
    try:
        import torch._dynamo

        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:
        return False


class DoubledBackward(torch.autograd.Function):
    """sin with a backward twice the truth: what a wrongly registered autograd gives."""

    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved_tensors
        return 2 * dout * x.cos()


def sin(x):
    return x.sin()


X = {"x": torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)}


# -- the comparison, with a stand-in for torch.compile -----------------------------------------

def _as_path(monkeypatch, compiled):
    """Make every compiled path run ``compiled`` instead of torch.compile's result."""
    monkeypatch.setattr(paths, "_compiled", lambda forward, backend: compiled)


def test_a_path_with_another_gradient_is_a_fault_naming_it(monkeypatch):
    _as_path(monkeypatch, DoubledBackward.apply)
    result = gradcheck.check_gradients(sin, None, X, paths=("eager", "aot_eager"))
    assert not result.ok and not result.mismatches  # eager itself is right
    (fault,) = result.faults
    assert fault.startswith("aot_eager path (torch.compile, backend 'aot_eager'): gradient of 'x' differs from "
                            "eager's at 6/6 elements; worst x[")
    assert "(a compiled graph that skips or replaces the custom backward?)" in fault


def test_a_path_with_another_output_is_a_fault(monkeypatch):
    _as_path(monkeypatch, lambda x: x.sin() + 1e-3)
    result = gradcheck.check_gradients(sin, None, X, paths="aot_eager")
    assert result.faults == ("aot_eager path (torch.compile, backend 'aot_eager'): output differs from eager's at "
                             "output[0, 0]: compiled -0.840471, eager -0.841471",)


def test_a_path_that_raises_is_a_fault(monkeypatch):
    def raising(x):
        raise RuntimeError("no kernel")

    _as_path(monkeypatch, raising)
    (fault,) = gradcheck.check_gradients(sin, None, X, paths="aot_eager").faults
    assert fault.startswith("aot_eager path (torch.compile, backend 'aot_eager'): the compiled forward or its "
                            "backward raised RuntimeError: no kernel")


def test_a_path_that_agrees_is_noted(monkeypatch):
    _as_path(monkeypatch, sin)
    result = gradcheck.check_gradients(sin, None, X, paths=("eager", "aot_eager"))
    assert result.ok
    assert "aot_eager path (torch.compile, backend 'aot_eager'): gradients and output agree with eager" in result.notes


def test_compile_unavailable_skips_the_path_with_a_note(monkeypatch):
    _as_path(monkeypatch, "torch.compile is not supported on this Python")
    result = gradcheck.check_gradients(sin, None, X, paths=("eager", "compile"))
    assert result.ok and "compile path not checked: torch.compile is not supported on this Python" in result.notes


def test_eager_alone_compares_nothing_more(monkeypatch):
    _as_path(monkeypatch, DoubledBackward.apply)
    assert gradcheck.check_gradients(sin, None, X, paths=("eager",)).ok


# path -> compilers found on the PATH -> backend
BACKENDS = [
    ("aot_eager", {"g++"}, "aot_eager"),
    ("compile", {"g++"}, "inductor"),
    ("compile", {"clang++"}, "inductor"),
    ("compile", set(), "aot_eager"),
]


@pytest.mark.parametrize(("path", "found", "backend"), BACKENDS)
def test_compile_uses_inductor_only_where_a_cxx_compiler_is_found(path, found, backend, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    assert paths.compile_backend(path, which=lambda name: name if name in found else None) == backend


def test_cxx_names_the_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "my-c++")
    assert paths.compile_backend("compile", which=lambda name: name if name == "my-c++" else None) == "inductor"


# -- torch.compile itself: one small graph -----------------------------------------------------

def test_a_compiled_graph_that_replaces_a_custom_backward_is_caught():
    """Under torch.compile the function takes another branch, whose backward is wrong; eager's is
    right, so only the compiled path can show it (aot_eager: about three seconds of CPU, most of
    it importing dynamo; no C compiler). Skipped where torch.compile is not available."""
    if not _dynamo_supported():
        pytest.skip("torch.compile is not available here")

    def differs_when_compiled(x):
        return DoubledBackward.apply(x) if torch.compiler.is_compiling() else x.sin()

    result = gradcheck.check_gradients(differs_when_compiled, None, X, paths=("eager", "aot_eager"))
    assert [f.split(":")[0] for f in result.faults] == ["aot_eager path (torch.compile, backend 'aot_eager')"]
    assert "gradient of 'x' differs from eager's at 6/6 elements" in result.faults[0]
