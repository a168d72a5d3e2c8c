"""Regression networks with biases (seed 002), loss 1/2 (a - y)^2 with an identity output.

Single neuron: a = x w + b, cost the mean over examples: dw = x^T (a - y) / m, db = mean(a - y).
Two layers: z1 = x W1 + b1, a1 = ReLU(z1), a2 = a1 W2 + b2, cost 1/2 sum (a2 - y)^2:
dW2 = a1^T (a2 - y), db2 = sum(a2 - y), dW1 = x^T [((a2 - y) W2^T) * ReLU'(z1)],
db1 = sum[((a2 - y) W2^T) * ReLU'(z1)].
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays

from ._common import relu, xp_of


def single_neuron(x, y, w, b):
    """x (m, n), y (m,), w (n,), b (): mean_i 1/2 (x_i . w + b - y_i)^2."""
    xp = xp_of(x, y, w, b)
    r = x @ w + b - y
    return xp.mean(0.5 * r * r)


def single_neuron_backward(dout, x, y, w, b):
    """Per example dw = (a - y) x, db = a - y; averaged over the m examples."""
    r = x @ w + b - y
    return {"w": dout * x.T @ r / x.shape[0], "b": dout * np.asarray(np.mean(r))}


def two_layer(x, y, W1, b1, W2, b2):
    """x (m, n), y (m, k), W1 (n, h), b1 (h,), W2 (h, k), b2 (k,): 1/2 sum (a2 - y)^2."""
    xp = xp_of(x, y, W1, W2)
    a2 = relu(xp, x @ W1 + b1) @ W2 + b2
    r = a2 - y
    return 0.5 * xp.sum(r * r)


def two_layer_backward(dout, x, y, W1, b1, W2, b2):
    """The notes' four formulas; delta1 = ((a2 - y) W2^T) * ReLU'(z1) is (m, h)."""
    z1 = x @ W1 + b1
    a1 = np.maximum(z1, 0)
    e = (a1 @ W2 + b2 - y) * dout
    delta1 = (e @ W2.T) * (z1 > 0)
    return {"W1": x.T @ delta1, "b1": delta1.sum(axis=0), "W2": a1.T @ e, "b2": e.sum(axis=0)}


@st.composite
def single_inputs(draw):
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    return {"x": draw(float_arrays((m, n), max_magnitude=3.0, zeros=True)),
            "y": draw(float_arrays((m,), max_magnitude=3.0)),
            "w": draw(float_arrays((n,), max_magnitude=2.0)),
            "b": draw(float_arrays((), max_magnitude=2.0))}


@st.composite
def two_layer_inputs(draw, min_m=1):
    """x (m, n), y (m, k), W1 (n, h), b1 (h,), W2 (h, k), b2 (k,); m in min_m..4, n, h, k in 1..4."""
    m, n, h, k = draw(st.integers(min_m, 4)), *(draw(st.integers(1, 4)) for _ in range(3))
    return {"x": draw(float_arrays((m, n), max_magnitude=3.0, zeros=True)),
            "y": draw(float_arrays((m, k), max_magnitude=3.0)),
            "W1": draw(float_arrays((n, h), max_magnitude=2.0)),
            "b1": draw(float_arrays((h,), max_magnitude=2.0, zeros=True)),
            "W2": draw(float_arrays((h, k), max_magnitude=2.0)),
            "b2": draw(float_arrays((k,), max_magnitude=2.0))}


CASES = (
    Case(name="regression.single_neuron", forward=single_neuron, backward=single_neuron_backward,
         inputs=single_inputs(), wrt=("w", "b"), family="regression",
         description="a = x w + b, mean 1/2 (a - y)^2"),
    Case(name="regression.two_layer", forward=two_layer, backward=two_layer_backward,
         inputs=two_layer_inputs(), wrt=("W1", "b1", "W2", "b2"), family="regression",
         description="ReLU hidden layer with biases, identity output, 1/2 sum (a2 - y)^2"),
)
