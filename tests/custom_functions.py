"""Custom ``torch.autograd.Function``s for the custom-op checks: one correct, the rest with the
bugs that finite differences on contiguous float64 tensors with ``loss.sum()`` do not show.

Each is a forward of tensors (``apply``) for ``check_gradients(fn, None, inputs)``; the
shapes are in the docstrings. Small on purpose: the tests run each many times.
"""

from __future__ import annotations

import torch


class Linear(torch.autograd.Function):
    """Correct: ``y = x @ W``, x (m, n), W (n, k) -> y (m, k); any strides."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(x, W)
        return x @ W

    @staticmethod
    def backward(ctx, grad_output):
        x, W = ctx.saved_tensors
        return grad_output @ W.T, x.T @ grad_output


class ViewedSquare(torch.autograd.Function):
    """``y = x**2`` (any shape); the backward flattens ``grad_output`` with ``.view(-1)``, which
    raises on a transposed, narrowed or expanded ``grad_output``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        flat = grad_output.view(-1)
        return (2 * x.reshape(-1) * flat).reshape(x.shape)


class PointerSquare(torch.autograd.Function):
    """``y = x**2`` (any shape); the backward reads ``grad_output``'s memory as if it were
    contiguous (from its storage offset, as a kernel indexing from ``data_ptr`` does): right on
    contiguous tensors, wrong values on a transposed or narrowed one."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        contiguous = [1] * grad_output.ndim
        for k in range(grad_output.ndim - 2, -1, -1):
            contiguous[k] = contiguous[k + 1] * grad_output.shape[k + 1]
        read = grad_output.as_strided(grad_output.shape, contiguous, grad_output.storage_offset())
        return 2 * x * read


class PointerInputSquare(torch.autograd.Function):
    """``y = x**2``; the backward reads the saved ``x`` as if it were contiguous: wrong when the
    input itself comes transposed."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        contiguous = [1] * x.ndim
        for k in range(x.ndim - 2, -1, -1):
            contiguous[k] = contiguous[k + 1] * x.shape[k + 1]
        return 2 * x.as_strided(x.shape, contiguous, x.storage_offset()) * grad_output


class ScalarSin(torch.autograd.Function):
    """``y = sin(x)``; the backward loads ``grad_output`` as one scalar, its mean, times the local
    gradient: right for ``loss.mean()``, wrong for per-token weights."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output.mean() * torch.cos(x)


class FirstSin(torch.autograd.Function):
    """``y = sin(x)``; the backward takes ``grad_output``'s first element as the upstream
    gradient of every element: right for ``loss.sum()``, wrong for anything else."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output.reshape(-1)[0] * torch.cos(x)


class RowScale(torch.autograd.Function):
    """``y = x * s[:, None]``: x (m, k), s (m,) -> y (m, k); the backward averages
    ``grad_output`` over the rows and broadcasts it back down them (as for a per-column bias),
    so per-row upstream gradients are lost: right for ``loss.sum()``."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x, s)
        return x * s[:, None]

    @staticmethod
    def backward(ctx, grad_output):
        x, s = ctx.saved_tensors
        g = grad_output.mean(dim=0, keepdim=True).expand_as(grad_output)
        return g * s[:, None], (g * x).sum(dim=1)


class ShuffledLinear(torch.autograd.Function):
    """Correct: ``y = x @ W`` as ``Linear``, with ``dW`` summed over the rows in a random order
    on every call (as atomic adds land): the gradients differ from run to run by rounding."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(x, W)
        return x @ W

    @staticmethod
    def backward(ctx, grad_output):
        x, W = ctx.saved_tensors
        dW = torch.zeros_like(W)
        for i in torch.randperm(x.shape[0]).tolist():
            dW += torch.outer(x[i], grad_output[i])
        return grad_output @ W.T, dW


class RacyLinear(torch.autograd.Function):
    """``y = x @ W`` with a race in ``dW``: each call's result is off by a random relative 1e-9
    (far beyond rounding; small enough that one comparison with the oracles passes)."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(x, W)
        return x @ W

    @staticmethod
    def backward(ctx, grad_output):
        x, W = ctx.saved_tensors
        dW = x.T @ grad_output
        return grad_output @ W.T, dW * (1 + 1e-9 * torch.randn(dW.shape, dtype=dW.dtype))


def linear(x, W):
    return Linear.apply(x, W)


def viewed_square(x):
    return ViewedSquare.apply(x)


def pointer_square(x):
    return PointerSquare.apply(x)


def pointer_input_square(x):
    return PointerInputSquare.apply(x)


def scalar_sin(x):
    return ScalarSin.apply(x)


def first_sin(x):
    return FirstSin.apply(x)


def row_scale(x, s):
    return RowScale.apply(x, s)


def shuffled_linear(x, W):
    return ShuffledLinear.apply(x, W)


def racy_linear(x, W):
    return RacyLinear.apply(x, W)
