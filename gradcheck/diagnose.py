"""Name the likely bug behind a gradient mismatch: a pure function of the gradients.

For each input with mismatches, the analytic gradient ``a`` is tested against the reference
``r`` (torch where it ran, else numeric) for the mistakes people make in backward passes, in
this order; the first that fits every compared element is reported, with its evidence:

* ``zero``: ``a`` is zero (everywhere, or exactly on the wrong elements) where ``r`` is not;
* ``sign`` / ``scale``: ``a = c r`` for a constant ``c``, named when it matches a small integer
  or its reciprocal, an axis size of an input (the batch size ``m``...) or a ratio of sizes
  (an actual over a nominal minibatch size);
* ``transpose``: ``a`` holds ``r``'s values in the transposed layout (square matrices);
* ``swapped``: ``a`` is the reference gradient of another input of the same shape;
* ``mask``: ``a`` is exact except on a subset: whole rows, whole columns, or other elements;
* ``additive``: ``a - r`` is a simple term: a constant, constant along rows or columns, or an
  outer product (rank one).

Nothing fitting means "no simple pattern": no entry is returned for that input.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import numpy as np

from gradcheck.result import Diagnosis

__all__ = ["diagnose"]

FIT = 1e-5  # residual allowed, relative to the reference's largest magnitude


def _named_sizes(inputs: Mapping[str, np.ndarray]) -> dict[int, str]:
    """Axis sizes > 1 of the inputs, each with a name like ``X.shape[0]``."""
    sizes: dict[int, str] = {}
    for name, value in inputs.items():
        for axis, size in enumerate(np.shape(value)):
            if size > 1 and size not in sizes:
                sizes[size] = f"{name}.shape[{axis}]"
    return sizes


def _name_factor(c: float, sizes: dict[int, str]) -> str:
    """A readable name for the factor ``c``: "2", "1/m (X.shape[0] = 64)", "37/100"..."""
    for k in range(2, 5):
        if abs(c - k) <= 1e-6 * k:
            return str(k)
        if abs(c - 1 / k) <= 1e-6 / k:
            return f"1/{k}"
    for size, label in sorted(sizes.items()):
        if abs(c - size) <= 1e-6 * size:
            return f"m = {size} ({label})"
        if abs(c - 1 / size) <= 1e-6 / size:
            return f"1/m, m = {size} ({label})"
    frac = Fraction(c).limit_denominator(1000)
    if frac.denominator > 1 and abs(float(frac) - c) <= 1e-9 * abs(c):
        num, den = frac.numerator, frac.denominator
        parts = [sizes.get(abs(num), str(num)), sizes.get(den, str(den))]
        return f"{num}/{den} ({parts[0]}/{parts[1]})" if any(p in sizes for p in (abs(num), den)) else f"{num}/{den}"
    return f"{c:.6g}"


def _fits(a: np.ndarray, model: np.ndarray, scale: float) -> tuple[bool, float]:
    """Whether ``model`` explains ``a`` on every element, and the largest relative residual."""
    if a.size == 0 or scale == 0:
        return False, np.inf
    residual = float(np.max(np.abs(a - model))) / scale
    return residual <= FIT, residual


def _evidence(count: int, residual: float) -> str:
    return f"fits {count}/{count} compared elements, largest residual {residual:.1e} of the gradient scale"


def _diagnose_one(
    name: str,
    a: np.ndarray,
    r: np.ndarray,
    usable: np.ndarray,
    wrong: np.ndarray,
    references: Mapping[str, np.ndarray],
    sizes: dict[int, str],
) -> Diagnosis | None:
    au, ru = a[usable], r[usable]
    n = int(usable.sum())
    scale = float(np.max(np.abs(ru), initial=0.0))
    if n == 0 or scale == 0:
        if n and np.any(au != 0):
            return Diagnosis("additive", "the gradient should be zero here but is not",
                             {"term": "nonzero where the reference is zero"}, f"{n} compared elements")
        return None

    # Zero where it should not be.
    if np.all(np.abs(au) <= 1e-12 * scale):
        return Diagnosis("zero", "the gradient is zero everywhere, but should not be: a missing "
                         "accumulation or a gradient never written?", {"fraction": 1.0}, _evidence(n, 0.0))

    # A constant factor (including -1).
    c = float(np.dot(au, ru) / np.dot(ru, ru))
    ok, residual = _fits(au, c * ru, scale)
    if ok and abs(c - 1) > 1e-7:
        if abs(c + 1) <= 1e-6:
            return Diagnosis("sign", "the sign is flipped: analytic = -reference", {"factor": -1.0},
                             _evidence(n, residual))
        named = _name_factor(c, sizes)
        return Diagnosis("scale", f"off by a constant factor: analytic = {named} x reference",
                         {"factor": c, "named": named}, _evidence(n, residual))

    # Transposed layout of a square matrix (a non-square transpose is a shape fault).
    if a.ndim == 2 and a.shape[0] == a.shape[1] > 1 and usable.all():
        ok, residual = _fits(a, r.T, scale)
        if ok:
            return Diagnosis("transpose", "analytic is the reference transposed (e.g. X.T @ dD "
                             "where dD @ X.T was meant)", {}, _evidence(n, residual))

    # Gradients of two inputs swapped.
    for other, ref_other in references.items():
        if other != name and ref_other.shape == r.shape:
            ok, residual = _fits(au, ref_other[usable], scale)
            if ok:
                return Diagnosis("swapped", f"analytic is the gradient of {other!r}: the two "
                                 "gradients are swapped", {"with": other}, _evidence(n, residual))

    # Wrong only on a subset, exact elsewhere: named as such when the subset is a minority;
    # a majority is first tested for an additive structure below.
    subset = _subset(a, r, usable, wrong, scale, n)
    if subset is not None and subset.params.get("fraction", 1.0) <= 0.5:
        return subset
    additive = _additive(a, r, usable, scale, n)
    return additive if additive is not None else subset


def _subset(
    a: np.ndarray, r: np.ndarray, usable: np.ndarray, wrong: np.ndarray, scale: float, n: int
) -> Diagnosis | None:
    """``zero`` or ``mask`` when ``a`` is exact except on the wrong elements."""
    right = usable & ~wrong
    if right.any() and (usable & wrong).any():
        ok_rest, residual = _fits(a[right], r[right], scale)
        if ok_rest:
            bad = usable & wrong
            if np.all(np.abs(a[bad]) <= 1e-12 * scale):
                return Diagnosis("zero", f"zero on {int(bad.sum())} of {n} elements that should "
                                 "not be zero (a mask or an accumulation missing there?)",
                                 {"fraction": float(bad.sum() / n)}, f"the other {int(right.sum())} elements are exact")
            params: dict[str, object] = {"fraction": float(bad.sum() / n)}
            where = f"{int(bad.sum())} of {n} elements"
            if a.ndim == 2:
                rows = np.flatnonzero(bad.any(axis=1))
                cols = np.flatnonzero(bad.any(axis=0))
                if len(rows) < a.shape[0] and np.all(wrong[rows] | ~usable[rows]):
                    params["rows"] = rows.tolist()
                    where = f"rows {rows.tolist()[:10]}"
                elif len(cols) < a.shape[1] and np.all(wrong[:, cols] | ~usable[:, cols]):
                    params["columns"] = cols.tolist()
                    where = f"columns {cols.tolist()[:10]}"
            if np.all(r[bad] == 0):
                where += ", all where the reference is zero (a mask left out?)"
            return Diagnosis("mask", f"wrong only on a subset: {where}; exact elsewhere",
                             params, f"the other {int(right.sum())} elements are exact")
    return None


def _additive(a: np.ndarray, r: np.ndarray, usable: np.ndarray, scale: float, n: int) -> Diagnosis | None:
    """``additive`` when ``a - r`` is a constant, constant along rows or columns, or rank one."""
    d = np.where(usable, a - r, 0.0)
    du = d[usable]
    if usable.all():
        if np.all(np.abs(du - du.mean()) <= FIT * scale):
            return Diagnosis("additive", f"off by a constant {du.mean():.6g} on every element "
                             "(a missing or extra bias-like term?)", {"term": "constant", "value": float(du.mean())},
                             _evidence(n, float(np.max(np.abs(du - du.mean()))) / scale))
        if d.ndim == 2 and min(d.shape) > 1:
            if np.all(np.abs(d - d.mean(axis=1, keepdims=True)) <= FIT * scale):
                return Diagnosis("additive", "off by a term constant along each row",
                                 {"term": "per row"}, _evidence(n, 0.0))
            if np.all(np.abs(d - d.mean(axis=0, keepdims=True)) <= FIT * scale):
                return Diagnosis("additive", "off by a term constant along each column (a missing "
                                 "- I_y or bias contribution?)", {"term": "per column"}, _evidence(n, 0.0))
            s = np.linalg.svd(d, compute_uv=False)
            if s[0] > 0 and s[1] <= FIT * s[0]:
                return Diagnosis("additive", "off by an outer-product (rank-one) term, such as a "
                                 "missing - I_y or a missing bias contribution",
                                 {"term": "rank one", "size": float(s[0])}, _evidence(n, float(s[1] / s[0])))
    return None


def diagnose(
    analytic: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    usable: Mapping[str, np.ndarray],
    mismatched: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
) -> dict[str, Diagnosis]:
    """The likely bug for each input that has mismatches.

    Args:
        analytic: name -> the backward's gradient (input's shape, float64).
        reference: name -> the best oracle value per element (same shape).
        usable: name -> bool mask of the elements that were compared (not kinks).
        mismatched: name -> bool mask of the mismatching elements.
        inputs: every input's value (for named factors such as the batch size).
    Returns:
        name -> Diagnosis, only for inputs with mismatches that a pattern explains.
    """
    sizes = _named_sizes(inputs)
    found = {}
    for name, wrong in mismatched.items():
        if not np.any(wrong) or name not in analytic or name not in reference:
            continue
        a = np.asarray(analytic[name], dtype=np.float64)
        r = np.asarray(reference[name], dtype=np.float64)
        mask = np.asarray(usable[name], dtype=bool) & np.isfinite(r)
        result = _diagnose_one(name, a, r, mask, np.asarray(wrong, dtype=bool), reference, sizes)
        if result is not None:
            found[name] = result
    return found
