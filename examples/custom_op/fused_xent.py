"""A fused softmax cross-entropy with per-token weights: the custom op this project guards.

For logits ``(B, T, V)``, integer targets ``(B, T)`` and weights ``(B, T)``, each token's loss is
its weight times the cross-entropy of its logits against its target::

    loss[b, t] = weights[b, t] * (logsumexp(logits[b, t, :]) - logits[b, t, targets[b, t]])

``FusedSoftmaxXent`` computes it in one pass and saves only the log-sum-exp for its hand-written
backward, as a fused kernel would; ``softmax_xent_reference`` is the slow, obviously right
version, differentiated by autograd. ``planted.py`` holds two buggy variants of the backward.
"""

from __future__ import annotations

import torch


def softmax_xent_reference(logits, targets, weights):
    """(B, T, V), (B, T) int, (B, T) -> (B, T): the per-token weighted loss, by autograd."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return weights * (torch.logsumexp(logits, dim=-1) - picked)


class FusedSoftmaxXent(torch.autograd.Function):
    """``softmax_xent_reference`` with a hand-written backward.

    With ``p = softmax(logits)`` and ``g = grad_output`` (``(B, T)``, any strides)::

        d logits  = (g * weights)[..., None] * (p - onehot(targets))
        d weights = g * (lse - logits[target])
    """

    @staticmethod
    def forward(logits, targets, weights):
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return weights * (lse - picked)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, targets, weights = inputs
        ctx.save_for_backward(logits, targets, weights, torch.logsumexp(logits, dim=-1))

    @classmethod
    def backward(cls, ctx, grad_output):
        logits, targets, weights, lse = ctx.saved_tensors
        g = cls.upstream(grad_output)
        p = torch.exp(logits - lse.unsqueeze(-1))
        onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).to(logits.dtype)
        d_logits = (g * weights).unsqueeze(-1) * (p - onehot)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return d_logits, None, g * (lse - picked)

    @staticmethod
    def upstream(grad_output):
        """The upstream gradient as the backward reads it: here, as given (any strides)."""
        return grad_output


def fused_softmax_xent(logits, targets, weights):
    """The op as the model calls it."""
    return FusedSoftmaxXent.apply(logits, targets, weights)
