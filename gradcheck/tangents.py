"""Tangents and output tangents: the one place forward mode handles their structure.

* A **tangent** ``u`` moves the checked inputs together: a dict name -> array shaped like each
  checked input (``Tangent.vectors``, float64). Forward mode draws a few at random (Gaussian,
  scaled per element like the numeric oracle's steps) and, for small inputs, every basis
  direction as well (``draw_tangents``).
* What a hand-written ``jvp(tangents, **inputs)`` is given (``jvp_arguments``): the tangents in
  each input's own dtype, a mapping that names the integer inputs it holds no tangent for.
* The **output tangent** a ``jvp`` returns, ``J u``, is validated here
  (``output_tangent``): today one array shaped like the forward's output. A forward with several
  outputs extends this function and nothing else: the jvp returns its tangents in the outputs'
  structure, flattened as ``outputs`` flattens the outputs themselves (the numeric JVP already
  differences the flat output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.analytic import shape_hint
from gradcheck.evaluate import ForwardFailure, as_float_array, describe_exception
from gradcheck.inputs import PreparedInputs
from gradcheck.numeric import element_scale
from gradcheck.point import Fault

__all__ = ["BASIS_LIMIT", "RANDOM_TANGENTS", "Tangent", "call_jvp", "draw_tangents", "element_scales", "jvp_arguments",
           "moves", "output_tangent", "random_tangent"]

RANDOM_TANGENTS = 3  # random tangents per check (as directional mode's DIRECTIONS)
# Inputs with at most this many checked elements in all are also checked along every basis
# direction: each costs four evaluations, and a jvp that drops one element's term shows there
# whatever the random tangents mix it with.
BASIS_LIMIT = 16


@dataclass(frozen=True)
class Tangent:
    """One tangent: ``label`` (``"random 1"``, ``"basis x[0, 2]"``) and ``vectors``, name ->
    float64 array shaped like that input (every checked input has one; zeros where it does
    not move)."""

    label: str
    vectors: dict[str, np.ndarray]


def element_scales(work: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each checked input's element scales at the point (``numeric.element_scale``), computed
    once per check: tangents are drawn and measured against them."""
    return {n: element_scale(work[n]) for n in names}


def draw_tangents(
    scales: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype], rng: np.random.Generator,
    *, count: int = RANDOM_TANGENTS, basis_limit: int = BASIS_LIMIT,
) -> list[Tangent]:
    """``count`` random tangents over the inputs of ``scales`` (name -> element scales at the
    point), then every basis direction when those inputs hold at most ``basis_limit`` elements.
    Each coordinate is scaled by its element's scale and rounded to its input's dtype, so the
    ``jvp`` and the numeric oracle move along the same vector."""
    tangents = [random_tangent(scales, dtypes, rng, k + 1) for k in range(count)]
    if sum(w.size for w in scales.values()) <= basis_limit:
        for name, weights in scales.items():
            for i in range(weights.size):
                vectors = {n: np.zeros(w.shape) for n, w in scales.items()}
                vectors[name].reshape(-1)[i] = weights.reshape(-1)[i]
                index = np.unravel_index(i, weights.shape)
                where = f"{name}[{', '.join(map(str, index))}]" if weights.ndim else name
                tangents.append(Tangent(f"basis {where}", _rounded(vectors, dtypes)))
    return tangents


def random_tangent(
    scales: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype], rng: np.random.Generator, number: int,
) -> Tangent:
    """Random tangent ``number`` (``"random 2"``): Gaussian, each coordinate scaled by its
    element's scale and rounded to its input's dtype."""
    return Tangent(f"random {number}", _rounded({n: rng.standard_normal(w.shape) * w for n, w in scales.items()},
                                                dtypes))


def _rounded(vectors: dict[str, np.ndarray], dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """The vectors as their inputs' dtypes hold them, in float64."""
    return {n: v if dtypes[n] == np.float64 else v.astype(dtypes[n]).astype(np.float64) for n, v in vectors.items()}


def moves(scales: Mapping[str, np.ndarray], tangent: Tangent) -> tuple[float, float]:
    """``(spread, terms)`` of the relative moves ``|u_i| / scale_i`` over the coordinates the
    tangent moves: their root-mean-square, how far a unit step along it moves the inputs relative
    to their scale (1 for the drawn tangents), and their sum: a JVP adds up one term per
    coordinate moved, each carrying its rounding (as ``tolerance.directional_allowance`` sums
    ``|v_i|``)."""
    spread = terms = 0.0
    count = 0
    for n, v in tangent.vectors.items():
        relative = np.abs(v / scales[n])
        count += int(np.count_nonzero(relative))
        spread += float(np.vdot(relative, relative))
        terms += float(np.sum(relative))
    return (float(np.sqrt(spread / count)) if count else 0.0), terms


class _Tangents(dict[str, Any]):
    """The tangents a ``jvp`` is given: asking for an input it holds none of names why."""

    def __init__(self, vectors: Mapping[str, Any], prepared: PreparedInputs) -> None:
        super().__init__(vectors)
        self._prepared = prepared

    def __missing__(self, key: Any) -> Any:
        dtypes = self._prepared.dtypes
        if key in dtypes and key not in self._prepared.floating:
            why = f"{key!r} is an integer input ({dtypes[key]}), held constant: it has no tangent"
        elif key in dtypes:
            why = f"{key!r} is not checked (wrt), so it is held constant: it has no tangent"
        else:
            why = f"{key!r} is not an input"
        raise KeyError(f"{why}; tangents hold {list(self)}")


def jvp_arguments(
    prepared: PreparedInputs, tangent: Tangent, convert: Callable[[np.ndarray], Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tangents, inputs)`` for one call of a ``jvp``: copies in each input's own dtype (numpy,
    or through ``convert``: torch tensors for a torch forward, float64 as the forward gets them)."""
    if convert is None:
        inputs = {n: np.array(a, copy=True) for n, a in prepared.values.items()}
        vectors = {n: v.astype(prepared.dtypes[n]) for n, v in tangent.vectors.items()}
    else:
        inputs = {n: convert(np.array(a, copy=True)) for n, a in prepared.widened.items()}
        vectors = {n: convert(np.array(v, copy=True)) for n, v in tangent.vectors.items()}
    return _Tangents(vectors, prepared), inputs


def call_jvp(
    jvp: Callable[..., Any], prepared: PreparedInputs, tangent: Tangent, output: np.ndarray,
    convert: Callable[[np.ndarray], Any] | None,
) -> np.ndarray:
    """Call a hand-written ``jvp`` along ``tangent``; its output tangent, validated.

    Raises:
        Fault: the jvp raised, mutated its arguments, or returned something that is not the
            output's tangent (``output_tangent``).
    """
    tangents, inputs = jvp_arguments(prepared, tangent, convert)
    before = {n: np.array(np.asarray(v), copy=True) for n, v in tangents.items()}
    try:
        returned = jvp(tangents, **inputs)
    except Exception as exc:  # a bug in the jvp under test
        raise Fault(f"jvp raised {describe_exception(exc)} along the {tangent.label} tangent") from None
    for n, v in tangents.items():
        if not np.array_equal(np.asarray(v), before[n]):
            raise Fault(f"jvp mutates its tangent for {n!r} in place")
    for n, a in inputs.items():
        if not np.array_equal(np.asarray(a), prepared.values[n] if convert is None else prepared.widened[n]):
            raise Fault(f"jvp mutates its input {n!r} in place")
    return output_tangent(returned, output, who="jvp")


def output_tangent(value: Any, output: np.ndarray, *, who: str) -> np.ndarray:
    """What ``who`` (``"jvp"``) returned as the output's tangent, as a float64 array shaped like
    the forward's ``output``.

    Raises:
        Fault: a structure other than one array (the forward returns one), a value that is not a
            real floating array or number, a shape other than the output's, non-finite values.
    """
    if isinstance(value, tuple | list | dict) and any(
        np.ndim(v) for v in (value.values() if isinstance(value, dict) else value)
    ):
        raise Fault(f"{who} returned a {type(value).__name__} of {len(value)} arrays, but the forward returns one "
                    f"array of shape {output.shape}: return its tangent alone")
    if value is None:
        raise Fault(f"{who} returned None, not the output's tangent (shape {output.shape})")
    try:
        array = as_float_array(value)
    except ForwardFailure as exc:
        raise Fault(f"{who} {exc}") from None
    if array.dtype.kind != "f":
        raise Fault(f"{who} returned {array.dtype} values; the output's tangent is floating ({output.dtype})")
    if array.shape != output.shape:
        raise Fault(f"{who} returned shape {array.shape}, but the forward's output has shape "
                    f"{output.shape}{shape_hint(array.shape, output.shape)}")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise Fault(f"{who} returned {bad} non-finite value(s)")
    return array
