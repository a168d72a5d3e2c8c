"""Staged computation (seed 001, "Backprop in practice: Staged computation").

f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)^2), forward in the notes' stages and backward
stage by stage in reverse, accumulating with ``+=`` where x and y fork into several stages; the
forward mode (``f_xy_jvp``) carries each stage's tangent right after its value. Elementwise on
arrays.
"""

from __future__ import annotations

import numpy as np

from gradcheck.case import Case

from ._common import sigmoid, sigmoid_np, xp_of
from .gates import pair

PUBLISHED = {"x": np.asarray(3.0), "y": np.asarray(-4.0)}


def f_xy(x, y):
    xp = xp_of(x, y)
    sigy = sigmoid(xp, y)
    num = x + sigy
    sigx = sigmoid(xp, x)
    xpy = x + y
    xpysqr = xpy * xpy
    den = sigx + xpysqr
    invden = 1.0 / den
    return num * invden


def f_xy_backward(dout, x, y):
    """Backprop through f = num * invden, stage by stage (shapes: all like x)."""
    sigy = sigmoid_np(y)
    num = x + sigy
    sigx = sigmoid_np(x)
    xpy = x + y
    xpysqr = xpy**2
    den = sigx + xpysqr
    invden = 1.0 / den
    # f = num * invden
    dnum = invden * dout
    dinvden = num * dout
    # invden = 1 / den
    dden = (-1.0 / den**2) * dinvden
    # den = sigx + xpysqr
    dsigx = 1.0 * dden
    dxpysqr = 1.0 * dden
    # xpysqr = xpy ** 2
    dxpy = (2 * xpy) * dxpysqr
    # xpy = x + y
    dx = 1.0 * dxpy
    dy = 1.0 * dxpy
    # sigx = sigmoid(x)
    dx += ((1 - sigx) * sigx) * dsigx
    # num = x + sigy
    dx += 1.0 * dnum
    dsigy = 1.0 * dnum
    # sigy = sigmoid(y)
    dy += ((1 - sigy) * sigy) * dsigy
    return {"x": dx, "y": dy}


def f_xy_jvp(tangents, x, y):
    """Forward mode through the same stages: each stage's tangent (d...) after its value."""
    dx, dy = tangents["x"], tangents["y"]
    sigy = sigmoid_np(y)
    dsigy = (1 - sigy) * sigy * dy
    num = x + sigy
    dnum = dx + dsigy
    sigx = sigmoid_np(x)
    dsigx = (1 - sigx) * sigx * dx
    xpy = x + y
    dxpy = dx + dy
    xpysqr = xpy**2
    dxpysqr = 2 * xpy * dxpy
    den = sigx + xpysqr
    dden = dsigx + dxpysqr
    invden = 1.0 / den
    dinvden = (-1.0 / den**2) * dden
    # f = num * invden
    return dnum * invden + num * dinvden


def f_xy_sum(x, y):
    """sum f(x, y): a scalar, whose Hessian holds a 2 x 2 block per element (x_i, y_i)."""
    xp = xp_of(x, y)
    return xp.sum(f_xy(x, y))


def f_xy_sum_backward(dout, x, y):
    """The staged backward with the upstream gradient dout for every element."""
    return f_xy_backward(dout * np.ones_like(x), x, y)


def f_xy_sum_hvp(vectors, x, y):
    """H v by forward mode over the staged backward (dout = 1): every stage's tangent (') along
    v = (vx, vy), forward stages first, then each backward stage's, in the backward's order.
    A product's tangent is a' b + a b'; s(1 - s)' = (1 - 2 s) s'."""
    vx, vy = vectors["x"], vectors["y"]
    sigy = sigmoid_np(y)
    num = x + sigy
    sigx = sigmoid_np(x)
    xpy = x + y
    den = sigx + xpy**2
    invden = 1.0 / den
    # tangents of the forward stages
    sigy_t = (1 - sigy) * sigy * vy
    num_t = vx + sigy_t
    sigx_t = (1 - sigx) * sigx * vx
    xpy_t = vx + vy
    den_t = sigx_t + 2 * xpy * xpy_t
    invden_t = -den_t / den**2
    # the backward's stages (dout = 1) and their tangents
    dnum, dnum_t = invden, invden_t
    dinvden, dinvden_t = num, num_t
    dden = -dinvden / den**2
    dden_t = -dinvden_t / den**2 + 2 * dinvden * den_t / den**3
    dsigx, dsigx_t = dden, dden_t
    dxpysqr, dxpysqr_t = dden, dden_t
    dxpy_t = 2 * xpy_t * dxpysqr + 2 * xpy * dxpysqr_t
    dx_t = 1.0 * dxpy_t
    dy_t = 1.0 * dxpy_t
    dx_t += (1 - 2 * sigx) * sigx_t * dsigx + (1 - sigx) * sigx * dsigx_t
    dx_t += dnum_t
    dsigy, dsigy_t = dnum, dnum_t
    dy_t += (1 - 2 * sigy) * sigy_t * dsigy + (1 - sigy) * sigy * dsigy_t
    return {"x": dx_t, "y": dy_t}


def inputs_away_from_the_pole():
    """x, y of one shape; (x + y)^2 + sigmoid(x) > 0 always, so any values do."""
    return pair("x", "y")


CASES = (
    Case(name="staged.f_xy", forward=f_xy, backward=f_xy_backward, inputs=inputs_away_from_the_pole(),
         description="(x + sigmoid(y)) / (sigmoid(x) + (x + y)^2), staged", family="staged",
         points=(PUBLISHED,), jvp=f_xy_jvp),
    Case(name="staged.f_xy_sum", forward=f_xy_sum, backward=f_xy_sum_backward, inputs=inputs_away_from_the_pole(),
         description="sum of the staged f(x, y), and its Hessian-vector product by forward mode over the backward",
         family="staged", points=(PUBLISHED,), order=2, hvp=f_xy_sum_hvp),
)
