"""Complex numbers: hand-written backward passes in torch's convention.

For a real loss L of z = a + ib the gradient is dL/da + i dL/db. For a complex output y with
upstream gradient g, the backward returns the gradient of the real scalar Re(sum(conj(g) y)):
for a holomorphic y = f(z) that is g * conj(f'(z)). So y = z w gives dz = g conj(w),
|z|^2 (real, not holomorphic) gives 2 z, and y = W x + b gives dW = g x^H, dx = W^H g, db = g.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import complex_arrays

from ._common import xp_of


def abs2_sum(z):
    """sum |z|^2 = sum (a^2 + b^2), a real loss; z any shape, complex."""
    xp = xp_of(z)
    return xp.sum(xp.real(z) ** 2 + xp.imag(z) ** 2)


def abs2_sum_backward(dout, z):
    """d/da + i d/db of a^2 + b^2 is 2a + 2ib = 2z."""
    return {"z": 2 * z * dout}


def product(z, w):
    """y = z w elementwise, a complex output; z, w of one shape."""
    return z * w


def product_backward(dout, z, w):
    """Holomorphic in each: dz = g conj(dy/dz) = g conj(w), dw = g conj(z)."""
    return {"z": dout * np.conj(w), "w": dout * np.conj(z)}


def linear(W, x, b):
    """y = W x + b: W (m, n), x (n,), b (m,), all complex; y (m,) complex."""
    xp = xp_of(W, x, b)
    return xp.sum(W * x[None, :], axis=1) + b


def linear_backward(dout, W, x, b):
    """g = dout (m,): dW = g x^H (m, n), dx = W^H g (n,), db = g (m,)."""
    g = np.asarray(dout)
    return {"W": np.outer(g, np.conj(x)), "x": np.conj(W).T @ g, "b": g.copy()}


def linear_loss(W, x, b):
    """L = sum |W x + b|^2, a real loss of the complex linear layer."""
    return abs2_sum(linear(W, x, b))


def linear_loss_backward(dout, W, x, b):
    """dL/dy = 2y (as for |z|^2), then the linear layer's backward with g = 2 y dout."""
    y = W @ x + b
    return linear_backward(2 * y * dout, W, x, b)


@st.composite
def same_shape_pair(draw):
    """z, w of one drawn shape (up to 2 axes), complex."""
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 3)) | st.tuples(st.integers(1, 5)))
    return {"z": draw(complex_arrays(shape, max_magnitude=3.0)), "w": draw(complex_arrays(shape, max_magnitude=3.0))}


@st.composite
def linear_inputs(draw, min_side=1):
    """W (m, n), x (n,), b (m,), complex."""
    m, n = draw(st.integers(min_side, 4)), draw(st.integers(min_side, 4))
    return {"W": draw(complex_arrays((m, n), max_magnitude=3.0)), "x": draw(complex_arrays((n,), max_magnitude=3.0)),
            "b": draw(complex_arrays((m,), max_magnitude=3.0))}


def linear_point() -> dict[str, np.ndarray]:
    """A fixed, generic point of the linear layer (every axis >= 2)."""
    rng = np.random.default_rng(3)

    def c(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    return {"W": c(3, 4), "x": c(4), "b": c(3)}


CASES = (
    Case(name="complex.abs2_sum", forward=abs2_sum, backward=abs2_sum_backward,
         inputs={"z": complex_arrays(st.tuples(st.integers(1, 4), st.integers(1, 3)), max_magnitude=3.0, zeros=True)},
         family="complex", description="sum |z|^2 of a complex z (a real loss): 2 z"),
    Case(name="complex.product", forward=product, backward=product_backward, inputs=same_shape_pair(),
         family="complex", description="y = z w elementwise (complex output, complex dout): g conj(w), g conj(z)"),
    Case(name="complex.linear", forward=linear, backward=linear_backward, inputs=linear_inputs(),
         family="complex", points=(linear_point(),),
         description="y = W x + b, complex (complex output, complex dout): g x^H, W^H g, g"),
    Case(name="complex.linear_loss", forward=linear_loss, backward=linear_loss_backward, inputs=linear_inputs(),
         family="complex", points=(linear_point(),),
         description="sum |W x + b|^2 of the complex linear layer (a real loss)"),
)
