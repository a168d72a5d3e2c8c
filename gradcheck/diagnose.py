"""Name the likely bug behind a gradient mismatch: a pure function of the gradients.

For each input with mismatches, the analytic gradient ``a`` is tested against the reference
``r`` (torch where it ran, else numeric) for the mistakes people make in backward passes. Each
explanation is a candidate; a candidate is accepted when it fits every compared element to the
fit tolerance (up to 2% of outliers, and never more than a tenth of the mismatching elements),
and among the accepted ones the simplest wins, then the one with fewer outliers, then the one
with the smaller residual. By rank, simplest first:

0. ``zero``: ``a`` is zero everywhere the reference is not;
1. ``sign`` / ``scale`` with a named factor, ``conjugated`` (a complex gradient with its
   imaginary parts negated: the conjugate of torch's convention), ``transpose`` (the layout, or a square operand of
   a matrix product transposed wrongly: ``dD @ X`` for ``dD @ X.T``), ``swapped``: no free
   parameter;
2. ``scale`` with an unnamed factor, ``additive`` terms with at most one free parameter (a
   constant, a multiple of a one-hot of integer labels, a multiple of an input such as a
   missing ``lam*W``, a second term like the analytic one with another input in its place: a
   path of a fork dropped);
3. ``zero`` / ``mask`` on a described subset (rows, columns, where an input is positive, where
   the reference is zero...), exact elsewhere;
4. ``additive`` terms with many parameters (constant along rows or columns, rank one, affine in
   an input along rows or columns: a normalization's mean or variance term);
5. ``mask`` on an undescribed subset of at most half the elements, exact elsewhere;
6. ``additive``: the reference is zero everywhere, the analytic gradient is not.

The winner is named only when the example can tell it from its look-alikes (``RULES``): on a
degenerate example (every input -1, constant rows, matching elements that share one value) a
wrong formula fits a simple pattern by accident, and the diagnosis is ``undetermined``, saying
what fits and why the example cannot tell. A gradient returned as an integer array is
``integer`` where the reference is not a whole number at a mismatch (a note otherwise).

Named factors are, simplest first: -1; the integers 2..10 and their reciprocals; the inputs'
axis sizes and their reciprocals (``m`` for a batch axis: the first axis of a matrix or of an
integer label vector); ratios of two axis sizes; an axis size over an integer or an integer
over an axis size (an actual over a nominal minibatch size), only when the factor is known
precisely enough to pin that integer; and each of these negated. A batch axis of size 3 or more
names its factor ahead of the small integers, since a factor equal to the batch size is most
likely that. Unnamed numbers are printed with the digits that tell them from a simple number
(1.0001, not 1).

Tolerances are relative to each element's magnitude plus a floor relative to the reference's
largest magnitude; they come from the lowest float precision among the inputs (float64: 1e-6,
so the numeric oracle's own error of about 1e-8 never breaks a fit) and shrink for mismatches
smaller than that. Nothing fitting means "no simple pattern": no entry for that input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck.result import Diagnosis
from gradcheck.tolerance import fit_rtol

__all__ = ["KINDS", "RULES", "diagnose"]

# "layout" and "upstream" are named by the checks that rerun the backward (``gradcheck.layouts``,
# ``gradcheck.upstream``), "precision" by a low-dtype run held to its own float64 run
# (``gradcheck.precision``), not by the patterns below.
KINDS = ("scale", "sign", "conjugated", "transpose", "swapped", "zero", "mask", "additive", "integer", "layout",
         "upstream", "precision",
         "undetermined")

# The fit tolerance relative to an element's magnitude comes from the lowest float precision
# among the inputs (``tolerance.fit_rtol``); the absolute floor is a tenth of it times the
# reference's largest magnitude.
SMALL_INTEGERS = range(2, 11)
AGREES = 1e-9  # relative gap below which an element agrees with the reference
OUTLIER_SHARE = 0.02  # of the compared elements a model may miss (the oracle's odd failure)
OUTLIER_SHARE_OF_WRONG = 0.1  # ... and never more than this share of the mismatches
MAX_PERMUTED_NDIM = 4  # axis permutations are tried up to this many dimensions
LISTED = 8  # indices listed in a description
RANK_ONE_SWEEPS = 8


# ---------------------------------------------------------------------------------------------
# Named factors


@dataclass(frozen=True)
class _Axis:
    size: int
    label: str  # e.g. "X.shape[0]"
    batch: bool  # first axis of a matrix-like input or of an integer label vector

    @property
    def symbol(self) -> str:
        return "m" if self.batch else "n"


def _axes(inputs: Mapping[str, Any]) -> dict[int, _Axis]:
    """Each axis size > 1 among the inputs, with its best name (a batch axis first)."""
    found: dict[int, _Axis] = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        for k, size in enumerate(value.shape):
            size = int(size)
            if size < 2:
                continue
            batch = k == 0 and (value.ndim >= 2 or value.dtype.kind in "iu")
            axis = _Axis(size, f"{name}.shape[{k}]", batch)
            if size not in found or (batch and not found[size].batch):
                found[size] = axis
    return found


@dataclass(frozen=True)
class _Factor:
    value: float
    named: str  # e.g. "2", "1/m (X.shape[0] = 64)", "37/100 (X.shape[0] = 37 over 100)"
    why: str  # the likely cause, in parentheses
    axes: tuple[str, ...] = ()


def _magnitudes(mag: float, axes: dict[int, _Axis], rel: float) -> list[_Factor]:
    """Named positive factors within 5% of ``mag``, simplest first."""
    out: list[_Factor] = []

    def near(v: float) -> bool:
        return abs(v - mag) <= 0.05 * mag

    def same_size(v: float) -> tuple[str, ...]:
        return tuple(ax.label if math.isclose(s, v) else f"1/{ax.label}"
                     for s, ax in axes.items() if math.isclose(s, v) or math.isclose(1 / s, v))

    batch_first = [ax for ax in axes.values() if ax.batch and ax.size >= 3]
    for ax in batch_first:
        if near(ax.size):
            out.append(_Factor(float(ax.size), f"m ({ax.label} = {ax.size})",
                               f"a division by the batch size missing: a sum where the loss "
                               f"takes the mean over {ax.label}?", (ax.label,)))
        if near(1 / ax.size):
            out.append(_Factor(1 / ax.size, f"1/m ({ax.label} = {ax.size})",
                               "divided by the batch size once too often, or a mean where a sum "
                               "was meant?", (ax.label,)))
    for k in SMALL_INTEGERS:
        if near(k):
            why = ("a 1/2 missing, or a term counted twice?" if k == 2
                   else f"a 1/{k} missing, or a term counted {k} times?")
            out.append(_Factor(float(k), str(k), why, same_size(k)))
        if near(1 / k):
            why = ("a factor 2 missing (the 2 of a square's derivative?), or divided by 2 once too often?"
                   if k == 2 else f"a factor {k} missing, or divided by {k} once too often?")
            out.append(_Factor(1 / k, f"1/{k}", why, same_size(1 / k)))
    for size, ax in axes.items():
        sym, label = ax.symbol, ax.label
        if near(size):
            out.append(_Factor(float(size), f"{sym} ({label} = {size})",
                               f"a division by {label} missing: a sum where a mean was meant?", (label,)))
        if near(1 / size):
            out.append(_Factor(1 / size, f"1/{sym} ({label} = {size})",
                               f"divided by {label} once too often, or a mean where a sum was meant?", (label,)))
    for (s1, ax1), (s2, ax2) in itertools.permutations(axes.items(), 2):
        if near(s1 / s2):
            out.append(_Factor(s1 / s2, f"{s1}/{s2} ({ax1.label}/{ax2.label})",
                               f"divided by {ax2.label} = {s2} where {ax1.label} = {s1} was meant?",
                               (ax1.label, ax2.label)))
    # An actual over a nominal minibatch size (always below 1): an axis size over an integer,
    # or an integer over an axis size; only when the factor is precise enough to pin the integer.
    for size, ax in axes.items():
        if not 1e-9 < mag < 1e9:  # no minibatch ratio is that extreme
            break
        for k in {round(size / mag), round(size / mag) - 1, round(size / mag) + 1}:
            if k > size and rel * k <= 0.01 and near(size / k):
                out.append(_Factor(size / k, f"{size}/{k} ({ax.label} = {size} over {k})",
                                   f"divided by {k} where {ax.label} = {size} was meant: a nominal "
                                   "minibatch size instead of the actual one?", (ax.label,)))
        for k in {round(mag * size), round(mag * size) - 1, round(mag * size) + 1}:
            if 2 <= k < size and rel * size <= 0.01 and near(k / size):
                out.append(_Factor(k / size, f"{k}/{size} ({k} over {ax.label} = {size})",
                                   f"divided by {ax.label} = {size} where {k} was meant: the padded "
                                   "batch size instead of the actual one?", (ax.label,)))
    unique: list[_Factor] = []
    for f in out:
        if not any(math.isclose(f.value, u.value, rel_tol=1e-12) for u in unique):
            unique.append(f)
    return unique


def _named_factors(c: float, axes: dict[int, _Axis], rel: float) -> list[_Factor]:
    """Named factors (signed) near ``c``, simplest first; -1 is first when it is near."""
    if not math.isfinite(c) or c == 0:
        return []
    mag = abs(c)
    if c > 0:
        return _magnitudes(mag, axes, rel)
    minus = _Factor(-1.0, "-1", "a minus sign missing or extra, e.g. y - p where p - y was meant?")
    out = [minus] if abs(mag - 1) <= 0.05 else []
    for f in _magnitudes(mag, axes, rel):
        out.append(_Factor(-f.value, f"-{f.named}", f"the sign is flipped too; {f.why}", f.axes))
    return out


SHOWN_DIGITS = 4  # significant digits of a printed number, at least
SHOWN_GAP = 0.1  # ... and more until the printed value is off by under this share of its gap
# from the nearest simple number (an integer or 1/k), so 1.0001 is not printed as 1


def _fmt(value: float, known: float = 1e-15) -> str:
    """``value`` with the digits that matter: 4 significant digits, more while they are needed
    to tell it from the nearest simple number (1.0001, not 1; 0.33334, not 0.3333), but never
    more than ``known`` (the relative precision of the fit) can pin."""
    if not math.isfinite(value) or value == 0:
        return f"{value:.{SHOWN_DIGITS}g}"
    mag = abs(value)
    simple = [float(round(mag))] + ([1 / round(1 / mag)] if 1 < 1 / mag < 1e6 else [])
    gap = min(abs(mag - s) for s in simple)
    most = max(SHOWN_DIGITS, min(17, math.ceil(-math.log10(max(known, 1e-17))) + 1))
    for digits in range(SHOWN_DIGITS, most + 1):
        shown = f"{value:.{digits}g}"
        if abs(float(shown) - value) <= SHOWN_GAP * gap:
            return shown
    return f"{value:.{SHOWN_DIGITS}g}" if gap <= known * mag else f"{value:.{most}g}"


# ---------------------------------------------------------------------------------------------
# One input's problem and its candidate explanations


@dataclass
class _Problem:
    name: str
    a: np.ndarray  # analytic
    r: np.ndarray  # reference (NaN where not usable)
    usable: np.ndarray
    wrong: np.ndarray  # usable elements that mismatch
    right: np.ndarray  # usable elements that match
    scale: float  # largest |reference| over the usable elements (or |analytic| if that is 0)
    rel: float  # fit tolerance relative to an element's magnitude
    floor: float  # absolute part of the fit tolerance
    inputs: Mapping[str, np.ndarray]
    references: Mapping[str, tuple[np.ndarray, np.ndarray]]  # other inputs: (reference, usable)
    axes: dict[int, _Axis]
    pairs: bool = False  # a complex input's real pairs: the last axis is (real, imaginary)

    def tol(self, model: np.ndarray) -> np.ndarray:
        return self.rel * np.maximum(np.abs(self.a), np.abs(model)) + self.floor

    def significant(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x) > self.floor

    def index(self, flat: int) -> list[int]:
        return [int(i) for i in np.unravel_index(flat, self.a.shape)] if self.a.ndim else []

    def fmt(self, value: float) -> str:
        return _fmt(value, self.rel)

    def aligned(self) -> dict[str, np.ndarray]:
        """The inputs whose elements line up with the gradient's (same shape, numeric), as floats."""
        return {n: np.asarray(v, dtype=np.float64) for n, v in self.inputs.items()
                if np.shape(v) == self.a.shape and np.asarray(v).dtype.kind in "fiu" and np.size(v) >= 2}


@dataclass
class _Candidate:
    rank: int
    kind: str
    summary: str
    params: dict[str, Any]
    model: np.ndarray | None = None  # the analytic gradient this explanation predicts
    defined: np.ndarray | None = None  # where the prediction is known
    dof: int = 0  # free parameters fitted to the data
    evidence: str = ""
    outliers: int = 0
    residual: float = 0.0
    alternatives: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # the identifiability rules it must pass (see RULES)
    reading: str = ""  # the pattern in a few words, e.g. "a constant factor 2"
    slack: float = 1.0  # the fit tolerance's multiple: a model solved from the reference is noisier


def _judge(p: _Problem, c: _Candidate) -> bool:
    """Fit a model candidate to the data: fill in its evidence, or say it does not fit."""
    if c.model is None or c.defined is None:
        return False
    defined = c.defined & np.isfinite(c.model)
    n = int(defined.sum())
    if n == 0 or (c.dof and n < c.dof + 2):
        return False
    err = np.where(defined, np.abs(p.a - np.where(defined, c.model, 0.0)), np.inf)
    inlier = defined & (err <= c.slack * p.tol(np.where(defined, c.model, 0.0)))
    wrong = p.wrong & defined
    n_wrong = int(wrong.sum())
    if n_wrong == 0 or not np.any(inlier & wrong):
        return False
    misses = n - int(inlier.sum())
    if misses > min(int(OUTLIER_SHARE * n), int(OUTLIER_SHARE_OF_WRONG * n_wrong)):
        return False
    residual = float(np.max(err[inlier])) / p.scale
    c.outliers, c.residual = misses, residual
    to = "exactly" if residual == 0 else f"to {residual:.0e} of the reference's scale"
    c.evidence = f"fits {n - misses}/{n} compared elements {to}"
    if misses:
        shown = [tuple(p.index(i)) for i in np.flatnonzero(defined & ~inlier)[:3]]
        c.evidence += f"; {misses} do not, e.g. at {', '.join(map(str, shown))}"
    return True


def _fit_factor(p: _Problem, x: np.ndarray, y: np.ndarray, where: np.ndarray) -> float:
    """A robust least-squares ``c`` with ``y ~ c x`` on ``where``: median ratio, then refit."""
    strong = where & (np.abs(x) > 0.1 * np.max(np.abs(np.where(where, x, 0.0)), initial=0.0))
    if not strong.any():
        return math.nan
    c0 = float(np.median(y[strong] / x[strong]))
    close = where & (np.abs(y - c0 * x) <= p.tol(c0 * x))
    use = close if close.any() else where
    denom = float(np.dot(x[use], x[use]))
    return float(np.dot(x[use], y[use]) / denom) if denom > 0 else c0


def _scale_candidates(p: _Problem) -> list[_Candidate]:
    rz = np.where(p.usable, p.r, 0.0)
    out = [_Candidate(0, "zero", "analytic is zero everywhere, but the reference is not (a gradient "
                      "never written or never accumulated?)", {"fraction": 1.0}, np.zeros_like(p.a), p.usable,
                      needs=("factor",), reading="a gradient that is zero everywhere")]
    c = _fit_factor(p, rz, p.a, p.usable)
    if not math.isfinite(c) or c == 0:
        return out
    for f in _named_factors(c, p.axes, p.rel):
        if f.value == -1.0:
            out.append(_Candidate(1, "sign", "analytic = -reference: the sign is flipped "
                                  f"({f.why})", {"factor": -1.0, "named": "-1"}, -rz, p.usable,
                                  needs=("factor",), reading="a flipped sign"))
            continue
        also = [a for a in f.axes if a not in f.named]
        named = f.named + (f" (= {', '.join(also)})" if also else "")
        params: dict[str, Any] = {"factor": f.value, "named": f.named}
        if f.axes:
            params["axes"] = list(f.axes)
        out.append(_Candidate(1, "scale", f"analytic = {named} x reference: off by a factor of "
                              f"{named} ({f.why})", params, f.value * rz, p.usable,
                              needs=("factor",), reading=f"a constant factor {f.named}"))
    if np.count_nonzero(p.usable & p.significant(rz)) >= 3:  # a free factor needs data to pin it
        shown = p.fmt(c)
        out.append(_Candidate(2, "scale", f"analytic = {shown} x reference: off by a constant "
                              f"factor {shown} (no simple name)", {"factor": c, "named": shown},
                              c * rz, p.usable, dof=1, needs=("factor",), reading=f"a constant factor {shown}"))
    return out


def _conjugate_candidates(p: _Problem) -> list[_Candidate]:
    """A complex gradient returned as its conjugate: real parts right, imaginary parts negated
    (``d/dz`` taken for ``d/d conj(z)``, or a ``conj`` missing or one too many)."""
    if not p.pairs:
        return []
    conjugate = np.where(p.usable, p.r, 0.0) * np.array([1.0, -1.0])
    return [_Candidate(1, "conjugated", "analytic = conj(reference): the imaginary parts have the wrong sign "
                       "(torch's convention is dL/d(Re z) + i dL/d(Im z): a conj missing, or one too many?)",
                       {}, conjugate, p.usable, reading="a conjugated gradient")]


def _permutations(shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], str, str]]:
    """(axes, layout, phrase) for every way to read the reference transposed into ``shape``."""
    ndim = len(shape)
    out = []
    if 2 <= ndim <= MAX_PERMUTED_NDIM:
        for perm in itertools.permutations(range(ndim)):
            if perm != tuple(range(ndim)) and tuple(shape[k] for k in perm) == shape:
                out.append((perm, "transposed", "transposed"))
    if ndim >= 2 and shape[::-1] != shape:
        out.append((tuple(range(ndim))[::-1], "transposed, then reshaped",
                    "transposed and reshaped to the input's shape"))
        out.append((tuple(range(ndim))[::-1], "column-major",
                    "read in column-major (Fortran) order"))
    return out


def _transpose_candidates(p: _Problem) -> list[_Candidate]:
    out = []
    shape = p.a.shape
    rz = np.where(p.usable, p.r, 0.0)
    for perm, layout, phrase in _permutations(shape):
        if layout == "transposed":
            model, defined = np.transpose(rz, perm), np.transpose(p.usable, perm)
        elif layout == "column-major":
            model = rz.reshape(-1).reshape(shape, order="F")
            defined = p.usable.reshape(-1).reshape(shape, order="F")
        else:
            model, defined = np.transpose(rz).reshape(shape), np.transpose(p.usable).reshape(shape)
        if len(shape) == 2 and layout == "transposed":
            hint = "a product in the wrong order, e.g. X.T @ dD where dD @ X.T was meant?"
        elif layout == "transposed":
            hint = f"axes {list(perm)}: a swapaxes or permute missing or extra?"
        else:
            hint = "a .T before a reshape, or a layout mix-up between row- and column-major?"
        out.append(_Candidate(1, "transpose", f"analytic is the reference {phrase} ({hint})",
                              {"axes": list(perm), "layout": layout}, model, defined))
    return out


OPERAND_MAX_SIDE = 512  # square operands up to this side are tried (an inverse each)
OPERAND_MAX_LOOSENESS = 1e-2  # a solved model's tolerance (the fit's times the operand's
# condition number, by which solving multiplies the reference's error) must stay below this


def _operand_candidates(p: _Problem) -> list[_Candidate]:
    """A square operand of a matrix product transposed wrongly: ``dW = G @ X`` where the
    reference is ``G @ X.T`` (``D = W @ X``, the classic square-matrix bug), and the three
    sibling mistakes. ``G``, the gradient of the product's output, is not known: it is solved
    from the reference (``G = reference @ inv(X.T)``), which multiplies the reference's error by
    the operand's condition number: the fit allows for that, and an operand too ill-conditioned
    for a tight fit, or symmetric (nothing to tell apart), is not tried."""
    r = p.r
    if r.ndim != 2 or not p.usable.all():
        return []
    out = []
    for name, v in p.inputs.items():
        v = np.asarray(v)
        if not (v.ndim == 2 and v.shape[0] == v.shape[1] and 2 <= v.shape[0] <= OPERAND_MAX_SIDE
                and v.dtype.kind == "f" and np.all(np.isfinite(v))):
            continue
        v = v.astype(np.float64)
        if np.allclose(v, v.T, rtol=p.rel, atol=0.0):
            continue
        try:
            inverse = np.linalg.inv(v)
        except np.linalg.LinAlgError:  # a singular operand: nothing to tell apart
            continue
        # The condition number in the 1-norm: within a factor n of the 2-norm's, and cheap here.
        condition = float(np.linalg.norm(v, 1) * np.linalg.norm(inverse, 1))
        if not condition * p.rel <= OPERAND_MAX_LOOSENESS:
            continue
        n = v.shape[0]
        # (side, meant, written, model): the reference is ``meant``, analytic ``written``, and
        # G is solved from the reference (e.g. G = reference @ inv(X.T) for G @ X.T).
        tries = []
        if r.shape[1] == n:
            tries.append(("right", f"G @ {name}.T", f"G @ {name}", r @ inverse.T @ v))
            tries.append(("right", f"G @ {name}", f"G @ {name}.T", r @ inverse @ v.T))
        if r.shape[0] == n:
            tries.append(("left", f"{name}.T @ G", f"{name} @ G", v @ inverse.T @ r))
            tries.append(("left", f"{name} @ G", f"{name}.T @ G", v.T @ inverse @ r))
        for side, meant, written, model in tries:
            missing = meant.endswith(".T") or meant.startswith(f"{name}.T")
            how = "is not transposed" if missing else "is transposed where it should not be"
            if not missing:
                example = "a .T too many"
            elif side == "right":
                example = "dW = dD @ X where D = W @ X needs dD @ X.T"
            else:
                example = "dX = W @ dD where D = W @ X needs W.T @ dD"
            out.append(_Candidate(
                1, "transpose",
                f"analytic = {written} where the reference is {meant}: the operand {name!r} of a "
                f"matrix product {how} ({example}?; G, the gradient of the product, is solved from "
                "the reference)",
                {"layout": "operand not transposed" if missing else "operand transposed",
                 "operand": name, "side": side, "product": written, "meant": meant},
                model, np.ones(r.shape, dtype=bool), reading=f"{written} in place of {meant}",
                slack=condition))
    return out


def _swapped_candidates(p: _Problem) -> list[_Candidate]:
    out = []
    for other, (ref, use) in p.references.items():
        if other == p.name or ref.shape != p.a.shape:
            continue
        out.append(_Candidate(1, "swapped", f"analytic is the reference gradient of {other!r}: the "
                              f"gradients of {p.name!r} and {other!r} are swapped (returned under each "
                              "other's names?)", {"with": other}, np.where(use, ref, 0.0), use.copy(),
                              needs=("swapped",), reading=f"gradients swapped with {other!r}"))
    return out


def _additive(p: _Problem, rank: int, term: np.ndarray, defined: np.ndarray, dof: int,
              summary: str, params: dict[str, Any], *, needs: tuple[str, ...] = (),
              reading: str = "") -> _Candidate:
    size = float(np.max(np.abs(np.where(defined, term, 0.0)), initial=0.0))
    params = {**params, "size": size, "relative": size / p.scale}
    return _Candidate(rank, "additive", summary, params, np.where(p.usable, p.r, 0.0) + term,
                      defined, dof=dof, needs=needs, reading=reading or f"a term {params['term']}")


def _onehot(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """One-hot of integer ``labels`` over the last axis of ``shape``, if they fit it."""
    if labels.dtype.kind not in "iu" or len(shape) < 1 or labels.shape != shape[:-1] or labels.size == 0:
        return None
    if labels.min() < 0 or labels.max() >= shape[-1]:
        return None
    out = np.zeros(shape)
    np.put_along_axis(out, labels[..., None].astype(np.intp), 1.0, axis=-1)
    return out


def _simple_additive_candidates(p: _Problem) -> list[_Candidate]:
    """Terms with at most one free parameter: a constant, a one-hot of labels, a multiple of an
    input, and a second term like the analytic one (a path of a fork)."""
    u = p.usable
    d = np.where(u, p.a - np.where(u, p.r, 0.0), 0.0)
    out = []
    if u.any():
        k = float(np.median(d[u]))
        close = u & (np.abs(d - k) <= p.tol(p.a - d + k))
        k = float(np.mean(d[close])) if close.any() else k
        out.append(_additive(p, 2, np.full(p.a.shape, k), u, 1,
                             f"analytic = reference + {p.fmt(k)} on every element (a constant term "
                             "missing or extra?)", {"term": "constant", "value": k},
                             reading=f"a constant term {p.fmt(k)}"))
    for name, value in p.inputs.items():
        value = np.asarray(value)
        hot = _onehot(value, p.a.shape)
        if hot is not None:
            k = _fit_factor(p, np.where(u, hot, 0.0), d, u)
            if math.isfinite(k) and k != 0:
                named = next((f.named for f in _named_factors(k, p.axes, p.rel)
                              if abs(f.value - k) <= p.rel * abs(k)), p.fmt(k))
                missing = "missing" if k > 0 else "extra"
                out.append(_additive(p, 2, k * hot, u, 1,
                                     f"analytic = reference + {named} x one-hot({name}): a "
                                     f"{'- ' if k > 0 else '+ '}I_{name} term {missing} (the label term "
                                     "of softmax cross-entropy?)",
                                     {"term": f"one-hot({name})", "factor": k, "named": named}))
    for name, x in p.aligned().items():
        if _single_value(x[u], p.rel):
            continue  # a constant input: the constant term above
        k = _fit_factor(p, np.where(u, x, 0.0), d, u)
        if not math.isfinite(k) or k == 0:
            continue
        named = next((f.named for f in _named_factors(abs(k), p.axes, p.rel)
                      if abs(f.value - abs(k)) <= p.rel * abs(k)), p.fmt(abs(k)))
        term = name if abs(abs(k) - 1) <= p.rel else f"{named} x {name}"
        if k < 0:
            summary = (f"analytic = reference - {term}: a term {term} is missing (the path through "
                       f"{name} of a fork dropped, or a regularization gradient left out?)")
        else:
            summary = (f"analytic = reference + {term}: an extra term {term} (a regularization "
                       "gradient added twice, or a path counted twice?)")
        out.append(_additive(p, 2, k * x, u, 1, summary, {"term": f"proportional to {name}", "factor": k},
                             reading=f"a term proportional to {name}"))
    out += _fork_candidates(p)
    return out


def _fork_candidates(p: _Problem) -> list[_Candidate]:
    """A path of a fork dropped: the reference is ``G*y + G*z`` (f = x*y + x*z), the analytic
    ``G*y`` alone, with ``G`` unknown (the upstream gradient). Then the missing term is the
    analytic one with ``z`` in place of ``y``: ``analytic = reference * y / (y + z)``, a model
    without a free parameter, tried for each pair of inputs aligned with the gradient."""
    u = p.usable
    aligned = {n: x for n, x in p.aligned().items() if n != p.name and not _single_value(x[u], p.rel)}
    out = []
    for (n1, x1), (n2, x2) in itertools.permutations(aligned.items(), 2):
        total = x1 + x2
        defined = u & (np.abs(total) > p.rel * (np.abs(x1) + np.abs(x2)))
        share = np.where(defined, x1 / np.where(defined, total, 1.0), 0.0)
        if int(defined.sum()) < 3 or _single_value(share[defined], p.rel):
            continue  # a constant share is a constant factor
        model = np.where(defined, p.r, 0.0) * share
        out.append(_Candidate(
            2, "additive",
            f"analytic = reference x {n1}/({n1} + {n2}): the reference has a second term like the "
            f"analytic one with {n2} in place of {n1}, and analytic lacks it (a path of a fork "
            f"dropped, e.g. dx = G*{n1} where x*{n1} + x*{n2} needs G*({n1} + {n2})?)",
            {"term": f"path through {n2}", "present": n1, "missing": n2},
            model, defined, reading=f"the path through {n2} missing"))
    return out


def _axis_label(ndim: int, axis: int) -> tuple[str, str]:
    if ndim == 2:
        return ("per row", "constant along each row: a per-row term missing or extra, such as "
                "the mean's term of a normalization over the row?") if axis == 0 else (
            "per column", "constant down each column: a bias contribution missing or extra?")
    return f"along axis {axis}", f"it varies only along axis {axis}"


def _structured_additive_candidates(p: _Problem) -> list[_Candidate]:
    """Terms with many parameters: varying along one axis only, or rank one (matrices)."""
    u = p.usable
    d = np.where(u, p.a - np.where(u, p.r, 0.0), np.nan)
    out = []
    shape = p.a.shape
    if p.a.ndim >= 2:
        for axis in range(p.a.ndim):
            others = tuple(k for k in range(p.a.ndim) if k != axis)
            if math.prod(shape[k] for k in others) < 2:
                continue
            counts = np.sum(u, axis=others, keepdims=True)
            if np.any(counts == 0):
                continue
            term = np.broadcast_to(np.nanmedian(d, axis=others, keepdims=True), shape)
            term_name, hint = _axis_label(p.a.ndim, axis)
            out.append(_additive(p, 4, term, u, shape[axis],
                                 f"analytic - reference depends only on the index along axis {axis} "
                                 f"({hint})", {"term": term_name}))
        if p.a.ndim >= 3:
            for axis in range(p.a.ndim):
                if shape[axis] < 2 or np.any(np.sum(u, axis=axis) == 0):
                    continue
                term = np.broadcast_to(np.nanmedian(d, axis=axis, keepdims=True), shape)
                out.append(_additive(p, 4, term, u, math.prod(shape) // shape[axis],
                                     f"analytic - reference is constant along axis {axis} (a "
                                     "broadcast term missing or extra?)", {"term": f"constant along axis {axis}"}))
    if p.a.ndim == 2 and min(shape) >= 2:
        outer = _rank_one(np.where(u, d, 0.0), u)
        if outer is not None:
            out.append(_additive(p, 4, outer, u, sum(shape) - 1,
                                 "analytic - reference is an outer product u v^T (a rank-one term, "
                                 "such as a bias or a - I_y contribution, missing or extra?)",
                                 {"term": "rank one"}))
    return out + _affine_candidates(p)


AFFINE_MIN_VALUES = 3  # distinct input values a slice needs before a + b*x is a claim about it


def _affine_candidates(p: _Problem) -> list[_Candidate]:
    """A term that is, along one axis, an affine function ``a + b*x`` of an input ``x`` aligned
    with the gradient, ``a`` and ``b`` fitted per slice: the terms of a normalization's backward
    (through the mean a constant, through the variance a multiple of ``x - mean(x)``). Tried
    only where every slice the term touches holds at least three distinct values of ``x``:
    through two points any term is affine."""
    out: list[_Candidate] = []
    if p.a.ndim < 2:
        return out
    u = p.usable
    d = np.where(u, p.a - np.where(u, p.r, 0.0), 0.0)
    for name, x in p.aligned().items():
        for axis in range(p.a.ndim):
            size = p.a.shape[axis]
            if size < AFFINE_MIN_VALUES:
                continue
            X = np.moveaxis(x, axis, -1).reshape(-1, size)
            D = np.moveaxis(d, axis, -1).reshape(-1, size)
            W = np.moveaxis(u, axis, -1).reshape(-1, size).astype(np.float64)
            touched = np.any(W * p.significant(D), axis=1)
            xs = np.sort(np.where(W > 0, X, np.nan), axis=1)
            steps = np.diff(xs, axis=1) > p.rel * np.max(np.abs(W * X), axis=1, keepdims=True)
            if not touched.any() or np.any(touched & (1 + steps.sum(axis=1) < AFFINE_MIN_VALUES)):
                continue
            s0, sx, sxx = W.sum(1), (W * X).sum(1), (W * X * X).sum(1)
            sd, sxd = (W * D).sum(1), (W * X * D).sum(1)
            det = s0 * sxx - sx * sx
            b = np.where(touched, (s0 * sxd - sx * sd) / np.where(touched, det, 1.0), 0.0)
            a0 = np.where(touched, (sd - b * sx) / np.maximum(s0, 1.0), 0.0)
            term = (a0[:, None] + b[:, None] * X).reshape(np.moveaxis(x, axis, -1).shape)
            term = np.moveaxis(term, -1, axis)
            if p.a.ndim == 2:
                along = "along each row" if axis == 1 else "down each column"
                slices = "the row's" if axis == 1 else "the column's"
            else:
                along, slices = f"along axis {axis}", "the slice's"
            out.append(_additive(
                p, 4, term, u, 2 * int(touched.sum()),
                f"analytic - reference is, {along}, an affine function a + b*{name} of {name!r} (a "
                f"term through {slices} mean or variance missing or extra, as in a normalization's "
                "backward?)", {"term": f"affine in {name} {along}"},
                reading=f"a term affine in {name} {along}"))
    return out


def _rank_one(d: np.ndarray, usable: np.ndarray) -> np.ndarray | None:
    """The best rank-one approximation ``x y^T`` of ``d`` on the usable elements.

    Alternating least squares (a power iteration) from the largest row: a term that is rank
    one is found in one or two sweeps; the fit test then decides whether the result explains
    the data, so a few sweeps suffice.
    """
    w = usable.astype(np.float64)
    d = d * w
    norms = np.sum(d * d, axis=1)
    if not np.all(np.isfinite(norms)) or norms.max(initial=0.0) == 0:
        return None
    y = d[int(np.argmax(norms))].copy()
    x = np.zeros(d.shape[0])
    for _ in range(RANK_ONE_SWEEPS):
        x = d @ y / np.maximum(w @ (y * y), 1e-300)
        y = x @ d / np.maximum((x * x) @ w, 1e-300)
    return np.outer(x, y)


# ---------------------------------------------------------------------------------------------
# Wrong only on a subset


def _subset_phrases(p: _Problem, bad: np.ndarray) -> list[tuple[str, dict[str, Any], str]]:
    """Descriptions (phrase, params, likely cause) that match the subset ``bad`` exactly."""
    decidable = p.usable & (p.significant(p.a) | p.significant(np.where(p.usable, p.r, 0.0)))
    target = bad & decidable if (bad & decidable).any() else bad
    where = decidable | target

    def same(mask: np.ndarray) -> bool:
        return bool(np.array_equal(mask & where, target))

    out: list[tuple[str, dict[str, Any], str]] = []
    # A related input's sign first (a ReLU-like mask), then slices, then the values.
    for name, value in p.inputs.items():
        value = np.asarray(value)
        if value.shape != p.a.shape or value.dtype.kind not in "fiu" or value.ndim == 0:
            continue
        for op, mask in ((">", value > 0), ("<", value < 0), (">=", value >= 0), ("<=", value <= 0),
                         ("!=", value != 0), ("==", value == 0)):
            if same(mask):
                out.append((f"where {name} {op} 0", {"input": name, "condition": f"{name} {op} 0"},
                            f"a mask on {name} (ReLU-like) applied wrongly or left out?"))
                break
    flat = np.flatnonzero(target)
    best = None
    for axis in range(p.a.ndim if p.a.ndim >= 2 else 0):
        hit = np.unique(np.nonzero(target)[axis])
        if len(hit) < p.a.shape[axis]:
            shape = [1] * p.a.ndim
            shape[axis] = -1
            mask = np.broadcast_to(np.isin(np.arange(p.a.shape[axis]), hit).reshape(shape), p.a.shape)
            # A slice is a description only when it holds more than one wrong element each.
            if same(mask) and len(flat) > len(hit) and (best is None or len(hit) < len(best[1])):
                best = (axis, hit)
    if best is not None:
        axis, hit = best
        listed = hit.tolist()
        text = str(listed[:LISTED])[:-1] + (", ...]" if len(listed) > LISTED else "]")
        if p.a.ndim == 2:
            key, noun, one = ("rows", "rows", "row") if axis == 0 else ("columns", "columns", "column")
        else:
            key, noun, one = "indices", f"indices along axis {axis}", f"index along axis {axis}"
        phrase = f"on {one} {listed[0]}" if len(listed) == 1 else f"on {noun} {text}"
        params: dict[str, Any] = {key: listed}
        if key == "indices":
            params["axis"] = axis
        out.append((phrase, params, "an indexing or accumulation bug touching only those?"))
    elif len(flat) <= 3 and 2 * len(flat) <= int(where.sum()):  # a few elements, a minority
        idx = [p.index(i) for i in flat.tolist()]
        shown = ", ".join(str(tuple(i)) if len(i) != 1 else str(i[0]) for i in idx)
        out.append((f"on element{'s' if len(idx) > 1 else ''} {shown}", {"elements": idx},
                    "an indexing bug at those elements?"))
    rz = np.where(p.usable, p.r, 0.0)
    for phrase, mask, cause in (
        ("where the reference is zero", ~p.significant(rz), "a mask, such as ReLU's, left out?"),
        ("where the reference is positive", rz > p.floor, "a clip or a one-sided mask?"),
        ("where the reference is negative", rz < -p.floor, "a clip or a one-sided mask?"),
        ("where analytic is nonzero", p.significant(p.a), "a term that should cancel there?"),
    ):
        if same(mask):
            out.append((phrase, {"condition": phrase.removeprefix("where ")}, cause))
    return out


def _on_subset(p: _Problem, bad: np.ndarray) -> tuple[str, dict[str, Any]]:
    """What the analytic gradient does on the wrong subset, when that is simple."""
    rz = np.where(p.usable, p.r, 0.0)
    if not np.any(p.significant(rz[bad])):
        return "analytic is nonzero where the reference is zero", {}
    c = _fit_factor(p, rz, p.a, bad)
    named = [f for f in _named_factors(c, p.axes, p.rel)]
    candidates = [(f.value, f.named) for f in named]
    if bad.sum() >= 3 and math.isfinite(c):
        candidates.append((c, p.fmt(c)))
    for value, name in candidates:
        if np.all(np.abs(p.a[bad] - value * rz[bad]) <= p.tol(value * rz)[bad]):
            return f"analytic = {name} x reference", {"factor": value, "named": name}
    d = (p.a - rz)[bad]
    k = float(np.median(d))
    if bad.sum() >= 3 and np.all(np.abs(d - k) <= p.tol(rz + k)[bad]):
        return f"analytic = reference + {p.fmt(k)}", {"offset": k}
    return "", {}


def _subset_candidates(p: _Problem) -> list[_Candidate]:
    bad = p.wrong
    n = int(p.usable.sum())
    n_bad = int(bad.sum())
    rz = np.where(p.usable, p.r, 0.0)
    if n_bad == 0 or not np.any(p.right & (p.significant(p.a) | p.significant(rz))):
        return []  # nothing right to contrast with: not a subset
    rest = float(np.max(np.abs(p.a - rz)[p.right]) / p.scale)
    exact = "exactly" if rest == 0 else f"to {rest:.0e} of its scale"
    phrases = _subset_phrases(p, bad)
    where = [ph for ph, _, _ in phrases]
    out = []
    expected = int((p.usable & p.significant(rz)).sum())
    if np.all(~p.significant(p.a[bad])):
        params: dict[str, Any] = {"fraction": n_bad / max(expected, 1), "count": n_bad}
        for _, extra, _ in phrases:
            for key, value in extra.items():
                params.setdefault(key, value)
        if where:
            params["where"] = where
        text = f" ({'; '.join(where)})" if where else ""
        out.append(_Candidate(3, "zero", f"analytic is zero on {n_bad} of {expected} elements where the "
                              f"reference is not{text}, exact elsewhere (a mask applied too widely, or an "
                              "accumulation missing there?)", params,
                              evidence=f"the other {int(p.right.sum())} compared elements match the "
                              f"reference {exact}", needs=SUBSET_RULES,
                              reading=f"zeros {where[0].removeprefix('where ')}" if where else "zeros on a subset"))
        return out
    inside, inside_params = _on_subset(p, bad)
    params = {"fraction": n_bad / n, "count": n_bad, **inside_params}
    if inside:
        params["on_subset"] = inside
    there = f"; there {inside}" if inside else ""
    evidence = (f"{n_bad}/{n} compared elements are wrong; the other {int(p.right.sum())} match "
                f"the reference {exact}")
    if phrases:
        phrase, _, cause = phrases[0]
        for _, extra, _ in phrases:
            for key, value in extra.items():
                params.setdefault(key, value)
        also = f" (also: {'; '.join(where[1:])})" if len(where) > 1 else ""
        out.append(_Candidate(3, "mask", f"wrong only {phrase}{also}, exact elsewhere{there} ({cause})",
                              {**params, "where": where}, evidence=evidence, needs=SUBSET_RULES,
                              reading=f"a mistake only {phrase}"))
    elif n_bad <= 0.5 * n:
        out.append(_Candidate(5, "mask", f"wrong only on a scattered {n_bad / n:.0%} of the elements, "
                              f"exact on the rest{there}", {**params, "where": [f"fraction {n_bad / n:.2g}"]},
                              evidence=evidence, needs=SUBSET_RULES, reading="a mistake on a scattered subset"))
    return out


# ---------------------------------------------------------------------------------------------
# Identifiability: what the example can tell apart
#
# Shrunk examples are degenerate (every input -1, rows that are constant, one value shared by
# the elements that match), and there a wrong formula fits a simple pattern by accident: a wrong
# local derivative at a constant input multiplies every element by one number; a term that
# vanishes on constant rows leaves those rows right. Each candidate names the rules it needs;
# when the best fitting candidate breaks one, the diagnosis is "undetermined": it says what
# fits, what the example cannot tell that from, and why.


def _single_value(x: np.ndarray, rel: float) -> bool:
    """Whether the finite values of ``x`` are one value, to ``rel`` of their magnitude."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return x.size == 0 or float(np.ptp(x)) <= rel * float(np.max(np.abs(x)))


def _inputs_single_valued(p: _Problem) -> tuple[str, str] | None:
    floats = {n: np.asarray(v) for n, v in p.inputs.items() if np.asarray(v).dtype.kind == "f" and np.size(v)}
    if not floats or not all(_single_value(v, 0.0) for v in floats.values()):
        return None
    shown = ", ".join(f"{n} = {p.fmt(float(v.flat[0]))}" for n, v in floats.items())
    return "a wrong formula evaluated at that one point", f"every input takes a single value: {shown}"


def _own_input_constant(p: _Problem) -> tuple[str, str] | None:
    x = p.aligned().get(p.name)
    if x is None or int(p.usable.sum()) < 2 or not _single_value(x[p.usable], 0.0):
        return None
    value = p.fmt(float(x[p.usable][0]))
    return ("a wrong local derivative", f"{p.name!r} is {value} at every element, so any function of it "
            "is one number there")


def _reference_constant(p: _Problem) -> tuple[str, str] | None:
    r = p.r[p.usable]
    if r.size < 2 or not _single_value(r, p.rel):
        return None
    return "a constant term", f"the reference is {p.fmt(float(r[0]))} at every compared element"


def _slice_words(ndim: int, axis: int, count: int) -> str:
    if ndim == 2:
        return ("row" if axis == 0 else "column") + ("s" if count > 1 else "")
    return f"ind{'ices' if count > 1 else 'ex'} along axis {axis}"


def _degenerate_slices(p: _Problem) -> tuple[str, str] | None:
    """The matching slices are exactly the ones where an input is constant along the slice."""
    if p.a.ndim < 2:
        return None
    for name, x in p.aligned().items():
        for axis in range(p.a.ndim):
            others = tuple(k for k in range(p.a.ndim) if k != axis)
            if math.prod(p.a.shape[k] for k in others) < 2:
                continue
            flat = np.moveaxis(x, axis, 0).reshape(p.a.shape[axis], -1)
            constant = np.ptp(flat, axis=1) == 0
            wrong = np.any(p.wrong, axis=others)
            right = ~wrong & np.any(p.usable, axis=others)
            if right.any() and wrong.any() and np.all(constant[right]) and not np.any(constant[wrong]):
                kept, hit = np.flatnonzero(right).tolist(), np.flatnonzero(wrong).tolist()
                kept_s = ", ".join(map(str, kept[:LISTED])) + (", ..." if len(kept) > LISTED else "")
                hit_s = ", ".join(map(str, hit[:LISTED])) + (", ..." if len(hit) > LISTED else "")
                one = _slice_words(p.a.ndim, axis, 1)
                return (f"a term that vanishes where {name!r} is constant along the {one} "
                        f"(such as {name} - mean({name}))",
                        f"{_slice_words(p.a.ndim, axis, len(kept))} {kept_s} of {name!r} "
                        f"{'are' if len(kept) > 1 else 'is'} constant, "
                        f"{_slice_words(p.a.ndim, axis, len(hit))} {hit_s} {'are' if len(hit) > 1 else 'is'} not")
    return None


SIMPLE_MAX = 10  # integers and halves up to this size are simple values: shrinking ends there,
# and there wrong formulas often agree with right ones (sigmoid(x) and sigmoid(-x) at 0)


def _simple(value: float) -> bool:
    return abs(value) <= SIMPLE_MAX and float(2 * value).is_integer()


def _one_value_matches(p: _Problem) -> tuple[str, str] | None:
    """The matching elements share one value of an input that no wrong element has, and that
    value is simple or repeated (a generic draw repeats no value)."""
    for name, x in p.aligned().items():
        right = x[p.right]
        if right.size == 0 or not _single_value(right, 0.0):
            continue
        value = float(right[0])
        if (right.size >= 2 or _simple(value)) and not np.any(x[p.wrong] == value):
            shown = p.fmt(value)
            return (f"a wrong formula that agrees with the right one at {name} = {shown}",
                    f"the elements that match all have {name} = {shown}, the wrong ones do not")
    return None


def _proportional_references(p: _Problem, c: _Candidate) -> tuple[str, str] | None:
    other, use = c.model, c.defined & p.usable
    if other is None or not use.any():
        return None
    x, y = p.r[use], other[use]
    denom = float(np.dot(x, x))
    k = float(np.dot(x, y)) / denom if denom > 0 else 0.0
    if k == 0 or np.any(np.abs(y - k * x) > p.rel * np.maximum(np.abs(y), np.abs(k * x)) + p.floor):
        return None
    return "a constant factor", f"the reference of {c.params['with']!r} is {p.fmt(k)} x this one"


@dataclass(frozen=True)
class _Rule:
    asks: str  # what the example needs for the pattern to be named
    checks: tuple[Callable[[_Problem, _Candidate], tuple[str, str] | None], ...]  # (look-alike, fact)


# Each rule in one place: what it asks of the example, and the checks that find it lacking
# (the README table and the tests follow it).
RULES: dict[str, _Rule] = {
    "factor": _Rule(
        "a constant factor (scale, sign, zero everywhere) needs inputs that take more than one value, "
        "the gradient's own input varying over its elements, and a reference that varies (a constant "
        "term fits a constant reference too; a factor is tried first, so this stops both)",
        (lambda p, c: _inputs_single_valued(p), lambda p, c: _own_input_constant(p),
         lambda p, c: _reference_constant(p))),
    "slices": _Rule(
        "a mistake on some rows needs the matching rows not to be exactly the ones where an input "
        "is constant along the row",
        (lambda p, c: _degenerate_slices(p),)),
    "elements": _Rule(
        "a mistake on a subset needs the matching elements not to share one input value that the "
        "wrong ones lack, when that value is simple (an integer or a half) or repeated",
        (lambda p, c: _one_value_matches(p),)),
    "swapped": _Rule(
        "swapped gradients need the two references not to be multiples of each other",
        (_proportional_references,)),
}
SUBSET_RULES = ("slices", "elements")


def _look_alike(p: _Problem, c: _Candidate) -> tuple[str, str, str] | None:
    """(rule, look-alike, fact) when the example cannot tell ``c`` from a look-alike."""
    for rule in c.needs:
        for check in RULES[rule].checks:
            found = check(p, c)
            if found is not None:
                return (rule, *found)
    return None


def _undetermined(c: _Candidate, rule: str, look_alike: str, fact: str) -> Diagnosis:
    return Diagnosis(
        "undetermined",
        f"no diagnosis: the example cannot tell {c.reading} from {look_alike} apart ({fact})",
        {"fits": c.kind, "reading": c.reading, "pattern": dict(c.params), "rule": rule,
         "asks": RULES[rule].asks, "look_alike": look_alike, "because": fact},
        f"{c.reading}: {c.evidence}",
    )


# ---------------------------------------------------------------------------------------------
# An integer gradient

ROUNDINGS = (("truncated", np.trunc), ("rounded", np.round), ("floored", np.floor), ("ceiled", np.ceil))


def _integer(p: _Problem, dtype: np.dtype, found: Diagnosis | None) -> Diagnosis | None:
    """The gradient came back as an integer array: the cause where the reference is not whole
    at a mismatch, else a note on whatever else explains it."""
    fact = f"the gradient for {p.name!r} is an integer array ({dtype})"
    rz = np.where(p.usable, p.r, 0.0)
    fractional = p.wrong & (np.abs(rz - np.round(rz)) > p.tol(np.round(rz)))
    if not fractional.any():
        if found is None:
            return Diagnosis("integer", f"{fact}; the reference is a whole number at every mismatch, so "
                             "the integer type alone does not explain them", {"dtype": str(dtype)},
                             f"no simple pattern fits the {int(p.wrong.sum())} mismatching elements")
        return replace(found, evidence=f"{found.evidence}; note: {fact}")
    params: dict[str, Any] = {"dtype": str(dtype), "fractional": int(fractional.sum())}
    n = int(p.usable.sum())
    for how, rounding in ROUNDINGS:
        if np.all(p.a[p.usable] == rounding(rz[p.usable])):
            params["rounding"] = how
            return Diagnosis("integer", f"{fact}: a cast or integer arithmetic {how} it (analytic = "
                             f"{rounding.__name__}(reference))", params,
                             f"analytic is the reference {how} to a whole number at all {n} compared elements")
    i = int(np.flatnonzero(fractional)[0])
    at = f"{p.name}{list(p.index(i))}" if p.a.ndim else p.name
    return Diagnosis("integer", f"{fact}: a cast or integer arithmetic truncated it", params,
                     f"the reference is not a whole number at {int(fractional.sum())} of the "
                     f"{int(p.wrong.sum())} mismatching elements, e.g. {at}: reference "
                     f"{p.fmt(float(rz.flat[i]))}, analytic {p.fmt(float(p.a.flat[i]))}")


# ---------------------------------------------------------------------------------------------
# The function


def _precision(inputs: Mapping[str, Any]) -> float:
    sizes = [np.asarray(v).dtype.itemsize for v in inputs.values() if np.asarray(v).dtype.kind == "f"]
    return fit_rtol(min(sizes, default=8))


def _diagnose_one(
    name: str,
    a: np.ndarray,
    r: np.ndarray,
    usable: np.ndarray,
    mismatched: np.ndarray,
    inputs: Mapping[str, np.ndarray],
    references: Mapping[str, tuple[np.ndarray, np.ndarray]],
    axes: dict[int, _Axis],
    dtype: np.dtype,
    pairs: bool = False,
) -> Diagnosis | None:
    usable = usable & np.isfinite(r) & np.isfinite(a)
    if not usable.any():
        return None
    rz = np.where(usable, r, 0.0)
    scale = float(np.max(np.abs(rz)))
    reference_zero = scale == 0
    if reference_zero:
        scale = float(np.max(np.abs(np.where(usable, a, 0.0))))
        if scale == 0:
            return None
    base = _precision(inputs)
    gap = np.abs(a - rz)
    # Mismatches are the harness's, plus any element off by more than the fit tolerance
    # (directional checks localize only some of them).
    wrong = usable & (mismatched | (gap > base * np.maximum(np.abs(a), np.abs(rz)) + 0.1 * base * scale))
    # ... but never an element that agrees with the reference to well within any tolerance
    # (flagged against another oracle: the mismatch is there, not a bug to name here).
    wrong &= gap > AGREES * np.maximum(np.abs(a), np.abs(rz)) + 1e-3 * AGREES * scale
    if not wrong.any():
        return None  # the mismatches are with an oracle other than the reference
    bug = float(np.median(gap[wrong] / np.maximum(np.maximum(np.abs(a), np.abs(rz)), 1e-3 * scale)[wrong]))
    rel = min(base, max(1e-12, 0.01 * bug))
    p = _Problem(name, a, np.where(usable, r, np.nan), usable, wrong, usable & ~wrong, scale, rel,
                 0.1 * rel * scale, inputs, references, axes, pairs)

    candidates: list[_Candidate] = []
    if not reference_zero:
        candidates += (_scale_candidates(p) + _conjugate_candidates(p) + _transpose_candidates(p)
                       + _operand_candidates(p) + _swapped_candidates(p))
    candidates += _simple_additive_candidates(p)
    accepted = [c for c in candidates if _judge(p, c)]
    if not accepted and not reference_zero:
        accepted = _subset_candidates(p)
        structured = [c for c in _structured_additive_candidates(p) if _judge(p, c)]
        accepted = [c for c in accepted if c.rank < 4] + structured + [c for c in accepted if c.rank >= 4]
    if not accepted and reference_zero:
        n = int(usable.sum())
        return Diagnosis("additive", "the reference is zero everywhere but analytic is not (a gradient "
                         f"flowing into {name!r}, which does not affect the output here?)",
                         {"term": "the whole gradient", "size": scale},
                         f"the reference is zero on all {n} compared elements")
    if not accepted:
        return _integer(p, dtype, None) if dtype.kind in "iu" else None
    # Simplest first, then fewer outliers and free parameters; among the rest, a residual
    # decides only when it is over 1000 times smaller (near the reference's noise, residuals
    # say nothing), else the candidate tried first (the simpler reading) wins.
    top = min((c.rank, c.outliers, c.dof) for c in accepted)
    tied = [c for c in accepted if (c.rank, c.outliers, c.dof) == top]
    least = max(min(c.residual for c in tied), 1e-13)
    best = next(c for c in tied if c.residual <= 1000 * least)
    others = [c.kind for c in accepted if c is not best and c.rank == best.rank
              and c.outliers == best.outliers and c.kind != best.kind and best.model is not None]
    params = dict(best.params)
    evidence = best.evidence
    if others:
        params["alternatives"] = sorted(set(others))
        evidence += f"; also consistent with: {', '.join(params['alternatives'])}"
    blocked = _look_alike(p, best)
    found = _undetermined(best, *blocked) if blocked else Diagnosis(best.kind, best.summary, params, evidence)
    return _integer(p, dtype, found) if dtype.kind in "iu" else found


def diagnose(
    analytic: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    usable: Mapping[str, np.ndarray],
    mismatched: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    *,
    pairs: Collection[str] = (),
) -> dict[str, Diagnosis]:
    """The likely bug behind each input's mismatches; no I/O, never raises on finite arrays.

    Args:
        analytic: name -> the backward's gradient (the input's shape; float, or an integer
            array as the backward returned it).
        reference: name -> the best oracle value per element (torch where it ran, else
            numeric), same shape.
        usable: name -> bool mask of the elements compared against the reference (False at
            kinks and failed evaluations); a missing name means every element.
        mismatched: name -> bool mask of the mismatching elements.
        inputs: every input's value by name, integer labels included: axis sizes name factors
            (the batch size ``m``), integer labels give one-hot terms, inputs of the same shape
            describe masks ("where x > 0") and proportional terms, and their lowest float
            precision sets the fit tolerance.
        pairs: the inputs given as real pairs (a complex input: its arrays, here and in
            ``inputs``, have a last axis of 2, the real and the imaginary part): a
            ``conjugated`` gradient is tried for them.
    Returns:
        name -> Diagnosis, only for inputs with at least one mismatch that a pattern explains
        (see the module docstring for the kinds and their order) or that the example cannot
        tell apart (kind "undetermined"); no entry means no simple pattern.
    """
    axes = _axes(inputs)
    prepared: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    dtypes: dict[str, np.dtype] = {}
    for name, wrong in mismatched.items():
        if name not in analytic or name not in reference:
            continue
        dtypes[name] = np.asarray(analytic[name]).dtype
        a = np.asarray(analytic[name], dtype=np.float64)
        r = np.asarray(reference[name], dtype=np.float64)
        use = np.asarray(usable[name], dtype=bool) if name in usable else np.ones(r.shape, dtype=bool)
        wrong = np.asarray(wrong, dtype=bool)
        if not (a.shape == r.shape == use.shape == wrong.shape):
            continue
        prepared[name] = (a, r, use, wrong)
    with np.errstate(all="ignore"):
        references = {}
        for n, ref in reference.items():
            ref = np.asarray(ref, dtype=np.float64)
            use = np.asarray(usable[n], dtype=bool) if n in usable else np.ones(ref.shape, dtype=bool)
            if use.shape == ref.shape:
                references[n] = (ref, use & np.isfinite(ref))
        found = {}
        for name, (a, r, use, wrong) in prepared.items():
            if not wrong.any():
                continue
            result = _diagnose_one(name, a, r, use, wrong, inputs, references, axes, dtypes[name],
                                   name in pairs and a.shape[-1:] == (2,))
            if result is not None:
                found[name] = result
    return found
