"""A layer norm with a hand-written backward pass: the code this project wants to guard.

``layer_norm`` normalizes each row of ``x`` (shape ``(..., D)``) to mean 0 and variance 1, then
scales by ``gamma`` and shifts by ``beta`` (both ``(D,)``)::

    y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta

It is written against the array API, so it runs on numpy arrays and on torch tensors alike.
``layer_norm_backward`` is the hand-written gradient; ``LayerNormFunction`` is the same pair as
a custom ``torch.autograd.Function``, and ``LayerNorm`` a module built on it.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import torch

EPS = 1e-5


def layer_norm(x, gamma, beta):
    """(..., D), (D,), (D,) -> (..., D)."""
    xp = array_api_compat.array_namespace(x, gamma, beta)
    xc = x - xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean(xc * xc, axis=-1, keepdims=True)
    return xc / xp.sqrt(var + EPS) * gamma + beta


def layer_norm_backward(dout, x, gamma, beta):
    """Gradients of ``sum(dout * layer_norm(x, gamma, beta))``; ``dout`` is shaped like ``x``.

    With ``xhat = (x - mean) * rstd`` and ``g = dout * gamma`` (per row)::

        dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum over rows of dout * xhat
        dbeta  = sum over rows of dout
    """
    d = x.shape[-1]
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + EPS)
    xhat = xc * rstd
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dgamma = (dout * xhat).reshape(-1, d).sum(axis=0)
    dbeta = np.reshape(dout, (-1, d)).sum(axis=0)
    return {"x": dx, "gamma": dgamma, "beta": dbeta}


class LayerNormFunction(torch.autograd.Function):
    """``layer_norm`` as a custom autograd Function with the same hand-written backward."""

    @staticmethod
    def forward(x, gamma, beta):
        xc = x - x.mean(dim=-1, keepdim=True)
        rstd = torch.rsqrt((xc * xc).mean(dim=-1, keepdim=True) + EPS)
        return xc * rstd * gamma + beta

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, gamma, _ = inputs
        xc = x - x.mean(dim=-1, keepdim=True)
        rstd = torch.rsqrt((xc * xc).mean(dim=-1, keepdim=True) + EPS)
        ctx.save_for_backward(xc * rstd, rstd, gamma)

    @staticmethod
    def backward(ctx, dout):
        xhat, rstd, gamma = ctx.saved_tensors
        g = dout * gamma
        dx = rstd * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))
        d = xhat.shape[-1]
        return dx, (dout * xhat).reshape(-1, d).sum(dim=0), dout.reshape(-1, d).sum(dim=0)


class LayerNorm(torch.nn.Module):
    """A layer norm module over the last axis of size ``d``, using ``LayerNormFunction``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.ones(d))
        self.beta = torch.nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return LayerNormFunction.apply(x, self.gamma, self.beta)
