"""The two-layer softmax network and its SGD epoch (seeds 000 and 001, CMU 10-714 hw0), and the
general L-layer form ("Backpropagation in general").

loss = mean_i softmax_xent(ReLU(X W1) W2, y) with X (m, n), W1 (n, d), W2 (d, k), y (m,) ints.
Backward: Z1 = ReLU(X W1), G2 = softmax(Z1 W2) - I_y, G1 = 1{Z1 > 0} * (G2 W2^T),
dW1 = X^T G1 / m, dW2 = Z1^T G2 / m.

The backward keeps its inputs' dtype: the float32 cases run forward and backward in float32.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays, labels

from ._common import onehot_np, relu, softmax_np, softmax_xent, xp_of


def softmax_net(X, y, W1, W2):
    """Mean softmax cross-entropy of ReLU(X W1) W2 against y."""
    xp = xp_of(X, W1, W2)
    return softmax_xent(xp, relu(xp, X @ W1) @ W2, y)


def batch_gradients(X, y, W1, W2, divisor):
    """The notes' gradients on one (mini)batch, divided by ``divisor``: (dW1, dW2), in the
    inputs' dtype."""
    Z1 = np.maximum(X @ W1, 0)
    logits = Z1 @ W2
    G2 = softmax_np(logits) - onehot_np(y, W2.shape[1], logits.dtype)
    G1 = (Z1 > 0) * (G2 @ W2.T)
    return X.T @ G1 / divisor, Z1.T @ G2 / divisor


def softmax_net_backward(dout, X, y, W1, W2):
    """dW1 = X^T G1 / m (n, d); dW2 = Z1^T G2 / m (d, k)."""
    dW1, dW2 = batch_gradients(X, y, W1, W2, X.shape[0])
    return {"W1": dout * dW1, "W2": dout * dW2}


def softmax_net_jvp(tangents, X, y, W1, W2):
    """Forward mode along dW1, dW2: dZ1 = 1{X W1 > 0} * (X dW1); dlogits = dZ1 W2 + Z1 dW2;
    dloss = sum((softmax(logits) - I_y) * dlogits) / m."""
    dW1, dW2 = tangents["W1"], tangents["W2"]
    A = X @ W1
    Z1 = np.maximum(A, 0)
    dZ1 = (A > 0) * (X @ dW1)
    dlogits = dZ1 @ W2 + Z1 @ dW2
    G2 = softmax_np(Z1 @ W2) - onehot_np(y, W2.shape[1])
    return np.sum(G2 * dlogits) / X.shape[0]


def softmax_net_hvp(vectors, X, y, W1, W2):
    """H v for v = (V1, V2), forward mode over the backward: Z1' = M * (X V1) with the ReLU mask
    M = 1{X W1 > 0} (constant where differentiable), logits' = Z1' W2 + Z1 V2, the softmax's
    tangent S' = S * (logits' - rowsum(S * logits')), G2' = S' / m; then
    dW2' = Z1'^T G2 + Z1^T G2' and dW1' = X^T (M * (G2' W2^T + G2 V2^T))."""
    V1, V2 = vectors["W1"], vectors["W2"]
    m = X.shape[0]
    A1 = X @ W1
    M = A1 > 0
    Z1 = np.maximum(A1, 0)
    S = softmax_np(Z1 @ W2)
    G2 = (S - onehot_np(y, W2.shape[1])) / m
    Z1_t = M * (X @ V1)
    logits_t = Z1_t @ W2 + Z1 @ V2
    G2_t = S * (logits_t - np.sum(S * logits_t, axis=1, keepdims=True)) / m
    return {"W1": X.T @ (M * (G2_t @ W2.T + G2 @ V2.T)), "W2": Z1_t.T @ G2 + Z1.T @ G2_t}


def nn_epoch(X, y, W1, W2, lr=0.1, batch=100):
    """One epoch of SGD over X in order, minibatches of ``batch`` rows, updating W1 and W2 in
    place. Each step divides by the actual size of its minibatch (the last may be shorter);
    the softmax is max-subtracted. Works in float32 (the updates keep W's dtype)."""
    for start in range(0, X.shape[0], batch):
        Xb, yb = X[start:start + batch], y[start:start + batch]
        dW1, dW2 = batch_gradients(Xb, yb, W1, W2, Xb.shape[0])
        W1 -= (lr * dW1).astype(W1.dtype)
        W2 -= (lr * dW2).astype(W2.dtype)


def nn_epoch_published(X, y, W1, W2, lr=0.1, batch=100):
    """The notes' nn_epoch as published: divides by the nominal ``batch`` even on a shorter
    final minibatch, and exponentiates logits without subtracting their maximum."""
    num_classes = W2.shape[1]
    for start in range(0, X.shape[0], batch):
        end = min(start + batch, X.shape[0])
        X_batch, y_batch = X[start:end], y[start:end]
        Z1 = np.maximum(0, X_batch @ W1)
        exp_logits = np.exp(Z1 @ W2)
        probs = exp_logits / np.sum(exp_logits, axis=1, keepdims=True)
        I_y = np.zeros((len(y_batch), num_classes))
        I_y[np.arange(len(y_batch)), y_batch] = 1
        G2 = probs - I_y
        G1 = (Z1 > 0).astype(np.float32) * (G2 @ W2.T)
        W1 -= lr * (X_batch.T @ G1 / batch)
        W2 -= lr * (Z1.T @ G2 / batch)


@st.composite
def net_inputs(draw, max_m=6, kinks=True, logit_scale=1.0, min_m=1, dtype=np.float64):
    """X (m, n), y (m,), W1 (n, d), W2 (d, k) with m in min_m..max_m, n, d in 1..5, k in 2..4. Some W1 have a
    zero column and some X rows are zero (ReLU exactly at its kink); ``logit_scale`` makes
    logits large (a naive softmax overflows at ~1e3, in float32 at ~90). Floats in ``dtype``."""
    m, n, d = draw(st.integers(min_m, max_m)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    k = draw(st.integers(2, 4))
    X = draw(float_arrays((m, n), max_magnitude=3.0, dtype=dtype))
    W1 = draw(float_arrays((n, d), max_magnitude=2.0, dtype=dtype))
    W2 = (draw(float_arrays((d, k), max_magnitude=2.0, dtype=dtype)) * logit_scale).astype(dtype)
    if kinks and draw(st.booleans()):
        W1[:, draw(st.integers(0, d - 1))] = 0.0
    return {"X": X, "y": draw(labels(m, k)), "W1": W1, "W2": W2}


def llayer_net(X, y, W1, W2, W3):
    """Z_{i+1} = ReLU(Z_i W_i) for the hidden layers, logits Z_3 W3, softmax cross-entropy."""
    xp = xp_of(X, W1, W2, W3)
    Z = relu(xp, relu(xp, X @ W1) @ W2)
    return softmax_xent(xp, Z @ W3, y)


def llayer_backward(dout, X, y, W1, W2, W3):
    """G_{L+1} = (S - I_y)/m; for i = L..1: dW_i = Z_i^T (G_{i+1} * s_i'(Z_i W_i)),
    G_i = (G_{i+1} * s_i'(Z_i W_i)) W_i^T; s' = 1{> 0} for ReLU, 1 for the output layer."""
    Ws = [W1, W2, W3]
    Zs, pre = [X], []
    for i, W in enumerate(Ws):
        a = Zs[-1] @ W
        pre.append(a)
        Zs.append(np.maximum(a, 0) if i < len(Ws) - 1 else a)
    G = (softmax_np(Zs[-1]) - onehot_np(y, W3.shape[1])) / X.shape[0] * dout
    grads = {}
    for i in reversed(range(len(Ws))):
        local = G * ((pre[i] > 0) if i < len(Ws) - 1 else 1.0)
        grads[f"W{i + 1}"] = Zs[i].T @ local
        G = local @ Ws[i].T
    return grads


@st.composite
def llayer_inputs(draw):
    m, n, d1, d2, k = (draw(st.integers(1, 4)) for _ in range(5))
    k = max(k, 2)
    return {
        "X": draw(float_arrays((m, n), max_magnitude=3.0)), "y": draw(labels(m, k)),
        "W1": draw(float_arrays((n, d1), max_magnitude=2.0)),
        "W2": draw(float_arrays((d1, d2), max_magnitude=2.0)),
        "W3": draw(float_arrays((d2, k), max_magnitude=2.0)),
    }


def minibatch_backward(dout, X, y, W1, W2):
    """The gradient nn_epoch applies on a minibatch: divided by its actual size."""
    dW1, dW2 = batch_gradients(X, y, W1, W2, X.shape[0])
    return {"W1": dout * dW1, "W2": dout * dW2}


NOMINAL_BATCH = 8


@st.composite
def short_batch_inputs(draw):
    """A final minibatch shorter than the nominal ``NOMINAL_BATCH`` rows."""
    inputs = draw(net_inputs(max_m=NOMINAL_BATCH - 1, kinks=False))
    return inputs


CASES = (
    Case(name="twolayer.softmax_net", forward=softmax_net, backward=softmax_net_backward,
         inputs=st.one_of(net_inputs(), net_inputs(logit_scale=400.0)), wrt=("W1", "W2"), jvp=softmax_net_jvp,
         order=2, hvp=softmax_net_hvp, family="twolayer",
         description="mean softmax xent of ReLU(X W1) W2 (large logits too), and its Hessian-vector product"),
    Case(name="twolayer.softmax_net_float32", forward=softmax_net, backward=softmax_net_backward,
         inputs=st.one_of(net_inputs(dtype=np.float32), net_inputs(logit_scale=50.0, dtype=np.float32)),
         wrt=("W1", "W2"), family="twolayer",
         description="the same net run in float32, held to float64 with twice float32 autograd's error"),
    Case(name="twolayer.nn_epoch_batch", forward=softmax_net, backward=minibatch_backward,
         inputs=short_batch_inputs(), wrt=("W1", "W2"),
         description=f"nn_epoch's step on a final minibatch shorter than batch={NOMINAL_BATCH}",
         family="twolayer"),
    Case(name="twolayer.llayer_relu", forward=llayer_net, backward=llayer_backward,
         inputs=llayer_inputs(), wrt=("W1", "W2", "W3"), layers=("W1", "W2", "W3"),
         description="three layers, Z_{i+1} = ReLU(Z_i W_i), general backward iteration",
         family="twolayer"),
)
