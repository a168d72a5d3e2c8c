"""What a check found, as plain data: verdicts, mismatches, kinks, faults and notes.

``CheckResult`` is what ``check_gradients`` returns. ``str(result)`` is a report a person reads
in a terminal (rendered by ``gradcheck.report``); ``result.to_dict()`` is JSON-ready.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gradcheck.render import result_lines

__all__ = [
    "CheckResult",
    "Consistency",
    "Detection",
    "Diagnosis",
    "Disagreement",
    "ForwardSummary",
    "InputSummary",
    "Kink",
    "Mismatch",
    "OutputSummary",
    "TaylorEvidence",
    "Tolerance",
]


def _jsonable(value: Any) -> Any:
    """Floats that JSON can carry (NaN and inf become None), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Tolerance:
    """How far an analytic gradient element may sit from an oracle's value.

    An element passes when ``|analytic - reference| <= rtol * max(|analytic|, |reference|)
    + atol + error``, where ``error`` is the numeric oracle's own error estimate (0 for torch)
    and ``atol`` defaults to ``max(floor * (largest gradient magnitude of that input),
    rounding)``.

    Attributes:
        rtol: relative tolerance.
        atol: absolute tolerance, or None for the scaled floor.
        floor: the floor relative to the input's largest gradient, used when atol is None.
        rounding: an absolute floor for rounding in gradients that should be exactly zero:
            a few units of roundoff of the largest reference gradient over all checked inputs
            (an input whose true gradient is 0 has no scale of its own); used when atol is None.
        spread: how far repeated runs of the backward at the point differed (a nondeterministic
            backward within rounding, see ``gradcheck.repeats``), added to the absolute allowance.
    """

    rtol: float
    atol: float | None
    floor: float
    rounding: float = 0.0
    spread: float = 0.0


@dataclass(frozen=True)
class Diagnosis:
    """The most likely kind of bug behind an input's mismatches.

    Attributes:
        kind: "scale", "sign", "transpose", "swapped", "zero", "mask", "additive", "integer",
            "conjugated" (a complex gradient's imaginary parts negated), "layout" (the gradient
            changes with the strides of an input or of ``dout``), "upstream" (the backward
            ignores the upstream gradient's structure), "precision" (a low-dtype run far from the
            backward's own float64 run), or "undetermined" (a pattern fits, but
            the example cannot tell it from a look-alike).
        summary: one line a person reads, e.g. "analytic is numeric x 2 (off by a factor 2)".
        params: the pattern's parameters, e.g. {"factor": 2.0, "named": "2"}.
        evidence: how well the pattern fits, e.g. "fits 48/48 elements, residual 3e-12".
    """

    kind: str
    summary: str
    params: Mapping[str, Any] = field(default_factory=dict)
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class Mismatch:
    """One gradient element that disagrees with an oracle.

    ``references`` holds each oracle's value at the element, by oracle name (``"numeric"``,
    ``"torch"``, ``"jax"``; an oracle that did not run, or the numeric one at a kink, is
    absent) and ``errors`` the error estimates that come with them (the numeric oracle's).
    ``against`` lists the oracles the analytic value disagrees with. ``difference`` and
    ``tolerance`` are in the gradient's units and comparable: ``difference`` is how far the
    analytic value is from the value it was held to (an exact oracle's where one disagrees, else
    the numeric estimate, or the nearest end of the allowed range at a kink) and ``tolerance`` is
    how far it may be. ``relative_error`` is the largest relative error against any oracle.
    ``slopes`` is ``(left, right)``, the one-sided slopes at a kink, where the element is held to
    the range they allow instead. ``tied`` names the elements of a tie moved together (see
    ``gradcheck.ties``): then ``analytic`` is the sum of their gradients and ``slopes`` the
    one-sided slopes along the move; ``index`` is the first. For a complex input ``index`` is the
    complex element's and ``part`` says which part of it ("real" or "imag"; "" for a real input).

    In forward mode (``mode="forward"``) the element is one of the output's tangent: ``input``
    names the inputs the tangent moves, ``tangent`` describes it (``"random 2"``,
    ``"basis x[1]"``), ``index`` is the output element and ``analytic`` the ``jvp``'s value there.
    """

    input: str
    index: tuple[int, ...]
    analytic: float
    references: Mapping[str, float]
    errors: Mapping[str, float]
    relative_error: float
    tolerance: float
    against: tuple[str, ...]
    difference: float = float("nan")
    slopes: tuple[float, float] | None = None
    tied: tuple[str, ...] = ()
    part: str = ""
    outputs: tuple[str, ...] = ()
    mode: str = "reverse"
    tangent: str = ""


@dataclass(frozen=True)
class Kink:
    """An element where the function is not differentiable along that coordinate.

    ``left``/``right`` are the one-sided derivatives; ``exact`` the exact oracles' values there,
    by name. The analytic value is not compared with a single oracle value there; it must lie in
    the range the one-sided slopes allow (else it is a ``Mismatch`` too, with ``slopes`` set).
    ``part`` is as in ``Mismatch``.
    """

    input: str
    index: tuple[int, ...]
    analytic: float
    left: float
    right: float
    exact: Mapping[str, float] = field(default_factory=dict)
    part: str = ""


@dataclass(frozen=True)
class Disagreement:
    """An element where two oracles disagree with each other (away from kinks): ``values`` by
    oracle name, with the ``errors`` that come with them (the numeric oracle's); ``part`` is as
    in ``Mismatch``."""

    input: str
    index: tuple[int, ...]
    values: Mapping[str, float]
    errors: Mapping[str, float] = field(default_factory=dict)
    part: str = ""


@dataclass(frozen=True)
class Detection:
    """What directional mode could have missed in one input: any single element wrong by
    ``relative_error`` or more (relative to the input's largest gradient) would have been caught
    with probability at least ``probability``, along the directions the check used (see
    ``tolerance.detectable_error``)."""

    relative_error: float
    probability: float


@dataclass(frozen=True)
class InputSummary:
    """The verdict for one checked input.

    Attributes:
        name, shape, dtype: the input (a complex one's own dtype and shape; its counts are of
            real and imaginary parts).
        checked: elements checked (per-element mode) or directions (directional mode).
        compared: of those, the elements (or directions) compared with an oracle's value; kinks,
            elements where the forward failed and empty inputs are not among them.
        mismatches, kinks: counts (kinks are held to their one-sided slopes in full mode).
        worst: the largest relative error against each oracle that ran, by name (None where
            nothing was compared against it).
        worst_at: the element of each worst error, by oracle name: ``{"torch": (4, 2)}``; an
            oracle is absent when its worst is not at an element (the directional mode's numeric
            worst is along a direction) or there is none.
        gradient_norm: Euclidean norm of the analytic gradient.
        tolerance: the tolerance used for this input.
        diagnosis: the likely bug, when there are mismatches and a pattern fits.
        outputs: for a forward with several outputs, those the gradient is wrong through (each
            checked on its own, ``dout`` zero on the others); empty otherwise.
        budget: for a gradient computed below float64, how its allowance against the float64
            truth was set (``gradcheck.precision``); empty for a float64 one.
        smallest_caught: the smallest relative error in one element that this check would
            have flagged (its most sensitive element; None where nothing was compared element by
            element). A low-precision budget measured at the point alone is widened by its
            neighbours' before a gradient just past it is flagged (``gradcheck.precision``).
        detectable: directional mode: the smallest error in a single element its directions
            would have caught (``Detection``); None in full mode, which compares every element,
            or when no direction could be used.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    checked: int
    mismatches: int
    kinks: int
    worst: Mapping[str, float | None]
    gradient_norm: float
    tolerance: Tolerance
    diagnosis: Diagnosis | None = None
    compared: int = 0
    worst_at: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    budget: str = ""
    smallest_caught: float | None = None
    detectable: Detection | None = None

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclass(frozen=True)
class OutputSummary:
    """One output of a forward with several (a tuple, list or dict of arrays).

    Attributes:
        name: its path in the structure: ``"h"`` (a dict key or named-tuple field), ``"[1]"``
            (a position), ``"state.c"`` (nested).
        shape, dtype: the output's at the point.
        differentiable: False for an integer or boolean output (its ``dout`` is ``None``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    differentiable: bool = True


@dataclass(frozen=True)
class ForwardSummary:
    """The verdict of forward mode (the ``jvp`` checked along tangents).

    Attributes:
        source: what gave the checked JVPs: ``"jvp"`` (hand-written) or ``"torch"`` (torch's
            forward-mode AD, ``jvp=True``).
        tangents: the tangents checked, described (``"random 1"``, ``"basis x[0]"``).
        checked: output elements checked over all tangents; ``compared``, of those, the ones
            compared with an oracle's value (kinks and failed evaluations aside).
        mismatches, kinks: counts.
        worst: the largest relative error against each oracle, by name; ``worst_at`` the tangent
            and output element of each, e.g. ``{"numeric": "random 2 [3]"}``.
        tolerance: the tolerance used.
        evaluations: forward evaluations spent on the numeric JVPs (four per tangent at most).
    """

    source: str
    tangents: tuple[str, ...]
    checked: int
    compared: int
    mismatches: int
    kinks: int
    worst: Mapping[str, float | None]
    tolerance: Tolerance
    evaluations: int = 0
    worst_at: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclass(frozen=True)
class Consistency:
    """``<v, J u>`` computed by the jvp (``v . jvp(u)``) and by the backward (``backward(v) . u``)
    along one tangent ``u``, with ``v`` the check's ``dout``.

    Attributes:
        tangent: the tangent, described.
        by_jvp, by_backward: the two values; ``references`` the oracles' (numeric: the directional
            derivative of ``L`` along ``u``; an exact oracle's gradient dotted with ``u``) and
            ``errors`` their error estimates.
        tolerance: how far apart the two may be.
        ok: they agree.
        wrong: which side the oracles say is wrong: ``"jvp"``, ``"backward"``, ``"both"``, or
            ``"undetermined"`` (no oracle value, or it agrees with neither side clearly).
    """

    tangent: str
    by_jvp: float
    by_backward: float
    references: Mapping[str, float]
    errors: Mapping[str, float]
    tolerance: float
    ok: bool
    wrong: str = ""


@dataclass(frozen=True)
class TaylorEvidence:
    """The Taylor test of one input along one direction ``v``: the remainder
    ``r(h) = |L(x + h v) - L(x) - h <g, v>|`` at halving steps ``h`` shrinks as ``h^2`` when the
    gradient ``g`` is right and as ``h`` when it is wrong.

    Attributes:
        input: the input moved; ``direction``: ``"random"`` or the mismatch's element
            (``"x[1, 2]"``), or in forward mode the tangent (``"jvp random 1"``).
        order: the observed order (slope of log r against log h over the smallest steps above
            the noise floor); None when too few remainders rose above it.
        verdict: ``"right"`` (order near 2), ``"wrong"`` (near 1), ``"noise"`` (the remainder
            stays at the noise floor, at every step but one at most: no first-order error shows)
            or ``"unclear"``.
        steps, remainders: the measurements; ``noise`` the floor below which a remainder is
            rounding.
        cleared: this evidence cleared a mismatch that only the numeric oracle saw.
    """

    input: str
    direction: str
    order: float | None
    verdict: str
    steps: tuple[float, ...] = ()
    remainders: tuple[float, ...] = ()
    noise: float = 0.0
    cleared: bool = False


@dataclass(frozen=True)
class CheckResult:
    """Everything one ``check_gradients`` call found.

    Attributes:
        ok: True when no mismatch and no fault was found.
        inputs: one summary per checked input (empty if a fault stopped the check early).
        mismatches: every mismatching element, worst first within each input.
        kinks: elements where the function is not differentiable (not compared).
        disagreements: elements where numeric and torch disagree with each other.
        faults: bugs in the code under test that prevented or spoiled the check (the forward
            or backward raising, a missing key, a wrong shape, non-finite values, mutation of
            inputs, nondeterminism; with ``reference=``, an output or a low-dtype gradient beyond
            the reference's budget; with ``paths=``, an execution path disagreeing with eager).
        oracles: the oracles that ran, e.g. ("numeric", "torch").
        notes: remarks such as why the torch oracle did not run.
        mode: "full" (every element) or "directional".
        evaluations: forward evaluations spent by the numeric oracle.
        seed: the seed of the random upstream gradient and directions.
        output_shape: shape of the forward's output (() for a scalar loss); for several outputs,
            ``(n,)``: their ``n`` differentiable elements, raveled together.
        oracle_errors: oracle name -> the original error that kept it from running (the notes
            say why in one line; this is the full message, with file and line).
        outputs: a forward with several outputs: each one's name, shape and dtype, in order;
            empty for a forward that returns one array.
        modes: the modes checked: ``"reverse"`` (the backward's vector-Jacobian product),
            ``"forward"`` (the ``jvp``'s Jacobian-vector products), ``"second order"``
            (``order=2``: see ``second_order``).
        forward: forward mode's verdict, when it was checked.
        consistency: the jvp against the backward along each tangent (both modes checked).
        taylor: the Taylor test's evidence next to failures and marginal passes.
        second_order: with ``order=2``, the second-order check (``gradcheck.second_order``): a
            result of its own whose inputs are the first-order gradient's inputs (and ``dout``
            for a torch callable); ``ok`` above is False when it fails.
    """

    ok: bool
    inputs: tuple[InputSummary, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    kinks: tuple[Kink, ...] = ()
    disagreements: tuple[Disagreement, ...] = ()
    faults: tuple[str, ...] = ()
    oracles: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    mode: str = "full"
    evaluations: int = 0
    seed: int = 0
    output_shape: tuple[int, ...] = ()
    oracle_errors: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[OutputSummary, ...] = ()
    modes: tuple[str, ...] = ("reverse",)
    forward: ForwardSummary | None = None
    consistency: tuple[Consistency, ...] = ()
    taylor: tuple[TaylorEvidence, ...] = ()
    second_order: CheckResult | None = None

    def __bool__(self) -> bool:
        return self.ok

    @property
    def verdict(self) -> str:
        """``"fail"``, ``"pass"``, or ``"inconclusive"``: nothing wrong was found, but nothing
        informative was compared either (every checked input is empty, or the output is, so
        the loss is identically 0). ``ok`` stays True then, as an empty shape is legitimate
        (Hypothesis draws them) and no gradient in it can be wrong; the verdict and the report
        say that nothing was checked."""
        if not self.ok:
            return "fail"
        forward = self.forward is not None and bool(self.forward.compared or self.forward.kinks)
        if math.prod(self.output_shape) == 0 or not (forward or any(s.compared or s.kinks for s in self.inputs)):
            return "inconclusive"
        return "pass"

    def __str__(self) -> str:

        return "\n".join(result_lines(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the same fields (NaN/inf become null)."""
        data = asdict(self)
        data["verdict"] = self.verdict
        if self.second_order is not None:
            data["second_order"] = self.second_order.to_dict()
        return _jsonable(data)
