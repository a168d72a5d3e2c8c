"""Two bugs planted in ``FusedSoftmaxXent``'s backward, as they happen in fused kernels.

Each variant changes only how the backward reads its upstream gradient ``grad_output``; the
tests show which check catches each.
"""

from __future__ import annotations

import torch

from fused_xent import FusedSoftmaxXent


def _row_major_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class AssumesContiguous(FusedSoftmaxXent):
    """Reads ``grad_output``'s memory as if it were row-major, as a kernel handed a bare data
    pointer does: right for a contiguous upstream gradient, scrambled for a transposed one."""

    @staticmethod
    def upstream(grad_output):
        return torch.as_strided(grad_output, grad_output.shape, _row_major_strides(grad_output.shape))


class ScalarUpstream(FusedSoftmaxXent):
    """Reads one element of ``grad_output`` for every token, as if the loss were always summed to a
    scalar first (then every token's upstream gradient is the same)."""

    @staticmethod
    def upstream(grad_output):
        return grad_output.reshape(-1)[0].expand(grad_output.shape)
