"""Known-buggy backward passes: realistic mistakes the harness must catch.

Each variant reuses a correct forward and changes only the backward (or, for a bug that shows
only in a low dtype, the forward; for forward mode, only the ``jvp``); ``bug`` says what is wrong
and ``expected_diagnosis`` the kind of wrong the harness should name (None: no simple pattern, or
a fault).
"""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays

from . import complex as complex_cases
from . import gates, matmul, multi, regression, sigmoid_chain, staged, twolayer
from ._common import onehot_np, relu, sigmoid_np, softmax_np, xp_of


def _published_batch_gradients(X, y, W1, W2, batch):
    """The notes' nn_epoch step: nominal ``batch`` divisor and an unshifted exp."""
    Z1 = np.maximum(0, X @ W1)
    with np.errstate(over="ignore", invalid="ignore"):  # reproduced as published
        exp_logits = np.exp(Z1 @ W2)
        probs = exp_logits / np.sum(exp_logits, axis=1, keepdims=True)
    G2 = probs - onehot_np(y, W2.shape[1])
    G1 = (Z1 > 0) * (G2 @ W2.T)
    return X.T @ G1 / batch, Z1.T @ G2 / batch


def nn_epoch_nominal_batch(dout, X, y, W1, W2):
    dW1, dW2 = _published_batch_gradients(X, y, W1, W2, twolayer.NOMINAL_BATCH)
    return {"W1": dout * dW1, "W2": dout * dW2}


def unshifted_softmax(dout, X, y, W1, W2):
    dW1, dW2 = _published_batch_gradients(X, y, W1, W2, X.shape[0])
    return {"W1": dout * dW1, "W2": dout * dW2}


def missing_minus_iy(dout, X, y, W1, W2):
    Z1 = np.maximum(X @ W1, 0)
    G2 = softmax_np(Z1 @ W2)  # - I_y forgotten
    G1 = (Z1 > 0) * (G2 @ W2.T)
    m = X.shape[0]
    return {"W1": dout * X.T @ G1 / m, "W2": dout * Z1.T @ G2 / m}


def missing_one_over_m(dout, X, y, W1, W2):
    dW1, dW2 = twolayer.batch_gradients(X, y, W1, W2, 1)
    return {"W1": dout * dW1, "W2": dout * dW2}


def relu_mask_left_out(dout, X, y, W1, W2):
    Z1 = np.maximum(X @ W1, 0)
    G2 = softmax_np(Z1 @ W2) - onehot_np(y, W2.shape[1])
    G1 = G2 @ W2.T  # 1{Z1 > 0} * forgotten
    m = X.shape[0]
    return {"W1": dout * X.T @ G1 / m, "W2": dout * Z1.T @ G2 / m}


def staged_assign_at_fork(dout, x, y):
    grads = staged.f_xy_backward(dout, x, y)
    # dx = 1 * dnum instead of dx += 1 * dnum: the earlier contributions to dx are lost
    invden = 1.0 / (sigmoid_np(x) + (x + y) ** 2)
    return {"x": invden * dout, "y": grads["y"]}


def transposed_dW(dout, W, X):
    grads = matmul.matmul_backward(dout, W, X)
    return {"W": grads["W"].T, "X": grads["X"]}


def sigmoid_s_not_s1ms(dout, x):
    return {"x": dout * sigmoid_np(x)}


def add_splits_gradient(dout, x, y):
    return {"x": 0.5 * dout * np.ones_like(x), "y": 0.5 * dout * np.ones_like(y)}


def regression_residual_sign(dout, x, y, w, b):
    r = y - (x @ w + b)  # (y - a) instead of (a - y)
    return {"w": dout * x.T @ r / x.shape[0], "b": dout * np.asarray(np.mean(r))}


def multiply_swapped(dout, x, y):
    return {"x": dout * x, "y": dout * y}


def bias_not_summed(dout, x, y, W1, b1, W2, b2):
    grads = regression.two_layer_backward(dout, x, y, W1, b1, W2, b2)
    e = (np.maximum(x @ W1 + b1, 0) @ W2 + b2 - y) * dout
    grads["b2"] = e[0]  # only the first example's contribution
    return grads


def reciprocal_missing_sign(dout, x):
    return {"x": dout / (x * x)}


def staged_jvp_without_sigmoid_term(tangents, x, y):
    """The staged f's forward mode with the sigmoid(x) stage's tangent left out of den's:
    dden = dxpysqr (the term (1 - sigx) sigx dx forgotten)."""
    dx, dy = tangents["x"], tangents["y"]
    sigy = sigmoid_np(y)
    num = x + sigy
    dnum = dx + (1 - sigy) * sigy * dy
    xpy = x + y
    den = sigmoid_np(x) + xpy**2
    dden = 2 * xpy * (dx + dy)
    return dnum / den - num * dden / den**2


def lstm_dh_not_through_c(dout, x, h0, c0, Wx, Wh, b):
    """The cell state's gradient taken as the upstream dc alone: dh's path into c (through
    h = o tanh(c)) is dropped at the fork, so only the gradient through output h is wrong."""
    dh, dc = dout
    i, f, o, g = multi.lstm_gates(x, h0, Wx, Wh, b)
    t = np.tanh(f * c0 + i * g)
    return multi.lstm_gate_gradients(np.asarray(dc), dh * t, i, f, o, g, c0, x, h0, Wx, Wh)


def linear_not_conjugated(dout, W, x, b):
    """The Wirtinger derivative dL/dW = conj(g) x^T returned without the final conjugate that
    torch's convention (dL/d(Re W) + i dL/d(Im W) = g x^H) takes: every gradient is conjugated."""
    g = np.conj(dout)
    return {"W": np.outer(g, x), "x": W.T @ g, "b": g}


@st.composite
def square_matmul(draw):
    n = draw(st.integers(2, 4))
    return {"W": draw(float_arrays((n, n), max_magnitude=3.0)), "X": draw(float_arrays((n, n), max_magnitude=3.0))}


@st.composite
def short_batch(draw):
    inputs = draw(twolayer.net_inputs(max_m=twolayer.NOMINAL_BATCH - 1, kinks=False))
    return inputs


@st.composite
def overflowing_logits(draw):
    """Two-layer net inputs scaled so that the largest logit is past 1000: e^1000 overflows."""
    inputs = draw(twolayer.net_inputs(kinks=False).filter(
        lambda d: np.max(np.maximum(d["X"] @ d["W1"], 0) @ d["W2"]) > 0.1))
    top = np.max(np.maximum(inputs["X"] @ inputs["W1"], 0) @ inputs["W2"])
    inputs["W2"] = inputs["W2"] * (draw(st.floats(1000.0, 2000.0)) / top)
    return inputs


def softmax_net_max_free(X, y, W1, W2):
    """The notes' softmax as published, as a loss: ``exp`` of the logits without subtracting
    their maximum, normalized, and the log of the true class' probability. In float32 ``exp``
    overflows past logits of ~88.7 and the loss is NaN (inf / inf); in float64 it is finite up to
    ~709, so checked on float64 copies alone the bug never shows."""
    xp = xp_of(X, W1, W2)
    logits = relu(xp, X @ W1) @ W2
    e = xp.exp(logits)
    probs = e / xp.sum(e, axis=-1, keepdims=True)
    onehot = xp.astype(y[:, None] == xp.arange(logits.shape[-1])[None, :], logits.dtype)
    return -xp.mean(xp.log(xp.sum(probs * onehot, axis=-1)))


@st.composite
def logits_near_100(draw, dtype=np.float32):
    """Two-layer net inputs in ``dtype`` scaled so that the largest logit is 90..110: a trained
    classifier's confident logits, past float32's exp overflow at ~88.7."""
    inputs = draw(twolayer.net_inputs(kinks=False).filter(
        lambda d: np.max(np.maximum(d["X"] @ d["W1"], 0) @ d["W2"]) > 0.1))
    top = np.max(np.maximum(inputs["X"] @ inputs["W1"], 0) @ inputs["W2"])
    inputs["W2"] = inputs["W2"] * (draw(st.floats(90.0, 110.0)) / top)
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in inputs.items()}


def max_to_both_at_ties(dout, x, y):
    """The notes' local gradients of max written literally: 1(x >= y) and 1(y >= x). Where x == y
    both inputs take the whole upstream gradient, so moving both together, which moves max by
    the same amount, is credited twice."""
    return {"x": dout * (x >= y), "y": dout * (y >= x)}


@st.composite
def tied_pair(draw):
    """x and y of one shape, equal in a drawn subset of elements (at least one)."""
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 3)))
    x = draw(float_arrays(shape, max_magnitude=5.0))
    other = draw(float_arrays(shape, max_magnitude=5.0))
    tied = draw(st.lists(st.booleans(), min_size=x.size, max_size=x.size))
    tied[0] = True
    return {"x": x, "y": np.where(np.reshape(tied, shape), x, other)}


def softmax_net_hvp_missing_term(vectors, X, y, W1, W2):
    """The two-layer net's H v without the term Z1'^T G2 of dW2' (the mixed W1-W2 block of the
    Hessian forgotten: W2's gradient differentiated as if Z1 did not move with W1)."""
    full = twolayer.softmax_net_hvp(vectors, X, y, W1, W2)
    M = X @ W1 > 0
    G2 = (softmax_np(np.maximum(X @ W1, 0) @ W2) - onehot_np(y, W2.shape[1])) / X.shape[0]
    return {"W1": full["W1"], "W2": full["W2"] - (M * (X @ vectors["W1"])).T @ G2}


def wide_hvp_transposed(vectors, a0, y, **params):
    """The wide chain's H v with every weight tangent V_l used transposed (V_l^T where V_l
    belongs; the shapes agree on square layers, so nothing fails)."""
    transposed = {k: (v.T if k.startswith("W") else v) for k, v in vectors.items()}
    return sigmoid_chain.wide_hvp(transposed, a0, y, **params)


@st.composite
def square_wide(draw):
    """The wide chain with every layer 2 x 2, so that a transposed V_l fits (small: a caught
    example shrinks in few steps)."""
    n = 2
    out = {"a0": draw(float_arrays((n,), max_magnitude=2.0)),
           "y": draw(float_arrays((n,), min_magnitude=0.05, max_magnitude=0.95))}
    for l in range(1, sigmoid_chain.WIDE + 1):
        out[f"W{l}"] = draw(float_arrays((n, n), max_magnitude=3.0))
        out[f"b{l}"] = draw(float_arrays((n,), max_magnitude=2.0))
    return out


@functools.cache
def _detaching_softplus():
    """A custom torch Function softplus whose backward detaches sigmoid(x): its gradient is
    right, its double backward misses d sigmoid(x) / dx (torch is imported only when it runs)."""
    import torch

    class DetachingSoftplus(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.nn.functional.softplus(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.sigmoid(x).detach()

    return DetachingSoftplus


def softplus_double_backward_detached(x):
    """softplus(x) by a custom Function whose backward detaches sigmoid(x) (torch tensors)."""
    return _detaching_softplus().apply(x)


def representative(family: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed, non-degenerate point for a family (every axis >= 2), where a bug's pattern
    shows: the gallery's diagnosis is checked here."""
    rng = np.random.default_rng(seed)

    def a(*shape, low=0.2, high=2.0):
        return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)

    if family in ("net", "short", "overflow"):
        m = 5 if family == "short" else 6
        W2 = a(5, 3) * (400.0 if family == "overflow" else 1.0)
        return {"X": a(m, 4), "y": rng.integers(0, 3, m), "W1": a(4, 5), "W2": W2}
    if family == "logits100":  # float32, the largest logit 100
        X, W1, W2 = a(6, 4), a(4, 5), a(5, 3)
        W2 *= 100.0 / np.max(np.maximum(X @ W1, 0) @ W2)
        return {"X": X.astype(np.float32), "y": rng.integers(0, 3, 6), "W1": W1.astype(np.float32),
                "W2": W2.astype(np.float32)}
    if family == "square":
        return {"W": a(3, 3), "X": a(3, 3)}
    if family == "single":
        return {"x": a(5, 3), "y": a(5), "w": a(3), "b": a()}
    if family == "two_layer":
        return {"x": a(5, 3), "y": a(5, 2), "W1": a(3, 4), "b1": a(4), "W2": a(4, 2), "b2": a(2)}
    if family == "one":
        return {"x": a(2, 3, low=0.3)}
    if family == "lstm":
        return multi.lstm_point(rng)
    if family == "complex_linear":
        def c(*shape):
            return a(*shape) + 1j * a(*shape)

        return {"W": c(3, 4), "x": c(4), "b": c(3)}
    if family == "wide_square":
        out = {"a0": a(3), "y": rng.uniform(0.1, 0.9, 3)}
        for l in range(1, sigmoid_chain.WIDE + 1):
            out[f"W{l}"], out[f"b{l}"] = a(3, 3), a(3)
        return out
    if family == "tie":
        x, y = a(2, 3), a(2, 3)
        y[0] = x[0]  # the first row tied
        return {"x": x, "y": y}
    return {"x": a(2, 3, low=0.3), "y": a(2, 3, low=0.3)}


def _bug(name, base, backward, bug, expected, point, inputs=None, wrt=None, jvp=None, hvp=None):
    return Case(name=f"gallery.{name}", forward=base.forward, backward=backward,
                inputs=inputs if inputs is not None else base.inputs, wrt=wrt or base.wrt, bug=bug,
                expected_diagnosis=expected, family="gallery", description=bug,
                points=(representative(point),), jvp=jvp, order=2 if hvp is not None else 1, hvp=hvp)


_by_name = {c.name: c for c in (*gates.CASES, *staged.CASES, *matmul.CASES, *twolayer.CASES, *regression.CASES,
                                 *sigmoid_chain.CASES, *complex_cases.CASES, *multi.CASES)}
_wide = _by_name["sigmoid_chain.wide"]
_net = _by_name["twolayer.softmax_net"]

CASES = (
    _bug("nn_epoch_short_batch", _by_name["twolayer.nn_epoch_batch"], nn_epoch_nominal_batch,
         "the notes' nn_epoch divides by the nominal batch on a shorter final minibatch", "scale", "short",
         inputs=short_batch()),
    _bug("nn_epoch_overflow", _net, unshifted_softmax,
         "the notes' nn_epoch exponentiates logits without subtracting their maximum (overflow)", None, "overflow",
         inputs=overflowing_logits()),
    _bug("softmax_missing_iy", _net, missing_minus_iy, "softmax gradient without - I_y", None, "net"),
    _bug("missing_1_over_m", _net, missing_one_over_m, "dW1, dW2 not divided by the batch size m", "scale", "net",
         inputs=twolayer.net_inputs(min_m=2)),
    _bug("relu_mask_left_out", _net, relu_mask_left_out, "G1 = G2 W2^T without the ReLU mask 1{Z1 > 0}", None, "net"),
    _bug("staged_assign_at_fork", _by_name["staged.f_xy"], staged_assign_at_fork,
         "dx = ... instead of dx += ... where x forks in the staged f", None, "pair"),
    _bug("staged_jvp_missing_term", _by_name["staged.f_xy"], staged.f_xy_backward,
         "the staged f's jvp leaves sigmoid(x)'s tangent out of the denominator's (forward mode)", None, "pair",
         jvp=staged_jvp_without_sigmoid_term),
    _bug("transposed_dW", _by_name["matmul.dW_dX"], transposed_dW, "dW computed as X dD^T (the transpose)",
         "transpose", "square", inputs=square_matmul()),
    _bug("sigmoid_s_not_s1ms", _by_name["gates.sigmoid"], sigmoid_s_not_s1ms,
         "sigmoid gate's local gradient taken as s instead of s (1 - s)", None, "one"),
    _bug("add_splits_gradient", _by_name["gates.add"], add_splits_gradient,
         "add gate splits the upstream gradient in half between its inputs", "scale", "pair"),
    _bug("regression_residual_sign", _by_name["regression.single_neuron"], regression_residual_sign,
         "residual taken as y - a instead of a - y", "sign", "single"),
    _bug("multiply_swapped", _by_name["gates.multiply"], multiply_swapped,
         "multiply gate returns x for dx and y for dy (local gradients not swapped)", "swapped", "pair"),
    _bug("bias_not_summed", _by_name["regression.two_layer"], bias_not_summed,
         "db2 takes the first example's term instead of summing over the batch", None, "two_layer",
         inputs=regression.two_layer_inputs(min_m=2)),
    _bug("max_to_both_at_ties", _by_name["gates.max"], max_to_both_at_ties,
         "max gate's 1(x >= y), 1(y >= x) taken literally: at a tie both inputs get the gradient", None, "tie",
         inputs=tied_pair()),
    # The weights' gradients are wrong on the columns of the gates that c feeds back to (i, f, g;
    # not o): a "mask" pattern, wrong through output h only.
    _bug("lstm_dh_not_through_c", _by_name["multi.lstm_cell"], lstm_dh_not_through_c,
         "LSTM cell's cell-state gradient taken as the upstream dc alone: dh's path into c is dropped", "mask",
         "lstm", wrt=("Wx", "Wh")),
    _bug("reciprocal_missing_sign", _by_name["gates.reciprocal"], reciprocal_missing_sign,
         "1/x gate's local gradient 1/x^2 instead of -1/x^2", "sign", "one"),
    _bug("complex_linear_not_conjugated", _by_name["complex.linear"], linear_not_conjugated,
         "complex linear layer's backward without the conjugate: conj(g) x^T instead of g x^H", "conjugated",
         "complex_linear", inputs=complex_cases.linear_inputs(min_side=2)),
    Case(name="gallery.softmax_max_free_float32", forward=softmax_net_max_free, backward=twolayer.softmax_net_backward,
         inputs=logits_near_100(), wrt=_net.wrt, family="gallery", points=(representative("logits100"),),
         bug="the notes' softmax without subtracting the max, run in float32 at logits ~100: exp overflows (NaN)",
         description="the notes' max-free softmax in float32 (its float64 twin passes)"),
    # Second order: the backward is right, its derivative is not.
    _bug("hvp_missing_term", _net, _net.backward, "two-layer net's H v without the Z1'^T G2 term of dW2' "
         "(the mixed W1-W2 block)", None, "net", hvp=softmax_net_hvp_missing_term,
         inputs=twolayer.net_inputs(kinks=False)),
    _bug("hvp_transposed", _wide, _wide.backward, "wide sigmoid chain's H v takes each weight tangent V_l "
         "transposed", None, "wide_square", hvp=wide_hvp_transposed, inputs=square_wide()),
    Case(name="gallery.double_backward_detached", forward=softplus_double_backward_detached, backward=None,
         inputs=st.fixed_dictionaries({"x": float_arrays((3,), max_magnitude=3.0)}), order=2,
         bug="a custom torch Function's backward detaches sigmoid(x): its double backward misses a term",
         family="gallery", description="softplus whose backward detaches sigmoid(x) (order 2)",
         points=(representative("one"),)),
)
