"""Chains of sigmoid neurons (seed 003), cost C0 = sum (a_L - y)^2.

One neuron per layer: z_l = w_l a_{l-1} + b_l, a_l = sigmoid(z_l);
dC0/dw_L = a_{L-1} s'(z_L) 2 (a_L - y), dC0/db_L = s'(z_L) 2 (a_L - y),
dC0/da_{L-1} = w_L s'(z_L) 2 (a_L - y), iterated backwards.
Several neurons per layer: the same with W_l (n_{l-1}, n_l): a neuron's gradient sums over all
paths, dC0/da_{l-1} = W_l (delta_l). Deep chains show vanishing gradients.
The float32 cases run the same chains in float32 (the backward keeps its inputs' dtype).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays

from ._common import sigmoid, sigmoid_np, xp_of

DEPTH = 4  # layers in the one-neuron chain
WIDE = 3  # layers in the wide chain


def one_per_layer(a0, y, w1, b1, w2, b2, w3, b3, w4, b4):
    xp = xp_of(a0, w1)
    a = a0
    for w, b in ((w1, b1), (w2, b2), (w3, b3), (w4, b4)):
        a = sigmoid(xp, w * a + b)
    return (a - y) * (a - y)


def one_per_layer_backward(dout, a0, y, **params):
    """Iterate backwards: da = 2 (a_L - y), then per layer dz = s'(z) da, dw = a_prev dz,
    db = dz, da_prev = w dz."""
    ws = [params[f"w{l}"] for l in range(1, DEPTH + 1)]
    bs = [params[f"b{l}"] for l in range(1, DEPTH + 1)]
    acts, zs = [a0], []
    for w, b in zip(ws, bs, strict=True):
        zs.append(w * acts[-1] + b)
        acts.append(sigmoid_np(zs[-1]))
    da = 2 * (acts[-1] - y) * dout
    grads = {}
    for l in reversed(range(DEPTH)):
        s = sigmoid_np(zs[l])
        dz = s * (1 - s) * da
        grads[f"w{l + 1}"] = acts[l] * dz
        grads[f"b{l + 1}"] = dz
        da = ws[l] * dz
    grads["a0"] = da
    return grads


def one_per_layer_jvp(tangents, a0, y, **params):
    """Forward mode, layer by layer: dz = dw a_prev + w da_prev + db, da = s'(z) dz; the cost's
    tangent is 2 (a_L - y) da_L."""
    a, da = a0, tangents["a0"]
    for l in range(1, DEPTH + 1):
        w, b = params[f"w{l}"], params[f"b{l}"]
        z = w * a + b
        dz = tangents[f"w{l}"] * a + w * da + tangents[f"b{l}"]
        a = sigmoid_np(z)
        da = a * (1 - a) * dz
    return 2 * (a - y) * da


def one_per_layer_hvp(vectors, a0, y, **params):
    """H v, forward mode over ``one_per_layer_backward``: the forward's tangents
    z_l' = v_wl a_{l-1} + w_l a_{l-1}' + v_bl, a_l' = s'(z_l) z_l', then each backward stage's:
    da_L' = 2 a_L', dz' = s''(z) z' da + s'(z) da', dw' = a_prev' dz + a_prev dz', db' = dz',
    da_prev' = v_w dz + w dz' (s' = s (1 - s), s'' = s' (1 - 2 s))."""
    ws = [params[f"w{l}"] for l in range(1, DEPTH + 1)]
    bs = [params[f"b{l}"] for l in range(1, DEPTH + 1)]
    vws = [vectors[f"w{l}"] for l in range(1, DEPTH + 1)]
    vbs = [vectors[f"b{l}"] for l in range(1, DEPTH + 1)]
    acts, acts_t, zs, zs_t = [a0], [vectors["a0"]], [], []
    for w, b, vw, vb in zip(ws, bs, vws, vbs, strict=True):
        zs.append(w * acts[-1] + b)
        zs_t.append(vw * acts[-1] + w * acts_t[-1] + vb)
        s = sigmoid_np(zs[-1])
        acts.append(s)
        acts_t.append(s * (1 - s) * zs_t[-1])
    da, da_t = 2 * (acts[-1] - y), 2 * acts_t[-1]
    out = {}
    for l in reversed(range(DEPTH)):
        s = sigmoid_np(zs[l])
        s1 = s * (1 - s)
        dz = s1 * da
        dz_t = s1 * (1 - 2 * s) * zs_t[l] * da + s1 * da_t
        out[f"w{l + 1}"] = acts_t[l] * dz + acts[l] * dz_t
        out[f"b{l + 1}"] = dz_t
        da, da_t = ws[l] * dz, vws[l] * dz + ws[l] * dz_t
    out["a0"] = da_t
    return out


def wide(a0, y, W1, b1, W2, b2, W3, b3):
    """a0 (n0,), W_l (n_{l-1}, n_l), b_l (n_l,), y (n3,): sum_j (a_j - y_j)^2."""
    xp = xp_of(a0, W1)
    a = a0
    for W, b in ((W1, b1), (W2, b2), (W3, b3)):
        a = sigmoid(xp, a @ W + b)
    return xp.sum((a - y) * (a - y))


def wide_backward(dout, a0, y, **params):
    """delta_L = 2 (a_L - y) s'(z_L); dW_l = outer(a_{l-1}, delta_l), db_l = delta_l,
    da_{l-1} = W_l delta_l (the sum over all paths through layer l)."""
    Ws = [params[f"W{l}"] for l in range(1, WIDE + 1)]
    bs = [params[f"b{l}"] for l in range(1, WIDE + 1)]
    acts, zs = [a0], []
    for W, b in zip(Ws, bs, strict=True):
        zs.append(acts[-1] @ W + b)
        acts.append(sigmoid_np(zs[-1]))
    da = 2 * (acts[-1] - y) * dout
    grads = {}
    for l in reversed(range(WIDE)):
        s = sigmoid_np(zs[l])
        delta = s * (1 - s) * da
        grads[f"W{l + 1}"] = np.outer(acts[l], delta)
        grads[f"b{l + 1}"] = delta
        da = Ws[l] @ delta
    grads["a0"] = da
    return grads


def wide_jvp(tangents, a0, y, **params):
    """Forward mode: dz_l = da_{l-1} W_l + a_{l-1} dW_l + db_l, da_l = s'(z_l) dz_l; the cost's
    tangent is sum_j 2 (a_j - y_j) da_j."""
    a, da = a0, tangents["a0"]
    for l in range(1, WIDE + 1):
        W, b = params[f"W{l}"], params[f"b{l}"]
        z = a @ W + b
        dz = da @ W + a @ tangents[f"W{l}"] + tangents[f"b{l}"]
        a = sigmoid_np(z)
        da = a * (1 - a) * dz
    return np.sum(2 * (a - y) * da)


def wide_hvp(vectors, a0, y, **params):
    """H v, forward mode over ``wide_backward``: z_l' = a_{l-1}' W_l + a_{l-1} V_l + v_bl,
    a_l' = s'(z_l) z_l'; delta_l' = s''(z_l) z_l' da + s'(z_l) da',
    dW_l' = outer(a_{l-1}', delta_l) + outer(a_{l-1}, delta_l'), db_l' = delta_l',
    da_{l-1}' = V_l delta_l + W_l delta_l'."""
    Ws = [params[f"W{l}"] for l in range(1, WIDE + 1)]
    bs = [params[f"b{l}"] for l in range(1, WIDE + 1)]
    Vs = [vectors[f"W{l}"] for l in range(1, WIDE + 1)]
    vbs = [vectors[f"b{l}"] for l in range(1, WIDE + 1)]
    acts, acts_t, zs, zs_t = [a0], [vectors["a0"]], [], []
    for W, b, V, vb in zip(Ws, bs, Vs, vbs, strict=True):
        zs.append(acts[-1] @ W + b)
        zs_t.append(acts_t[-1] @ W + acts[-1] @ V + vb)
        s = sigmoid_np(zs[-1])
        acts.append(s)
        acts_t.append(s * (1 - s) * zs_t[-1])
    da, da_t = 2 * (acts[-1] - y), 2 * acts_t[-1]
    out = {}
    for l in reversed(range(WIDE)):
        s = sigmoid_np(zs[l])
        s1 = s * (1 - s)
        delta = s1 * da
        delta_t = s1 * (1 - 2 * s) * zs_t[l] * da + s1 * da_t
        out[f"W{l + 1}"] = np.outer(acts_t[l], delta) + np.outer(acts[l], delta_t)
        out[f"b{l + 1}"] = delta_t
        da, da_t = Ws[l] @ delta, Vs[l] @ delta + Ws[l] @ delta_t
    out["a0"] = da_t
    return out


def scalar(dtype=np.float64):
    return float_arrays((), max_magnitude=3.0, dtype=dtype)


ONE_NAMES = [f"{p}{l}" for l in range(1, DEPTH + 1) for p in ("w", "b")]


@st.composite
def wide_inputs(draw, dtype=np.float64):
    sizes = [draw(st.integers(1, 4)) for _ in range(WIDE + 1)]
    out = {"a0": draw(float_arrays((sizes[0],), max_magnitude=2.0, dtype=dtype)),
           "y": draw(float_arrays((sizes[-1],), min_magnitude=0.05, max_magnitude=0.95, dtype=dtype))}
    for l in range(1, WIDE + 1):
        out[f"W{l}"] = draw(float_arrays((sizes[l - 1], sizes[l]), max_magnitude=3.0, dtype=dtype))
        out[f"b{l}"] = draw(float_arrays((sizes[l],), max_magnitude=2.0, zeros=True, dtype=dtype))
    return out


def one_inputs(dtype=np.float64):
    return st.fixed_dictionaries({"a0": scalar(dtype), "y": float_arrays((), min_magnitude=0.05, max_magnitude=0.95,
                                                                          dtype=dtype),
                                  **{n: scalar(dtype) for n in ONE_NAMES}})


CASES = (
    Case(name="sigmoid_chain.one_per_layer", forward=one_per_layer, backward=one_per_layer_backward,
         inputs=one_inputs(),
         wrt=("a0", *ONE_NAMES), layers=tuple(f"w{l}" for l in range(1, DEPTH + 1)), family="sigmoid_chain",
         description=f"{DEPTH} sigmoid neurons in a chain, (a_L - y)^2, and its Hessian-vector product",
         jvp=one_per_layer_jvp, order=2, hvp=one_per_layer_hvp),
    Case(name="sigmoid_chain.one_per_layer_float32", forward=one_per_layer, backward=one_per_layer_backward,
         inputs=one_inputs(np.float32), wrt=("a0", *ONE_NAMES), layers=tuple(f"w{l}" for l in range(1, DEPTH + 1)),
         family="sigmoid_chain", description=f"{DEPTH} sigmoid neurons in a chain, run in float32"),
    Case(name="sigmoid_chain.wide", forward=wide, backward=wide_backward, inputs=wide_inputs(),
         wrt=("a0", *[f"{p}{l}" for l in range(1, WIDE + 1) for p in ("W", "b")]),
         layers=tuple(f"W{l}" for l in range(1, WIDE + 1)), family="sigmoid_chain",
         description=f"{WIDE} sigmoid layers of several neurons, sum_j (a_j - y_j)^2, and its Hessian-vector product",
         jvp=wide_jvp, order=2, hvp=wide_hvp),
    Case(name="sigmoid_chain.wide_float32", forward=wide, backward=wide_backward, inputs=wide_inputs(np.float32),
         wrt=("a0", *[f"{p}{l}" for l in range(1, WIDE + 1) for p in ("W", "b")]),
         layers=tuple(f"W{l}" for l in range(1, WIDE + 1)), family="sigmoid_chain",
         description=f"{WIDE} sigmoid layers of several neurons, run in float32"),
)
