"""Pieces shared by the reference families: the array namespace and stable numerics."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np


def xp_of(*arrays: Any) -> Any:
    """The array namespace of the arrays (numpy or torch, through array_api_compat)."""
    return array_api_compat.array_namespace(*arrays)


def sigmoid(xp: Any, z: Any) -> Any:
    """``1 / (1 + e^-z)`` in the namespace ``xp``."""
    return 1.0 / (1.0 + xp.exp(-z))


def relu(xp: Any, z: Any) -> Any:
    """``max(z, 0)`` elementwise."""
    return xp.where(z > 0, z, xp.zeros_like(z))


def softmax_xent(xp: Any, logits: Any, y: Any) -> Any:
    """Mean softmax cross-entropy of ``logits`` (m, k) against integer labels ``y`` (m,).

    Subtracts the row maximum first, so logits of any size do not overflow.
    """
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    onehot = xp.astype(y[:, None] == xp.arange(logits.shape[-1])[None, :], shifted.dtype)
    lse = xp.log(xp.sum(xp.exp(shifted), axis=-1))
    return xp.mean(lse - xp.sum(shifted * onehot, axis=-1))


def softmax_np(logits: np.ndarray) -> np.ndarray:
    """Row softmax of ``logits`` (m, k), max-subtracted."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onehot_np(y: np.ndarray, k: int, dtype: Any = np.float64) -> np.ndarray:
    """``I_y``: (m, k) with a one at ``(i, y_i)``, in ``dtype``."""
    out = np.zeros((len(y), k), dtype=dtype)
    out[np.arange(len(y)), y] = 1.0
    return out


def sigmoid_np(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
