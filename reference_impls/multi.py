"""Forwards with several outputs: the backward receives ``dout`` in the forward's structure.

* an LSTM cell step returns the state ``LSTMState(h, c)``, both (m, n); its backward takes
  ``LSTMState(dh, dc)``. The cell state forks: ``c`` is an output and feeds ``h = o tanh(c)``,
  so its gradient is ``dc + dh o (1 - tanh(c)^2)``.
* a 1-d max-pool returns ``(values, argmax)``; the indices are integers, not differentiable, so
  their ``dout`` is ``None``.
* attention returns ``(out, logsumexp)`` of different shapes, (m, e) and (m,), as a
  memory-efficient kernel keeps the log-sum-exp of each row for its backward.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays

from ._common import sigmoid, sigmoid_np, xp_of


class LSTMState(NamedTuple):
    """The LSTM's state after a step: hidden ``h`` and cell ``c``, both (m, n)."""

    h: object
    c: object


def lstm_cell(x, h0, c0, Wx, Wh, b):
    """One step: z = x Wx + h0 Wh + b (m, 4n) split into the gates i, f, o (sigmoid) and the
    candidate g (tanh); c = f c0 + i g; h = o tanh(c)."""
    xp = xp_of(x, h0, c0, Wx, Wh, b)
    n = h0.shape[-1]
    z = x @ Wx + h0 @ Wh + b
    i, f, o = sigmoid(xp, z[:, :n]), sigmoid(xp, z[:, n:2 * n]), sigmoid(xp, z[:, 2 * n:3 * n])
    g = xp.tanh(z[:, 3 * n:])
    c = f * c0 + i * g
    return LSTMState(h=o * xp.tanh(c), c=c)


def lstm_gates(x, h0, Wx, Wh, b):
    """The gates i, f, o and the candidate g of ``lstm_cell``, each (m, n), in numpy."""
    n = h0.shape[-1]
    z = x @ Wx + h0 @ Wh + b
    return sigmoid_np(z[:, :n]), sigmoid_np(z[:, n:2 * n]), sigmoid_np(z[:, 2 * n:3 * n]), np.tanh(z[:, 3 * n:])


def lstm_gate_gradients(dc, do, i, f, o, g, c0, x, h0, Wx, Wh):
    """From the gradient of c (all its paths summed) and of the output gate o back to the inputs."""
    di, df, dg = dc * g, dc * c0, dc * i
    dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)], axis=1)
    return {"x": dz @ Wx.T, "h0": dz @ Wh.T, "c0": dc * f, "Wx": x.T @ dz, "Wh": h0.T @ dz, "b": dz.sum(axis=0)}


def lstm_cell_backward(dout, x, h0, c0, Wx, Wh, b):
    """dout = LSTMState(dh, dc). With t = tanh(c): do = dh t; the cell state forks (an output,
    and into h), so dc_total = dc + dh o (1 - t^2); then di = dc_total g, df = dc_total c0,
    dg = dc_total i, dc0 = dc_total f, through each gate's local gradient to dz (m, 4n), and
    dx = dz Wx^T, dh0 = dz Wh^T, dWx = x^T dz, dWh = h0^T dz, db = sum_rows dz."""
    dh, dc = dout
    i, f, o, g = lstm_gates(x, h0, Wx, Wh, b)
    t = np.tanh(f * c0 + i * g)
    dc_total = np.array(dc, dtype=np.float64, copy=True)
    dc_total += dh * o * (1 - t**2)  # += at the fork: c reaches the loss directly and through h
    return lstm_gate_gradients(dc_total, dh * t, i, f, o, g, c0, x, h0, Wx, Wh)


@st.composite
def lstm_inputs(draw, min_m=1):
    """x (m, d), h0 and c0 (m, n), Wx (d, 4n), Wh (n, 4n), b (4n,); m in min_m..3, d, n in 1..3."""
    m, d, n = draw(st.integers(min_m, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return {"x": draw(float_arrays((m, d), max_magnitude=2.0)),
            "h0": draw(float_arrays((m, n), max_magnitude=1.0)),
            "c0": draw(float_arrays((m, n), max_magnitude=2.0)),
            "Wx": draw(float_arrays((d, 4 * n), max_magnitude=1.0)),
            "Wh": draw(float_arrays((n, 4 * n), max_magnitude=1.0)),
            "b": draw(float_arrays((4 * n,), max_magnitude=1.0))}


def lstm_point(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A fixed point with every axis >= 2: m = 3, d = 2, n = 2."""
    def a(*shape):
        return rng.uniform(0.2, 1.5, shape) * rng.choice([-1.0, 1.0], shape)

    return {"x": a(3, 2), "h0": a(3, 2), "c0": a(3, 2), "Wx": a(2, 8), "Wh": a(2, 8), "b": a(8)}


WINDOW = 2  # elements per pooled run


def max_pool(x):
    """x (m, p * WINDOW) -> (values, argmax), both (m, p): the maximum of each run of
    ``WINDOW`` elements and its position in the run (integers)."""
    xp = xp_of(x)
    runs = xp.reshape(x, (x.shape[0], x.shape[1] // WINDOW, WINDOW))
    return xp.max(runs, axis=-1), xp.argmax(runs, axis=-1)


def max_pool_backward(dout, x):
    """dout = (dvalues, None): the indices are not differentiable. Each run's maximum takes the
    upstream gradient: dx[r, argmax] = dvalues, 0 elsewhere in the run."""
    dvalues, _ = dout  # (m, p), and None for argmax
    m, p = dvalues.shape
    runs = x.reshape(m, p, WINDOW)
    dx = np.zeros_like(runs)
    np.put_along_axis(dx, runs.argmax(axis=-1)[..., None], dvalues[..., None], axis=-1)
    return {"x": dx.reshape(x.shape)}


@st.composite
def pool_inputs(draw):
    """x (m, p * 2), m and p in 1..3, its runs of 2 without ties: each run is a shuffled
    (0, 1) plus draws in [-0.25, 0.25], so its two elements are at least 0.5 apart."""
    m, p = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    order = draw(st.lists(st.booleans(), min_size=m * p, max_size=m * p))
    ranks = np.array([[1.0, 0.0] if swap else [0.0, 1.0] for swap in order]).reshape(m, 2 * p)
    jitter = draw(float_arrays((m, 2 * p), max_magnitude=0.25, zeros=True))
    return {"x": ranks + jitter}


def attention(q, k, v):
    """s = q k^T / sqrt(d) (m, n); lse = log sum_j e^s (m,); p = e^(s - lse); out = p v (m, e).
    Returns (out, lse)."""
    xp = xp_of(q, k, v)
    s = q @ xp.matrix_transpose(k) / float(np.sqrt(q.shape[-1]))
    top = xp.max(s, axis=-1, keepdims=True)
    lse = xp.log(xp.sum(xp.exp(s - top), axis=-1)) + top[:, 0]
    return xp.exp(s - lse[:, None]) @ v, lse


def attention_backward(dout, q, k, v):
    """dout = (dout_o (m, e), dlse (m,)). dv = p^T do; dp = do v^T; ds = p (dp - sum_j dp p) +
    dlse p (d lse / d s = p); dq = ds k / sqrt(d); dk = ds^T q / sqrt(d)."""
    do, dlse = dout
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = q @ k.T * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    dp = do @ v.T
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds += dlse[:, None] * p  # += : s reaches the loss through out and through lse
    return {"q": ds @ k * scale, "k": ds.T @ q * scale, "v": p.T @ do}


@st.composite
def attention_inputs(draw):
    """q (m, d), k (n, d), v (n, e); m, n, d, e in 1..3."""
    m, n, d, e = (draw(st.integers(1, 3)) for _ in range(4))
    return {"q": draw(float_arrays((m, d), max_magnitude=2.0)), "k": draw(float_arrays((n, d), max_magnitude=2.0)),
            "v": draw(float_arrays((n, e), max_magnitude=2.0))}


CASES = (
    Case(name="multi.lstm_cell", forward=lstm_cell, backward=lstm_cell_backward, inputs=lstm_inputs(),
         description="LSTM cell step returning LSTMState(h, c); c forks into h", family="multi"),
    Case(name="multi.max_pool", forward=max_pool, backward=max_pool_backward, inputs=pool_inputs(),
         description="max-pool over runs of 2 returning (values, argmax); argmax's dout is None", family="multi"),
    Case(name="multi.attention", forward=attention, backward=attention_backward, inputs=attention_inputs(),
         description="softmax attention returning (out (m, e), logsumexp (m,))", family="multi"),
)
