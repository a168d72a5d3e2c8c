"""The softplus "squiggle" network (seed 001, Version 2/3).

Dosages x = (0, 0.5, 1), observed (0, 1, 0); two hidden softplus nodes:
top = softplus(w1 x + b1) w3, bottom = softplus(w2 x + b2) w4, predicted = top + bottom + b3,
SSR = sum (observed - predicted)^2, dSSR/db3 = sum -2 (observed - predicted).
All seven parameters get gradients by the chain rule; the notes optimize b3 by gradient descent.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gradcheck.case import Case
from gradcheck.strategies import float_arrays

from ._common import sigmoid_np, xp_of

DOSAGE = np.array([0.0, 0.5, 1.0])
OBSERVED = np.array([0.0, 1.0, 0.0])
PUBLISHED = {"w1": 3.34, "b1": -1.43, "w2": -3.53, "b2": 0.57, "w3": -1.22, "w4": -2.30, "b3": 0.0}
PARAMS = ("w1", "b1", "w2", "b2", "w3", "w4", "b3")


def predict(x, w1, b1, w2, b2, w3, w4, b3):
    xp = xp_of(x, w1)
    top = xp.log(1.0 + xp.exp(w1 * x + b1)) * w3
    bottom = xp.log(1.0 + xp.exp(w2 * x + b2)) * w4
    return top + bottom + b3


def ssr(x, observed, w1, b1, w2, b2, w3, w4, b3):
    xp = xp_of(x, observed, w1)
    r = observed - predict(x, w1, b1, w2, b2, w3, w4, b3)
    return xp.sum(r * r)


def ssr_backward(dout, x, observed, w1, b1, w2, b2, w3, w4, b3):
    """dSSR/dpredicted = -2 (observed - predicted); softplus' = sigmoid."""
    z1, z2 = w1 * x + b1, w2 * x + b2
    sp1, sp2 = np.log1p(np.exp(z1)), np.log1p(np.exp(z2))
    dpred = -2 * (observed - (sp1 * w3 + sp2 * w4 + b3)) * dout
    dz1 = dpred * w3 * sigmoid_np(z1)
    dz2 = dpred * w4 * sigmoid_np(z2)
    return {"w1": np.sum(dz1 * x), "b1": np.sum(dz1), "w2": np.sum(dz2 * x), "b2": np.sum(dz2),
            "w3": np.sum(dpred * sp1), "w4": np.sum(dpred * sp2), "b3": np.sum(dpred)}


def ssr_jvp(tangents, x, observed, w1, b1, w2, b2, w3, w4, b3):
    """Forward mode: dz = dw x + db; d softplus(z) = sigmoid(z) dz; dpredicted by the product
    rule; dSSR = sum -2 (observed - predicted) dpredicted."""
    d = tangents
    z1, z2 = w1 * x + b1, w2 * x + b2
    dz1, dz2 = d["w1"] * x + d["b1"], d["w2"] * x + d["b2"]
    sp1, sp2 = np.log1p(np.exp(z1)), np.log1p(np.exp(z2))
    dsp1, dsp2 = sigmoid_np(z1) * dz1, sigmoid_np(z2) * dz2
    dpred = dsp1 * w3 + sp1 * d["w3"] + dsp2 * w4 + sp2 * d["w4"] + d["b3"]
    return np.sum(-2 * (observed - (sp1 * w3 + sp2 * w4 + b3)) * dpred)


def ssr_hvp(vectors, x, observed, w1, b1, w2, b2, w3, w4, b3):
    """H v of SSR = sum r^2, r = observed - predicted: forward mode over ``ssr_backward``. With
    the tangents z1' = x v_w1 + v_b1, z2' = x v_w2 + v_b2 and predicted' (the JVP), the gradient
    sum -2 r dpred/dtheta has the tangent sum 2 predicted' dpred/dtheta - 2 r (dpred/dtheta)';
    softplus' = sigmoid, sigmoid' = s (1 - s)."""
    v = {p: vectors[p] for p in PARAMS}
    z1, z2 = w1 * x + b1, w2 * x + b2
    s1, s2 = sigmoid_np(z1), sigmoid_np(z2)
    sp1, sp2 = np.log1p(np.exp(z1)), np.log1p(np.exp(z2))
    r = observed - (sp1 * w3 + sp2 * w4 + b3)
    z1_t, z2_t = x * v["w1"] + v["b1"], x * v["w2"] + v["b2"]
    s1_t, s2_t = s1 * (1 - s1) * z1_t, s2 * (1 - s2) * z2_t
    # dpred/dtheta per data point, and its tangent
    dpred = {"w1": s1 * w3 * x, "b1": s1 * w3, "w2": s2 * w4 * x, "b2": s2 * w4, "w3": sp1, "w4": sp2,
             "b3": np.ones_like(x)}
    dpred_t = {"w1": (s1_t * w3 + s1 * v["w3"]) * x, "b1": s1_t * w3 + s1 * v["w3"],
               "w2": (s2_t * w4 + s2 * v["w4"]) * x, "b2": s2_t * w4 + s2 * v["w4"],
               "w3": s1 * z1_t, "w4": s2 * z2_t, "b3": np.zeros_like(x)}
    pred_t = sum(dpred[p] * v[p] for p in PARAMS)
    return {p: np.sum(2 * pred_t * dpred[p] - 2 * r * dpred_t[p]) for p in PARAMS}


def published_point() -> dict[str, np.ndarray]:
    return {"x": DOSAGE.copy(), "observed": OBSERVED.copy(), **{k: np.asarray(v) for k, v in PUBLISHED.items()}}


def descend_b3(lr: float = 0.1, steps: int = 100, b3: float = 0.0) -> list[tuple[float, float]]:
    """Gradient descent on b3 alone, the notes' walk-through: [(b3, slope dSSR/db3), ...]."""
    point = published_point()
    path = []
    for _ in range(steps):
        point["b3"] = np.asarray(b3)
        slope = float(ssr_backward(1.0, **point)["b3"])
        path.append((b3, slope))
        b3 = b3 - lr * slope
    return path


CASES = (
    Case(name="softplus.squiggle", forward=ssr, backward=ssr_backward,
         inputs=st.fixed_dictionaries({"x": st.just(DOSAGE.copy()), "observed": st.just(OBSERVED.copy()),
                                       **{p: float_arrays((), max_magnitude=4.0, zeros=True) for p in PARAMS}}),
         wrt=PARAMS, family="softplus", points=(published_point(),), jvp=ssr_jvp, order=2, hvp=ssr_hvp,
         description="SSR of the two-softplus squiggle, all seven parameters, and its Hessian-vector product"),
)
