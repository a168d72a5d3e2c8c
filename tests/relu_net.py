"""The seeds' two-layer ReLU softmax net with a numpy-only forward (so only the numeric oracle
runs) and the notes' hand-written backward, for tests that need a realistic net at a chosen size.
"""

import numpy as np

from gradcheck_reference import twolayer

WRT = ("W1", "W2")

backward = twolayer.softmax_net_backward


def forward(X, y, W1, W2):
    """``mean softmax_xent(ReLU(X W1) W2, y)`` in plain numpy."""
    Z1 = np.maximum(X @ W1, 0)
    L = Z1 @ W2
    L = L - L.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(L).sum(axis=1)) - L[np.arange(len(y)), y])


def inputs(seed, m=32, n=40, d=30, k=5):
    """X (m, n), labels y (m,) in [0, k), W1 (n, d), W2 (d, k), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "X": rng.standard_normal((m, n)),
        "y": rng.integers(0, k, m),
        "W1": rng.standard_normal((n, d)) / np.sqrt(n),
        "W2": rng.standard_normal((d, k)) / np.sqrt(d),
    }
