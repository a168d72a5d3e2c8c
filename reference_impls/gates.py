"""Scalar gates and circuits (seed 001: "Simple expressions", "Modularity", "Patterns").

Every gate works elementwise on arrays of any shape (0-d for the scalars of the notes). Each
backward multiplies the gate's local gradient by the upstream ``dout`` (output's shape).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import away_from_kinks, float_arrays, shapes, with_kinks

from ._common import sigmoid, sigmoid_np, xp_of

SCALE = 2.5  # ``a`` of the scale gate a * x


def pair(*names: str, kinks: bool = False, margin: float = 1e-2) -> st.SearchStrategy:
    """Same-shape arrays for ``names`` (0 to 2 axes), with exact zeros/ties if ``kinks``."""

    def draw(shape):
        arrays = (with_kinks(shape, max_magnitude=5.0) if kinks
                  else away_from_kinks(shape, margin=margin, max_magnitude=5.0))
        if kinks and len(names) == 2:
            # ties between the two inputs: y drawn equal to x sometimes
            return st.tuples(arrays, arrays, st.booleans()).map(
                lambda t: {names[0]: t[0], names[1]: t[0].copy() if t[2] else t[1]}
            )
        return st.tuples(*[arrays for _ in names]).map(lambda t: dict(zip(names, t, strict=True)))

    return shapes(max_dims=2, max_side=4).flatmap(draw)


def add(x, y):
    return x + y


def add_backward(dout, x, y):
    """add: local gradients 1 and 1; the upstream gradient goes unchanged to both inputs."""
    return {"x": dout * np.ones_like(x), "y": dout * np.ones_like(y)}


def multiply(x, y):
    return x * y


def multiply_backward(dout, x, y):
    """multiply: local gradients y and x (the inputs swapped)."""
    return {"x": dout * y, "y": dout * x}


def maximum(x, y):
    xp = xp_of(x, y)
    return xp.where(x >= y, x, y)


def maximum_backward(dout, x, y):
    """max: 1 to the larger input, 0 to the other. At a tie (a kink) x takes it: 1(x >= y),
    1(y > x), one valid choice of subgradient."""
    return {"x": dout * (x >= y), "y": dout * (y > x)}


def reciprocal(x):
    return 1.0 / x


def reciprocal_backward(dout, x):
    """1/x: local gradient -1/x^2."""
    return {"x": dout * (-1.0 / (x * x))}


def add_constant(c, x):
    return c + x


def add_constant_backward(dout, c, x):
    """c + x: local gradient 1 (to c as well)."""
    return {"c": dout * np.ones_like(c), "x": dout * np.ones_like(x)}


def exp(x):
    return xp_of(x).exp(x)


def exp_backward(dout, x):
    """e^x: local gradient e^x."""
    return {"x": dout * np.exp(x)}


def scale(x):
    return SCALE * x


def scale_backward(dout, x):
    """a * x: local gradient a."""
    return {"x": dout * SCALE * np.ones_like(x)}


def sigmoid_gate(x):
    return sigmoid(xp_of(x), x)


def sigmoid_backward(dout, x):
    """sigmoid: local gradient s (1 - s), with s = sigmoid(x)."""
    s = sigmoid_np(x)
    return {"x": dout * s * (1 - s)}


def circuit(x, y, z):
    """f = (x + y) z."""
    return (x + y) * z


def circuit_backward(dout, x, y, z):
    """q = x + y, f = q z: df/dz = q, df/dq = z, dq/dx = dq/dy = 1."""
    q = x + y
    dq = z * dout
    return {"x": dq * np.ones_like(x), "y": dq * np.ones_like(y), "z": q * dout}


def neuron(w, x):
    """The 2-D sigmoid neuron f(w, x) = sigmoid(w0 x0 + w1 x1 + w2); w (3,), x (2,)."""
    xp = xp_of(w, x)
    dot = xp.sum(w[:2] * x) + w[2]
    return sigmoid(xp, dot)


def neuron_backward(dout, w, x):
    """ddot = (1 - f) f; dx = w[:2] ddot; dw = [x0, x1, 1] ddot."""
    dot = w[0] * x[0] + w[1] * x[1] + w[2]
    f = sigmoid_np(dot)
    ddot = (1 - f) * f * dout
    return {"w": np.array([x[0], x[1], 1.0]) * ddot, "x": w[:2] * ddot}


def neuron_jvp(tangents, w, x):
    """Forward mode: ddot = dw0 x0 + dw1 x1 + dw2 + w0 dx0 + w1 dx1; df = (1 - f) f ddot."""
    dw, dx = tangents["w"], tangents["x"]
    dot = w[0] * x[0] + w[1] * x[1] + w[2]
    f = sigmoid_np(dot)
    ddot = dw[0] * x[0] + dw[1] * x[1] + dw[2] + w[0] * dx[0] + w[1] * dx[1]
    return (1 - f) * f * ddot


def neuron_hvp(vectors, w, x):
    """The neuron's Hessian times v = (vw, vx), forward over its backward: with a = [x0, x1, 1]
    and ddot = s'(dot), the tangent of dot is dot' = a . vw + w[:2] . vx and of s'(dot) is
    s''(dot) dot' (s'' = s'(1 - 2s)); dw = a ddot and dx = w[:2] ddot give
    (H v)_w = a s'' dot' + [vx0, vx1, 0] s' and (H v)_x = w[:2] s'' dot' + vw[:2] s'."""
    vw, vx = vectors["w"], vectors["x"]
    dot = w[0] * x[0] + w[1] * x[1] + w[2]
    f = sigmoid_np(dot)
    s1 = (1 - f) * f
    s2 = s1 * (1 - 2 * f)
    a = np.array([x[0], x[1], 1.0])
    ddot_t = s2 * (a @ vw + w[:2] @ vx)
    return {"w": a * ddot_t + np.array([vx[0], vx[1], 0.0]) * s1, "x": w[:2] * ddot_t + vw[:2] * s1}


def _case(name, forward, backward, inputs, description, **kw):
    return Case(name=name, forward=forward, backward=backward, inputs=inputs,
                description=description, family=name.split(".")[0], **kw)


PUBLISHED_CIRCUIT = {"x": np.asarray(-2.0), "y": np.asarray(5.0), "z": np.asarray(-4.0)}
PUBLISHED_NEURON = {"w": np.array([2.0, -3.0, -3.0]), "x": np.array([-1.0, -2.0])}

CASES = (
    _case("gates.add", add, add_backward, pair("x", "y"), "x + y"),
    _case("gates.multiply", multiply, multiply_backward, pair("x", "y"), "x * y"),
    _case("gates.max", maximum, maximum_backward, pair("x", "y", kinks=True), "max(x, y), ties included"),
    _case("gates.reciprocal", reciprocal, reciprocal_backward, pair("x", margin=0.3), "1 / x"),
    _case("gates.add_constant", add_constant, add_constant_backward, pair("c", "x"), "c + x"),
    _case("gates.exp", exp, exp_backward, pair("x"), "e^x"),
    _case("gates.scale", scale, scale_backward, pair("x"), f"{SCALE} x"),
    _case("gates.sigmoid", sigmoid_gate, sigmoid_backward, pair("x"), "1 / (1 + e^-x)"),
    _case("circuits.xplusy_times_z", circuit, circuit_backward, pair("x", "y", "z"), "(x + y) z",
          points=(PUBLISHED_CIRCUIT,)),
    _case("circuits.sigmoid_neuron", neuron, neuron_backward,
          st.fixed_dictionaries({"w": float_arrays((3,), max_magnitude=4.0),
                                 "x": float_arrays((2,), max_magnitude=4.0)}),
          "sigmoid(w0 x0 + w1 x1 + w2), and its Hessian-vector product", points=(PUBLISHED_NEURON,),
          jvp=neuron_jvp, order=2, hvp=neuron_hvp),
)
