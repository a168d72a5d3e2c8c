"""diagnose: planted bug patterns are named with their parameters; correct gradients get none.

Each property plants one mistake into a random reference gradient and checks that ``diagnose``
names its kind and parameters. References are drawn from a seeded generator (Hypothesis draws
the seed and the shapes), so "random" means generic: no accidental symmetries or equal
elements. Many draws add the numeric oracle's relative noise of 1e-8 to the reference.
"""

import json
import warnings

import numpy as np
import pytest
from hypothesis import assume, currently_in_test_context, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.diagnose import KINDS, RULES, diagnose

seeds = st.integers(0, 2**32 - 1)
noise_levels = st.sampled_from([0.0, 1e-8])  # exact (torch) or numeric-oracle reference
fast = settings(deadline=None)


def matrix(seed, rows, cols):
    """A generic reference gradient: normal values, none close to zero."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, cols))
    return np.sign(values) * (0.05 + np.abs(values))


def with_noise(r, noise, seed):
    return r * (1 + noise * np.random.default_rng([seed, 1]).standard_normal(r.shape))


def run(analytic, reference, *, inputs=None, usable=None, wrong=None, extra=None, pairs=False):
    """``diagnose`` on one input ``g`` (plus reference gradients of other inputs in ``extra``);
    with ``pairs``, ``g`` is complex, given as real pairs (last axis: real, imaginary)."""
    if usable is None:
        usable = np.ones(reference.shape, dtype=bool)
    if wrong is None:
        wrong = usable & ~np.isclose(analytic, reference, rtol=1e-7, atol=1e-12)
    refs = {"g": reference, **(extra or {})}
    found = diagnose({"g": analytic}, refs, {"g": usable}, {"g": wrong}, inputs or {}, pairs=("g",) if pairs else ())
    if currently_in_test_context():
        note(repr(found.get("g")))
    return found.get("g")


def generic(*shape, dtype=np.float64):
    """An input present for its axis sizes, with generic values: an input that takes a single
    value makes a factor unidentifiable (see the rules below)."""
    return np.random.default_rng(list(shape)).normal(size=shape).astype(dtype)


def proportional(x, y, rtol=1e-4):
    """Whether ``x`` is (nearly) a multiple of ``y``: then a factor explains it first."""
    c = float(np.dot(x.ravel(), y.ravel()) / np.dot(y.ravel(), y.ravel()))
    return np.allclose(x, c * y, rtol=rtol, atol=rtol * np.abs(y).max())


# --- factors -------------------------------------------------------------------------------

SMALL = [(2.0, "2"), (0.5, "1/2"), (3.0, "3"), (1 / 3, "1/3"), (10.0, "10"), (-2.0, "-2"), (-0.5, "-1/2")]


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6), st.sampled_from(SMALL), noise_levels)
def test_small_factor_is_named(seed, rows, cols, factor_name, noise):
    factor, name = factor_name
    r = matrix(seed, rows, cols)
    d = run(factor * r, with_noise(r, noise, seed))
    assert d.kind == "scale"
    assert d.params["named"] == name
    assert d.params["factor"] == pytest.approx(factor)
    assert "fits" in d.evidence


@fast
@given(seeds, st.integers(11, 300), st.sampled_from([1, -1]), st.booleans(), noise_levels)
def test_batch_size_factor_is_named_after_its_axis(seed, m, sign, reciprocal, noise):
    r = matrix(seed, 4, 3)
    factor = sign * (1 / m if reciprocal else m)
    inputs = {"X": np.zeros((m, 4)), "y": np.zeros(m, dtype=np.int64), "W": r}
    d = run(factor * r, with_noise(r, noise, seed), inputs=inputs)
    expected = ("-" if sign < 0 else "") + ("1/m" if reciprocal else "m") + f" (X.shape[0] = {m})"
    assert d.kind == "scale" and d.params["named"] == expected
    assert d.params["axes"] == ["X.shape[0]"]


@fast
@given(seeds, st.integers(2, 99), st.integers(2, 1000))
def test_actual_over_nominal_batch_size_is_named(seed, actual, nominal):
    assume(nominal > actual)
    r = matrix(seed, 3, 4)
    d = run(actual / nominal * r, r, inputs={"X": generic(actual, 1)})
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(actual / nominal)
    if nominal == actual * actual and actual >= 3:
        expected = f"1/m (X.shape[0] = {actual})"
    elif nominal % actual == 0 and nominal // actual <= 10:
        expected = f"1/{nominal // actual}"
    else:
        expected = f"{actual}/{nominal} (X.shape[0] = {actual} over {nominal})"
    assert d.params["named"] == expected


@fast
@given(seeds, st.floats(1.05, 9.5).filter(lambda c: all(abs(c - k) > 0.02 for k in range(2, 10))))
def test_unnamed_factor_is_reported_with_its_value(seed, factor):
    r = matrix(seed, 3, 4)
    d = run(factor * r, r)
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(factor)


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6), noise_levels)
def test_sign_flip(seed, rows, cols, noise):
    r = matrix(seed, rows, cols)
    d = run(-r, with_noise(r, noise, seed))
    assert d.kind == "sign" and d.params == {"factor": -1.0, "named": "-1"}


# --- layout and mix-ups --------------------------------------------------------------------


@fast
@given(seeds, st.integers(2, 7), noise_levels, st.booleans())
def test_transpose_of_a_square_matrix(seed, n, noise, with_kinks):
    r = matrix(seed, n, n)
    assume(not proportional(r.T, r, rtol=1e-3))  # symmetric or antisymmetric: a factor fits
    usable = np.ones(r.shape, dtype=bool)
    if with_kinks and n > 2:
        usable[0, 1] = False  # a kink: the oracle's value there is meaningless
    reference = np.where(usable, with_noise(r, noise, seed), 1e6)
    d = run(r.T, reference, usable=usable)
    assert d.kind == "transpose" and d.params == {"axes": [1, 0], "layout": "transposed"}


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_transposed_values_reshaped_into_a_non_square_shape(seed, rows, cols):
    assume(rows != cols)
    r = matrix(seed, rows, cols)
    d = run(r.T.reshape(r.shape), r)
    assert d.kind == "transpose" and d.params["layout"] == "transposed, then reshaped"


@fast
@given(seeds, st.integers(2, 6), st.integers(1, 6), noise_levels)
def test_gradients_swapped_between_two_inputs(seed, rows, cols, noise):
    g, h = matrix(seed, rows, cols), matrix(seed + 1, rows, cols)
    assume(not proportional(h, g) and not proportional(g, h))
    refs = {"g": with_noise(g, noise, seed), "h": h}
    mask = {"g": np.ones(g.shape, dtype=bool), "h": np.ones(g.shape, dtype=bool)}
    found = diagnose({"g": h, "h": g}, refs, mask, mask, {})
    note(repr(found))
    assert found["g"].kind == "swapped" and found["g"].params["with"] == "h"
    assert found["h"].kind == "swapped" and found["h"].params["with"] == "g"


@fast
@given(seeds, st.integers(2, 6), st.integers(1, 6), st.sampled_from(["right", "left"]), noise_levels)
def test_square_operand_not_transposed_in_a_product(seed, n, k, side, noise):
    # D = W @ X with X square: dW = G @ X.T, written as G @ X (and dX = W.T @ G as W @ G).
    rng = np.random.default_rng([seed, 6])
    V, G = rng.normal(size=(n, n)), rng.normal(size=(k, n) if side == "right" else (n, k))
    assume(np.linalg.cond(V) < 1e3 and not np.allclose(V, V.T))
    r, a = (G @ V.T, G @ V) if side == "right" else (V.T @ G, V @ G)
    assume(not proportional(a, r, rtol=1e-3))
    d = run(a, with_noise(r, noise, seed), inputs={"V": V, "other": rng.normal(size=(n, n))})
    assert d.kind == "transpose"
    assert d.params["layout"] == "operand not transposed" and d.params["operand"] == "V"
    assert d.params["side"] == side
    written = "G @ V" if side == "right" else "V @ G"
    assert d.params["product"] == written and written in d.summary


@fast
@given(seeds, st.integers(2, 5))
def test_square_operand_transposed_once_too_often(seed, n):
    rng = np.random.default_rng([seed, 7])
    V, G = rng.normal(size=(n, n)), rng.normal(size=(3, n))
    assume(np.linalg.cond(V) < 1e3 and not np.allclose(V, V.T))
    r, a = G @ V, G @ V.T
    assume(not proportional(a, r, rtol=1e-3))
    d = run(a, r, inputs={"V": V})
    assert d.kind == "transpose" and d.params["layout"] == "operand transposed"
    assert d.params["meant"] == "G @ V"


# --- zeros and subsets ---------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6))
def test_zero_everywhere(seed, rows, cols):
    d = run(np.zeros((rows, cols)), matrix(seed, rows, cols))
    assert d.kind == "zero" and d.params["fraction"] == 1.0


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6), st.data())
def test_zero_on_a_subset(seed, rows, cols, data):
    r = matrix(seed, rows, cols)
    zeroed = data.draw(hnp.arrays(bool, r.shape))
    assume(zeroed.any() and not zeroed.all())
    d = run(np.where(zeroed, 0.0, r), r)
    assert d.kind == "zero"
    assert d.params["count"] == zeroed.sum()
    assert d.params["fraction"] == pytest.approx(zeroed.mean())


@fast
@given(seeds, st.integers(3, 6), st.integers(3, 6), st.data(), st.sampled_from(["rows", "columns"]),
       st.sampled_from([("x", 1.5), ("x", 2.0), ("+", 0.7)]))
def test_wrong_rows_or_columns_are_a_mask(seed, rows, cols, data, axis, change):
    r = matrix(seed, rows, cols)
    size = rows if axis == "rows" else cols
    picked = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=size - 1)))
    hit = np.isin(np.arange(size), picked)
    sel = hit[:, None] if axis == "rows" else hit[None, :]
    op, value = change
    a = np.where(sel, r * value if op == "x" else r + value, r)
    d = run(a, r)
    assert d.kind == "mask"
    assert d.params[axis] == picked
    if op == "x":
        assert d.params["factor"] == pytest.approx(value)
    else:
        assert d.params["offset"] == pytest.approx(value)


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_missing_relu_mask_is_described_by_the_input(seed, rows, cols):
    rng = np.random.default_rng([seed, 2])
    x = rng.normal(size=(rows, cols))
    upstream = matrix(seed, rows, cols)
    assume((x > 0).any() and (x < 0).any())
    d = run(upstream, upstream * (x > 0), inputs={"x": x})  # backward forgot the ReLU mask
    assert d.kind == "mask"
    assert d.params["where"][0] == "where x < 0"
    assert "where the reference is zero" in d.params["where"]


@fast
@given(seeds, st.integers(10, 40), st.integers(0, 10**6))
def test_scattered_minority_is_a_mask_with_its_fraction(seed, n, pick):
    r = matrix(seed, 1, n)[0]
    rng = np.random.default_rng(pick)
    bad = rng.random(n) < 0.3
    assume(4 <= bad.sum() <= n // 2)
    a = np.where(bad, r + rng.normal(size=n), r)
    d = run(a, r)
    assert d.kind == "mask" and d.params["fraction"] == pytest.approx(bad.mean())


# --- additive terms ------------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(3, 6), st.floats(0.1, 5) | st.floats(-5, -0.1))
def test_constant_term(seed, rows, cols, k):
    r = matrix(seed, rows, cols)
    d = run(r + k, r)
    assert d.kind == "additive" and d.params["term"] == "constant"
    assert d.params["value"] == pytest.approx(k)


@fast
@given(seeds, st.integers(3, 6), st.integers(3, 6), noise_levels)
def test_rank_one_term(seed, rows, cols, noise):
    rng = np.random.default_rng([seed, 3])
    r = matrix(seed, rows, cols)
    term = np.outer(rng.normal(size=rows) + 2, rng.normal(size=cols) + 2)
    d = run(r + term, with_noise(r, noise, seed))
    assert d.kind == "additive" and d.params["term"] == "rank one"
    assert d.params["size"] == pytest.approx(np.abs(term).max(), rel=1e-6)


@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6))
def test_bias_term_per_column(seed, rows, cols):
    rng = np.random.default_rng([seed, 4])
    r = matrix(seed, rows, cols)
    offsets = rng.normal(size=cols) + 3
    d = run(r + offsets[None, :], r)
    assert d.kind == "additive" and d.params["term"] == "per column"


@fast
@given(seeds, st.integers(3, 40), st.integers(2, 6))
def test_missing_minus_one_hot_labels(seed, m, classes):
    rng = np.random.default_rng([seed, 5])
    p = rng.random((m, classes))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, classes, m)
    onehot = np.eye(classes)[y]
    reference = (p - onehot) / m
    d = run(p / m, reference, inputs={"scores": p, "y": y})
    assert d.kind == "additive" and d.params["term"] == "one-hot(y)"
    assert d.params["factor"] == pytest.approx(1 / m)


@fast
@given(seeds, st.floats(1e-3, 1.0))
def test_missing_regularization_term(seed, lam):
    W = matrix(seed + 7, 4, 3)
    r = matrix(seed, 4, 3) + 2 * lam * W
    assume(not proportional(r - 2 * lam * W, r))
    d = run(r - 2 * lam * W, r, inputs={"W": W, "X": np.zeros((16, 4))})
    assert d.kind == "additive" and d.params["term"] == "proportional to W"
    assert d.params["factor"] == pytest.approx(-2 * lam)


@fast
@given(seeds, st.integers(1, 5), st.integers(3, 5), st.booleans())
def test_dropped_path_of_a_fork_is_a_missing_term(seed, rows, cols, scalar_output):
    # f = x*y + x*z; the backward returns dout*y for dx, dropping the path through z.
    rng = np.random.default_rng([seed, 8])
    x, y, z = (rng.normal(size=(rows, cols)) for _ in range(3))
    dout = 1.0 if scalar_output else rng.normal(size=(rows, cols))
    r, a = dout * (y + z), dout * y
    assume(not proportional(a, r, rtol=1e-3))
    d = run(a, r, inputs={"g": x, "y": y, "z": z})
    assert d.kind == "additive" and d.params["term"] == "path through z"
    assert d.params["present"] == "y" and d.params["missing"] == "z"


def layer_norm_parts(x, gamma, dout):
    """dx of a layer norm over the rows of ``x``, and its two terms through the row's mean and
    variance (the first is constant along a row, the second a multiple of xhat)."""
    xc = x - x.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + 1e-5)
    xhat, g = xc * rstd, dout * gamma
    mean_term = -rstd * g.mean(axis=1, keepdims=True) * np.ones_like(x)
    var_term = -rstd * xhat * (g * xhat).mean(axis=1, keepdims=True)
    return rstd * g + mean_term + var_term, mean_term, var_term


@fast
@given(seeds, st.integers(1, 4), st.integers(4, 6), st.sampled_from(["mean", "variance"]), noise_levels)
def test_normalization_missing_a_term(seed, rows, cols, missing, noise):
    rng = np.random.default_rng([seed, 9])
    x, gamma, dout = rng.normal(size=(rows, cols)), rng.normal(size=cols), rng.normal(size=(rows, cols))
    dx, mean_term, var_term = layer_norm_parts(x, gamma, dout)
    a = dx - (mean_term if missing == "mean" else var_term)
    assume(not proportional(a, dx, rtol=1e-3))
    d = run(a, with_noise(dx, noise, seed), inputs={"g": x, "gamma": gamma})
    note(repr(d))
    assert d.kind == "additive"
    if missing == "mean":
        assert d.params["term"] in ("per row", "constant") if rows > 1 else d.params["term"] == "constant"
    else:
        assert d.params["term"] == "affine in g along each row"


def test_an_affine_term_needs_three_values_along_the_row():
    # Through two points every term is affine: with two columns no such claim is made.
    rng = np.random.default_rng(10)
    x, gamma, dout = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(3, 2))
    dx, _, var_term = layer_norm_parts(x, gamma, dout)
    d = run(dx - var_term, dx, inputs={"g": x, "gamma": gamma})
    assert d is None or "affine" not in d.params.get("term", "")


# --- complex gradients ---------------------------------------------------------------------


@given(seeds, st.integers(1, 5), st.integers(1, 3), noise_levels)
@fast
def test_a_conjugated_complex_gradient_is_named(seed, rows, cols, noise):
    r = np.random.default_rng(seed).normal(size=(rows, cols, 2)) + 0.05  # real pairs of a complex gradient
    d = run(r * [1.0, -1.0], with_noise(r, noise, seed), inputs={"g": generic(rows, cols, 2)}, pairs=True)
    assert d is not None and d.kind == "conjugated", d


def test_conjugation_is_not_tried_on_a_real_gradient_with_a_last_axis_of_two():
    r = matrix(22, 3, 2)
    d = run(r * [1.0, -1.0], r, inputs={"g": generic(3, 2)})
    assert d is None or d.kind != "conjugated"


# --- what a degenerate example cannot tell apart -------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softplus_sigmoid_of_minus_x(x):
    """softplus' backward written with sigmoid(-x): (analytic, reference) at ``x``."""
    dout = np.random.default_rng(11).normal(size=np.shape(x))
    return dout * sigmoid(-x), dout * sigmoid(x)


def degenerate_softplus():
    a, r = softplus_sigmoid_of_minus_x(-np.ones((2, 3)))  # shrunk: every element -1
    return {"analytic": a, "reference": r, "inputs": {"g": -np.ones((2, 3))}}


def degenerate_sigmoid_at_zero():
    # f = w * sigmoid(x) with s where s (1 - s) is meant, at x = 0 only: s / (s (1 - s)) = 2 there.
    x, w = np.zeros((2, 3)), generic(2, 3)
    s = sigmoid(x)
    return {"analytic": w * s, "reference": w * s * (1 - s), "inputs": {"g": x, "w": w}}


def degenerate_mean_as_sum():
    # d mean(x) / dx is 1/n everywhere; the backward forgot the 1/n.
    return {"analytic": np.ones((2, 3)), "reference": np.full((2, 3), 1 / 6), "inputs": {"g": generic(2, 3)}}


def degenerate_constant_offset():
    return {"analytic": np.full((2, 3), 0.75), "reference": np.full((2, 3), 0.5), "inputs": {"g": generic(2, 3)}}


def degenerate_layer_norm_rows():
    # The variance term left out, at a shrunk example: rows 0 and 1 constant (their term is 0).
    x = -np.ones((3, 4))
    x[2, 0] = 0.0
    gamma, dout = -np.ones(4), np.random.default_rng(12).normal(size=(3, 4))
    dx, _, var_term = layer_norm_parts(x, gamma, dout)
    return {"analytic": dx - var_term, "reference": dx, "inputs": {"g": x, "gamma": gamma}}


def degenerate_softplus_agrees_at_zero():
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    a, r = softplus_sigmoid_of_minus_x(x)
    return {"analytic": a, "reference": r, "inputs": {"g": x}}


def degenerate_swap_of_multiples():
    r = matrix(13, 2, 3)
    return {"analytic": 1.37 * r, "reference": r, "inputs": {"g": generic(2, 3), "h": generic(3, 2)},
            "extra": {"h": 1.37 * r}}


def degenerate_zero_at_zero():
    # f = x * w with dx written as dout * w * x: zero at x = 0, like a gradient never written.
    w = generic(2, 3)
    return {"analytic": np.zeros((2, 3)), "reference": w, "inputs": {"g": np.zeros((2, 3)), "w": w}}


# (example, kind that must NOT be named, the rule that stops it, why)
DEGENERATE = [
    (degenerate_softplus, "scale", "factor", "every input takes a single value"),
    (degenerate_sigmoid_at_zero, "scale", "factor", "'g' is 0 at every element"),
    (degenerate_mean_as_sum, "scale", "factor", "the reference is 0.1667 at every compared element"),
    (degenerate_constant_offset, "additive", "factor", "the reference is 0.5 at every compared element"),
    (degenerate_layer_norm_rows, "mask", "slices", "rows 0, 1 of 'g' are constant, row 2 is not"),
    (degenerate_softplus_agrees_at_zero, "mask", "elements", "the elements that match all have g = 0"),
    (degenerate_swap_of_multiples, "swapped", "swapped", "the reference of 'h' is 1.37 x this one"),
    (degenerate_zero_at_zero, "zero", "factor", "'g' is 0 at every element"),
]


@pytest.mark.parametrize("example, forbidden, rule, why", DEGENERATE,
                         ids=[row[0].__name__.removeprefix("degenerate_") for row in DEGENERATE])
def test_a_degenerate_example_names_no_pattern_it_cannot_tell_apart(example, forbidden, rule, why):
    d = run(**example())
    assert d is not None and d.kind == "undetermined" and d.kind != forbidden
    assert d.params["rule"] == rule and rule in RULES
    assert why in d.params["because"] and why in d.summary
    assert d.summary.startswith("no diagnosis: the example cannot tell ")
    assert d.params["reading"] in d.evidence and ("fits" in d.evidence or "match" in d.evidence)


# The same patterns at generic points are named: the rules stop only what cannot be told apart.
GENERIC = [
    (lambda: {"analytic": 2.718 * matrix(14, 2, 3), "reference": matrix(14, 2, 3),
              "inputs": {"g": generic(2, 3)}}, "scale"),
    (lambda: {"analytic": matrix(15, 2, 3) + 0.25, "reference": matrix(15, 2, 3),
              "inputs": {"g": generic(2, 3)}}, "additive"),
    (lambda: {"analytic": np.where([[1], [1], [0]], 2, 1) * matrix(16, 3, 4), "reference": matrix(16, 3, 4),
              "inputs": {"g": generic(3, 4)}}, "mask"),
    (lambda: {"analytic": matrix(17, 2, 3), "reference": matrix(18, 2, 3), "inputs": {"g": generic(2, 3)},
              "extra": {"h": matrix(17, 2, 3)}}, "swapped"),
    (lambda: {"analytic": np.zeros((2, 3)), "reference": matrix(19, 2, 3), "inputs": {"g": generic(2, 3)}}, "zero"),
    (lambda: {"analytic": matrix(21, 3, 2) * [1, -1], "reference": matrix(21, 3, 2), "inputs": {"g": generic(3, 2)},
              "pairs": True}, "conjugated"),
]


@pytest.mark.parametrize("example, kind", GENERIC, ids=[kind for _, kind in GENERIC])
def test_the_same_patterns_at_generic_points_are_named(example, kind):
    d = run(**example())
    assert d is not None and d.kind == kind


# --- numbers printed with the digits that matter ------------------------------------------


def scaled_rows(factor):
    r = matrix(20, 3, 4)
    return np.where(np.array([[1], [0], [0]]) == 1, factor * r, r), r


# (planted mistake, where the number shows, the number as printed)
NUMBERS = [
    (lambda: (1.0001 * matrix(21, 3, 4), matrix(21, 3, 4)), "named", "1.0001"),
    (lambda: (0.9999 * matrix(21, 3, 4), matrix(21, 3, 4)), "named", "0.9999"),
    (lambda: (1.00012345 * matrix(21, 3, 4), matrix(21, 3, 4)), "named", "1.00012"),
    (lambda: ((1 / 3 + 1e-5) * matrix(21, 3, 4), matrix(21, 3, 4)), "named", "0.33334"),
    (lambda: (2.718281828 * matrix(21, 3, 4), matrix(21, 3, 4)), "named", "2.718"),
    (lambda: scaled_rows(1.0001), "on_subset", "analytic = 1.0001 x reference"),
    (lambda: (matrix(22, 3, 4) + 2.00003, matrix(22, 3, 4)), "summary", "reference + 2.00003 on every"),
]


@pytest.mark.parametrize("planted, where, shown", NUMBERS, ids=[row[2] for row in NUMBERS])
def test_numbers_are_printed_with_the_digits_that_matter(planted, where, shown):
    a, r = planted()
    d = run(a, r)
    assert shown in str(d.params.get(where, d.summary)), d


# --- integer gradients ---------------------------------------------------------------------

# (analytic from the reference r, kind, what the diagnosis says)
INTEGER = [
    (lambda r: np.trunc(r).astype(np.int64), "integer", "(int64): a cast or integer arithmetic truncated it"),
    (lambda r: np.round(r).astype(np.int32), "integer", "(int32): a cast or integer arithmetic rounded it"),
    (lambda r: np.round(3 * r).astype(np.int64), "integer", "(int64): a cast or integer arithmetic truncated it"),
]


@pytest.mark.parametrize("analytic, kind, says", INTEGER, ids=["trunc", "round", "rounded after a factor"])
def test_an_integer_gradient_is_named(analytic, kind, says):
    r = 3 * matrix(23, 3, 4)
    d = run(analytic(r), r)
    assert d.kind == kind and says in d.summary
    assert "not a whole number" in d.evidence or "to a whole number at all 12" in d.evidence


def test_an_integer_gradient_of_whole_values_keeps_its_pattern_with_a_note():
    r = np.round(5 * matrix(24, 3, 4))
    d = run((2 * r).astype(np.int64), r)
    assert d.kind == "scale" and d.params["named"] == "2"
    assert "note: the gradient for 'g' is an integer array (int64)" in d.evidence


# --- no diagnosis --------------------------------------------------------------------------


@fast
@given(seeds, st.integers(1, 6), st.integers(1, 6))
def test_correct_gradient_gets_no_diagnosis(seed, rows, cols):
    r = matrix(seed, rows, cols)
    a = with_noise(r, 1e-10, seed)
    assert run(a, r, wrong=np.zeros(r.shape, dtype=bool)) is None
    # Flagged by another oracle, but equal to the reference: no bug to name either.
    assert run(a, r, wrong=np.ones(r.shape, dtype=bool)) is None


@fast
@given(seeds, st.integers(1, 6), st.integers(2, 6))
def test_unrelated_values_get_no_entry(seed, rows, cols):
    r, a = matrix(seed, rows, cols), matrix(seed + 1, rows, cols)
    inputs = {"X": np.zeros((rows, cols)), "y": np.zeros(rows, dtype=np.int64)}
    assert run(a, r, inputs=inputs, wrong=np.ones(r.shape, dtype=bool)) is None



@fast
@given(seeds, st.integers(2, 6), st.integers(2, 6), noise_levels)
def test_unrelated_values_get_no_entry_beside_inputs_that_new_patterns_use(seed, n, k, noise):
    # Square operands (products), inputs of the gradient's shape (forks, affine terms): none
    # of them explains values that are unrelated to the reference.
    rng = np.random.default_rng([seed, 29])
    r, a = matrix(seed, n, n), matrix(seed + 1, n, n)
    inputs = {name: rng.normal(size=(n, n)) for name in ("g", "V", "y", "z")}
    inputs["b"] = rng.normal(size=k)
    assert run(a, with_noise(r, noise, seed), inputs=inputs, wrong=np.ones(r.shape, dtype=bool)) is None


# --- robustness ----------------------------------------------------------------------------


def test_an_odd_oracle_value_is_an_outlier_not_a_different_bug():
    r = matrix(0, 10, 10)
    reference = r.copy()
    reference[3, 4] *= 1.3  # the oracle failed at one element
    d = run(2 * r, reference)
    assert d.kind == "scale" and d.params["named"] == "2"
    assert "fits 99/100" in d.evidence and "(3, 4)" in d.evidence


def test_float32_gradients_are_diagnosed_at_float32_precision():
    r = matrix(1, 5, 4)
    a = (4 * r).astype(np.float32).astype(np.float64) * (1 + 1e-5)
    d = run(a, r, inputs={"X": generic(4, 5, dtype=np.float32)})
    assert d.kind == "scale" and d.params["factor"] == pytest.approx(4, rel=1e-4)
    assert d.params["named"] == "m (X.shape[0] = 4)"


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
wild = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)


@fast
@given(shapes, st.data())
def test_never_raises_and_returns_json_ready_diagnoses(shape, data):
    a = data.draw(hnp.arrays(np.float64, shape, elements=wild))
    r = data.draw(hnp.arrays(np.float64, shape, elements=st.one_of(wild, st.just(0.0))))
    usable = data.draw(hnp.arrays(bool, shape))
    wrong = data.draw(hnp.arrays(bool, shape))
    other = data.draw(hnp.arrays(np.float64, shape, elements=wild))
    labels = data.draw(hnp.arrays(np.int64, shape[:-1] if shape else (), elements=st.integers(-1, 4)))
    inputs = {"g": a, "h": other, "y": labels, "f": np.zeros(shape, dtype=np.float32)}
    with np.errstate(over="ignore"):
        doubled = other * 2  # may overflow to inf: a non-finite reference is part of the test
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = diagnose({"g": a, "h": other}, {"g": r, "h": doubled}, {"g": usable},
                         {"g": wrong, "h": np.ones(shape, dtype=bool)}, inputs)
    assert set(found) <= {"g", "h"}
    if not wrong.any():
        assert "g" not in found
    for d in found.values():
        assert d.kind in KINDS and d.summary and d.evidence
        json.dumps(d.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda: diagnose({}, {}, {}, {}, {}),
        lambda: diagnose({"g": np.ones(3)}, {"g": np.ones(4)}, {}, {"g": np.ones(3, bool)}, {}),
        lambda: diagnose({"g": np.ones(3)}, {}, {}, {"g": np.ones(3, bool)}, {}),
        lambda: diagnose({"g": np.float64(2.0)}, {"g": np.float64(1.0)}, {}, {"g": np.True_}, {}),
    ],
    ids=["empty", "shapes differ", "no reference", "0-d"],
)
def test_degenerate_calls_give_an_answer(call):
    found = call()
    assert all(d.kind in KINDS for d in found.values())


# --- through the harness -------------------------------------------------------------------


def test_diagnosis_reaches_the_result_its_text_and_its_json():
    def forward(W, X):
        return W @ X

    def backward(dout, W, X):
        return {"W": 2 * dout @ X.T, "X": W.T @ dout}

    rng = np.random.default_rng(1)
    result = gradcheck.check_gradients(forward, backward, {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))})
    (summary,) = [s for s in result.inputs if not s.ok]
    assert summary.diagnosis.kind == "scale" and summary.diagnosis.params["named"] == "2"
    assert "likely bug (scale)" in str(result)
    assert result.to_dict()["inputs"][0]["diagnosis"]["kind"] == "scale"
    with pytest.raises(gradcheck.GradientMismatch, match="off by a factor of 2"):
        gradcheck.assert_gradients(forward, backward, {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))})


def test_transposed_weight_gradient_of_a_square_layer_through_the_harness():
    rng = np.random.default_rng(2)
    W, X = rng.normal(size=(4, 4)), rng.normal(size=(4, 6))

    def forward(W, X):
        return ((W @ X) ** 2).sum()

    def backward(dout, W, X):
        dD = 2 * (W @ X)
        return {"W": X @ dD.T, "X": W.T @ dD}  # dW should be dD @ X.T

    result = gradcheck.check_gradients(forward, backward, {"W": W, "X": X})
    (summary,) = [s for s in result.inputs if not s.ok]
    assert summary.diagnosis.kind == "transpose"


def test_correct_and_unrelated_gradients_through_the_harness():
    rng = np.random.default_rng(3)
    inputs = {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))}

    def forward(W, X):
        return (W @ X).sum()

    def backward(dout, W, X):
        d = np.full((3, 2), dout)  # the upstream gradient of every element of W @ X
        return {"W": d @ X.T, "X": W.T @ d}

    ok = gradcheck.check_gradients(forward, backward, inputs)
    assert ok.ok and all(s.diagnosis is None for s in ok.inputs)
    noise = rng.normal(size=(3, 4))
    bad = gradcheck.check_gradients(forward, lambda d, W, X: {**backward(d, W, X), "W": noise}, inputs)
    assert not bad.ok and bad.inputs[0].diagnosis is None
    assert "likely bug: no simple pattern" in str(bad)


# --- the reported cases, end to end --------------------------------------------------------


def layer_norm(x, gamma, beta):
    xc = x - x.mean(axis=-1, keepdims=True)
    return xc / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + 1e-5) * gamma + beta


def layer_norm_backward_without(term):
    def backward(dout, x, gamma, beta):
        dx, mean_term, var_term = layer_norm_parts(x, gamma, dout)
        dx = dx - (mean_term if term == "mean" else var_term)
        xc = x - x.mean(axis=-1, keepdims=True)
        xhat = xc / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + 1e-5)
        return {"x": dx, "gamma": (dout * xhat).sum(axis=0), "beta": dout.sum(axis=0)}
    return backward


def wrong_inputs(result):
    return {s.name: s.diagnosis for s in result.inputs if not s.ok}


def test_layer_norm_missing_its_mean_term_at_all_minus_one():
    inputs = {"x": -np.ones((3, 4)), "gamma": -np.ones(4), "beta": -np.ones(4)}
    result = gradcheck.check_gradients(layer_norm, layer_norm_backward_without("mean"), inputs)
    d = wrong_inputs(result)["x"]
    assert d.kind == "additive" and d.params["term"] == "per row"
    assert "a per-row term missing or extra" in str(result)


def test_layer_norm_missing_its_variance_term_at_a_shrunk_point_is_not_a_mask():
    x = -np.ones((3, 4))
    x[2, 0] = 0.0  # what shrinking leaves: the term is zero on the constant rows 0 and 1
    inputs = {"x": x, "gamma": -np.ones(4), "beta": -np.ones(4)}
    result = gradcheck.check_gradients(layer_norm, layer_norm_backward_without("variance"), inputs)
    d = wrong_inputs(result)["x"]
    assert d.kind == "undetermined" and d.params["fits"] == "mask" and d.params["rule"] == "slices"
    assert "likely bug (mask)" not in str(result)
    assert "rows 0, 1 of 'x' are constant, row 2 is not" in str(result)


def test_softplus_with_sigmoid_of_minus_x_at_a_shrunk_point_is_no_constant_factor():
    def softplus(x):
        return np.log1p(np.exp(x))

    result = gradcheck.check_gradients(softplus, lambda dout, x: {"x": dout * sigmoid(-x)}, {"x": -np.ones(3)})
    d = wrong_inputs(result)["x"]
    assert d.kind == "undetermined" and d.params["fits"] == "scale"
    assert "likely bug (scale)" not in str(result)
    assert "no diagnosis: the example cannot tell a constant factor 2.718" in str(result)


def test_square_weight_gradient_without_the_transpose_of_its_operand():
    rng = np.random.default_rng(25)
    inputs = {"W": rng.normal(size=(4, 4)), "X": rng.normal(size=(4, 4))}

    def backward(dout, W, X):
        return {"W": dout @ X, "X": W.T @ dout}  # dW should be dout @ X.T

    result = gradcheck.check_gradients(lambda W, X: W @ X, backward, inputs)
    d = wrong_inputs(result)["W"]
    assert d.kind == "transpose" and d.params["operand"] == "X" and d.params["product"] == "G @ X"
    assert "analytic = G @ X where the reference is G @ X.T" in str(result)


def test_a_dropped_path_of_a_fork_through_the_harness():
    rng = np.random.default_rng(26)
    inputs = {name: rng.normal(size=(3, 4)) for name in "xyz"}

    def backward(dout, x, y, z):
        return {"x": dout * y, "y": dout * x, "z": dout * x}  # dx misses dout * z

    result = gradcheck.check_gradients(lambda x, y, z: x * y + x * z, backward, inputs)
    d = wrong_inputs(result)["x"]
    assert d.kind == "additive" and d.params["term"] == "path through z"
    assert "a path of a fork dropped" in str(result)


def test_a_relative_gap_of_1e_4_prints_its_factor():
    rng = np.random.default_rng(27)
    inputs = {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))}

    def backward(dout, W, X):
        return {"W": 1.0001 * dout @ X.T, "X": W.T @ dout}

    result = gradcheck.check_gradients(lambda W, X: W @ X, backward, inputs)
    d = wrong_inputs(result)["W"]
    assert d.kind == "scale" and d.params["named"] == "1.0001"
    assert "off by a constant factor 1.0001" in str(result)


def test_an_integer_gradient_through_the_harness():
    rng = np.random.default_rng(28)
    inputs = {"W": rng.normal(size=(3, 4)), "X": rng.normal(size=(4, 2))}

    def backward(dout, W, X):
        return {"W": (dout @ X.T).astype(np.int64), "X": W.T @ dout}

    result = gradcheck.check_gradients(lambda W, X: W @ X, backward, inputs)
    d = wrong_inputs(result)["W"]
    assert d.kind == "integer" and d.params["dtype"] == "int64"
    assert "the gradient for 'W' is an integer array (int64)" in str(result)


# --- the kinds the custom-op checks name (``layouts``, ``upstream``), through the harness -----

def _custom_op_rows():
    import torch
    from custom_functions import first_sin, pointer_input_square, pointer_square, row_scale, scalar_sin

    rng = np.random.default_rng(29)
    x, s = torch.tensor(rng.normal(size=(4, 3))), torch.tensor(rng.normal(size=4))
    return [
        # (what, forward, inputs, kind, params the diagnosis carries)
        ("dout read as contiguous memory", pointer_square, {"x": x}, "layout", {"tensor": "dout"}),
        ("an input read as contiguous memory", pointer_input_square, {"x": x}, "layout", {"tensor": "x"}),
        ("dout read as its mean", scalar_sin, {"x": x}, "upstream", {"reading": "sum", "axes": "all"}),
        ("dout read as its first element", first_sin, {"x": x}, "upstream", {"reading": "first", "axes": "all"}),
        ("dout averaged over the rows", row_scale, {"x": x, "s": s}, "upstream", {"reading": "mean", "axes": [0]}),
    ]


@pytest.mark.parametrize("row", range(5), ids=["contiguous dout", "contiguous input", "mean", "first", "axis"])
def test_the_custom_op_kinds_reach_the_result_and_its_json(row):
    what, forward, inputs, kind, params = _custom_op_rows()[row]
    result = gradcheck.check_gradients(forward, None, inputs)
    data = json.loads(json.dumps(result.to_dict()))
    found = [i["diagnosis"] for i in data["inputs"] if i["diagnosis"] is not None]
    assert found and all(d["kind"] == kind for d in found), what
    assert all(d["params"][k] == v for d in found for k, v in params.items()), what
    assert kind in KINDS
