"""The fused softmax cross-entropy, guarded by gradcheck: against numeric gradients on drawn
shapes, against its reference implementation in float64 and in bfloat16, and read the way a
time-major model reads it. The planted bugs (``planted.py``) are caught; the fixed op passes."""

import pytest
import torch
from hypothesis import strategies as st

import gradcheck
from fused_xent import FusedSoftmaxXent, fused_softmax_xent, softmax_xent_reference
from gradcheck.testing import gradient_test
from planted import AssumesContiguous, ScalarUpstream


def tokens(batch=2, steps=3, vocab=5, seed=0, dtype=torch.float64):
    """logits (B, T, V), targets (B, T) and weights (B, T), drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(batch, steps, vocab, generator=g, dtype=torch.float64).to(dtype),
        "targets": torch.randint(0, vocab, (batch, steps), generator=g),
        "weights": torch.rand(batch, steps, generator=g, dtype=torch.float64).to(dtype),
    }


@st.composite
def drawn_tokens(draw):
    """1 <= B, T <= 3 and 2 <= V <= 6, values from a seed Hypothesis draws."""
    sizes = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 6))
    return tokens(*sizes, seed=draw(st.integers(0, 2**16)))


def time_major(op):
    """The op's losses read time-major, ``(T, B)``, as a model stepping over time reads them:
    the upstream gradient then reaches the backward transposed (not contiguous)."""
    def forward(logits, targets, weights):
        return op(logits, targets, weights).transpose(0, 1)

    return forward


# 1. The decorator: drawn shapes and values, autograd's gradient (the hand-written backward)
#    against the numeric oracle with a random upstream gradient per token.
@gradient_test(FusedSoftmaxXent.apply, None, inputs=drawn_tokens(), examples=10)
def test_backward_on_drawn_shapes(result):
    assert [s.name for s in result.inputs] == ["logits", "weights"]


# 2. The fixture with the reference implementation: an exact oracle in float64 ...
def test_against_the_reference(gradcheck):
    result = gradcheck.assert_gradients(fused_softmax_xent, None, tokens(seed=1), reference=softmax_xent_reference)
    assert result.oracles == ("numeric", "reference")


# ... and in bfloat16: the fused op's error at most twice the reference's in bfloat16.
def test_bfloat16_within_twice_the_reference(gradcheck):
    result = gradcheck.assert_gradients(fused_softmax_xent, None, tokens(seed=2, dtype=torch.bfloat16),
                                        reference=softmax_xent_reference)
    assert [s.dtype for s in result.inputs] == ["bfloat16", "bfloat16"]


def test_read_time_major(gradcheck):
    gradcheck.assert_gradients(time_major(FusedSoftmaxXent.apply), None, tokens(seed=3))


# 3. The planted bugs, with plain assert_gradients (the run's summary counts only the checks
#    expected to pass).
def test_a_backward_that_reads_one_upstream_element_is_caught():
    """Caught by the plain check: its upstream gradient differs from token to token (the numeric
    oracle disagrees), and a constant one gives the same gradient (named "upstream")."""
    with pytest.raises(gradcheck.GradientMismatch) as caught:
        gradcheck.assert_gradients(ScalarUpstream.apply, None, tokens(seed=4))
    failed = [s for s in caught.value.result.inputs if not s.ok]
    assert {s.name for s in failed} == {"logits", "weights"}
    assert {s.diagnosis.kind for s in failed} == {"upstream"}


def test_a_backward_that_assumes_a_contiguous_upstream_gradient_is_caught():
    """Caught by the plain check, which also runs the backward with the upstream gradient
    transposed (named "layout") ..."""
    with pytest.raises(gradcheck.GradientMismatch) as caught:
        gradcheck.assert_gradients(AssumesContiguous.apply, None, tokens(seed=5))
    failed = [s for s in caught.value.result.inputs if not s.ok]
    assert {s.name for s in failed} == {"logits", "weights"}
    assert {s.diagnosis.kind for s in failed} == {"layout"}


def test_the_layout_bug_as_a_time_major_model_meets_it():
    """... and where the model reads the losses time-major, the upstream gradient arrives
    transposed in the check itself: the numeric oracle and the reference disagree."""
    with pytest.raises(gradcheck.GradientMismatch) as caught:
        gradcheck.assert_gradients(time_major(AssumesContiguous.apply), None, tokens(seed=5),
                                   reference=time_major(softmax_xent_reference))
    mismatches = caught.value.result.mismatches
    assert {m.input for m in mismatches} == {"logits", "weights"}
    assert all({"numeric", "reference"} <= set(m.against) for m in mismatches if m.input == "weights")


def test_plain_assert_gradients_without_the_plugin():
    gradcheck.assert_gradients(FusedSoftmaxXent.apply, None, tokens(seed=6), reference=softmax_xent_reference)
