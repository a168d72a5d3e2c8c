"""Matrix multiply (seed 001, "Gradients for vectorized operations").

D = W @ X with W (n, k) and X (k, p), or X a vector (k,) so that D is (n,). With upstream dD:
dW = dD @ X.T (an outer product for a vector X) and dX = W.T @ dD.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays


def matmul(W, X):
    return W @ X


def matmul_backward(dout, W, X):
    """dW = dD @ X.T (n, k); dX = W.T @ dD (k, p) or (k,)."""
    dD = np.asarray(dout)
    dW = np.outer(dD, X) if X.ndim == 1 else dD @ X.T
    return {"W": dW, "X": W.T @ dD}


@st.composite
def matmul_inputs(draw):
    """n, k, p in 1..4 (1-sized dimensions included); X a vector one time in four."""
    n, k, p = (draw(st.integers(1, 4)) for _ in range(3))
    vector = draw(st.integers(0, 3)) == 0
    return {
        "W": draw(float_arrays((n, k), max_magnitude=3.0, zeros=True)),
        "X": draw(float_arrays((k,) if vector else (k, p), max_magnitude=3.0, zeros=True)),
    }


CASES = (
    Case(name="matmul.dW_dX", forward=matmul, backward=matmul_backward, inputs=matmul_inputs(),
         description="D = W @ X: dW = dD X^T, dX = W^T dD", family="matmul"),
)
