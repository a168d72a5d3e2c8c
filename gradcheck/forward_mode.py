"""Forward mode: Jacobian-vector products checked along tangents, and against the backward.

For a tangent ``u`` (``tangents.draw_tangents``: a few random ones, and every basis direction of
small inputs) the checked JVP ``J u`` (a hand-written ``jvp``, or torch's forward-mode AD) is held,
element by element of the output, to

* the numeric JVP, which central differences compute directly: ``(F(x + h u) - F(x - h u)) / 2h``
  per output element, two evaluations; where that does not match at once (or its second
  difference is large), two more at ``2h`` give the Richardson estimate, its error estimate and
  the kink test (``numeric.richardson``): at most four evaluations per tangent;
* the exact oracles' JVPs (torch's reverse mode twice, ``jax.jvp``) of array-API forwards, at no
  evaluation (for a scalar output, the exact oracle's gradient dotted with ``u``);

with the rules of ``compare`` and ``tolerance``, exactly as a gradient is. Where the backward was
checked too, ``<v, J u>`` computed by the jvp (``v . J u``) and by the backward
(``(J^T v) . u``), with ``v`` the check's ``dout``, must agree; when they do not, the oracles'
value of it names the side that is wrong (``Consistency``).

A tangent's mismatches name the inputs it moves and the tangent (``Mismatch.mode == "forward"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck.compare import InputComparison, compare_input
from gradcheck.directional import STEP_FACTOR
from gradcheck.estimates import NumericEstimate, Unavailable
from gradcheck.evaluate import Evaluator
from gradcheck.inputs import PreparedInputs
from gradcheck.numeric import richardson, slope_hull
from gradcheck.oracles import Oracle, run_exact_jvps
from gradcheck.point import Fault, Noise, Point
from gradcheck.result import Consistency, Disagreement, ForwardSummary, Kink, Mismatch, Tolerance
from gradcheck.tangents import (
    RANDOM_TANGENTS,
    Tangent,
    call_jvp,
    draw_tangents,
    element_scales,
    moves,
    output_tangent,
    random_tangent,
)
from gradcheck.tolerance import (
    absolute_floor,
    allowed,
    consistency_allowance,
    default_tolerance,
    jump_limit,
    jvp_rounding,
    noise_error,
)
from gradcheck.worst import worse

__all__ = ["REDRAWS", "ForwardOutcome", "JvpSource", "check_forward", "hand_written", "torch_forward_mode"]

REDRAWS = 3  # random tangents drawn at most, per one asked for (directional mode draws as many)


@dataclass(frozen=True)
class JvpSource:
    """What gives the checked JVPs: ``name`` (``"jvp"``, ``"torch"``), ``call(tangent)`` returning
    the output's tangent (float64, the output's shape; raises ``Fault``), and ``itemsize``, the
    precision it computes in (bytes)."""

    name: str
    call: Callable[[Tangent], np.ndarray]
    itemsize: int


def hand_written(jvp: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...], output: np.ndarray,
                 convert: Callable[[np.ndarray], Any] | None) -> JvpSource:
    """A hand-written ``jvp(tangents, **inputs)``: given the inputs as the forward gets them."""
    itemsize = min([output.dtype.itemsize, *(prepared.dtypes[n].itemsize for n in names)])

    def call(tangent: Tangent) -> np.ndarray:
        return call_jvp(jvp, prepared, tangent, output, convert)

    return JvpSource("jvp", call, 8 if convert is not None else itemsize)


def torch_forward_mode(forward: Callable[..., Any], prepared: PreparedInputs, output: np.ndarray) -> JvpSource:
    """torch's forward-mode AD of a torch forward (``jvp=True``), in float64."""

    def call(tangent: Tangent) -> np.ndarray:
        import torch

        from gradcheck.torch_oracle import forward_mode_jvp

        found = forward_mode_jvp(torch, forward, prepared.widened, tangent.vectors)
        if isinstance(found, Unavailable):
            raise Fault(f"torch forward-mode AD failed along the {tangent.label} tangent: "
                        f"{found.error or found.reason}")
        return output_tangent(found.gradients["jvp"], output, who="torch forward-mode AD")

    return JvpSource("torch", call, 8)


@dataclass
class ForwardOutcome:
    """What forward mode found: its summary, the findings, and (with the backward) the
    consistency of the two modes along each tangent."""

    summary: ForwardSummary
    mismatches: list[Mismatch] = field(default_factory=list)
    kinks: list[Kink] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    consistency: list[Consistency] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    oracles: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Measured:
    """A tangent's numeric JVP: the output at ``x +- h u`` (and ``+- 2h u`` where refined)."""

    h: float
    plus1: np.ndarray
    minus1: np.ndarray
    plus2: np.ndarray | None = None
    minus2: np.ndarray | None = None


def _flat(out: np.ndarray | None, size: int) -> np.ndarray:
    return np.full(size, np.nan) if out is None else np.asarray(out, dtype=np.float64).reshape(-1)


class _Forward:
    """One check's forward mode (see the module docstring)."""

    def __init__(self, point: Point, ev: Evaluator, noise: Noise, prepared: PreparedInputs, names: tuple[str, ...],
                 source: JvpSource, rtol: float | None, atol: float | None) -> None:
        self.point, self.ev, self.noise, self.prepared, self.names = point, ev, noise, prepared, names
        self.source, self.rtol, self.atol = source, rtol, atol
        self.f0 = np.asarray(point.output, dtype=np.float64).reshape(-1)
        self.size = self.f0.size
        self.rms = float(np.sqrt(np.mean(self.f0 * self.f0))) if self.size else 0.0
        self.scales = element_scales(ev.work, names)

    def sigma(self, noise: float) -> np.ndarray:
        """Each output element's noise: the contracted forward's relative noise times the
        element's size (at least the output's root-mean-square)."""
        relative = max(noise / self.point.scale, self.point.eps) if self.point.scale > 0 else self.point.eps
        return relative * np.maximum(np.abs(self.f0), self.rms)

    def measure(self, tangent: Tangent, steps: list[float]) -> list[np.ndarray]:
        """The output, flat, at ``x + t u`` for each step ``t`` (NaN where the forward failed)."""
        outs = self.ev.direction_outputs(tangent.vectors, np.array(steps))
        return [_flat(o, self.size) for o in outs]

    def estimate(self, m: _Measured, sigma: np.ndarray, *, held: bool) -> NumericEstimate:
        h: Any = np.full(self.size, m.h)
        noise: Any = sigma
        if m.plus2 is None or m.minus2 is None:
            with np.errstate(invalid="ignore"):
                gradient = (m.plus1 - m.minus1) / (2 * h)
            nan = np.full(self.size, np.nan)
            return NumericEstimate(gradient, noise_error(noise, h), np.zeros(self.size, dtype=bool), nan, nan, nan, nan)
        values: Any = (self.f0, m.plus1, m.minus1, m.plus2, m.minus2, h, sigma)
        gradient, error, kink, left, right = richardson(*values)
        low, high = slope_hull(*values)
        nan = np.full(self.size, np.nan)
        bounded = kink & held
        return NumericEstimate(gradient, error, kink, np.where(kink, left, nan), np.where(kink, right, nan),
                               np.where(bounded, low, nan), np.where(bounded, high, nan))

    def tolerance(self, analytic: np.ndarray, references: Mapping[str, np.ndarray]) -> Tolerance:
        scale = max([float(np.max(np.abs(analytic), initial=0.0)),
                     *(float(np.max(np.abs(r), initial=0.0)) for r in references.values())])
        return default_tolerance(self.source.itemsize, rtol=self.rtol, atol=self.atol, global_scale=scale)

    def compare(self, tangent: Tangent, analytic: np.ndarray, exact: dict[str, np.ndarray], m: _Measured,
                noise: float, moved: float) -> tuple[InputComparison, NumericEstimate, Tolerance]:
        sigma = self.sigma(noise)
        # Along a basis tangent a kink is one coordinate's, held to its slopes as a gradient element
        # is; a random tangent moves many coupled kinks at once (a dead ReLU unit's, one per
        # example, each crossed on its own side), between whose slopes a correct JVP need not lie.
        estimate = self.estimate(m, sigma, held=tangent.label.startswith("basis"))
        tol = self.tolerance(analytic, exact)
        comparison = compare_input(tangent.label, self.point.output.shape, analytic, estimate, exact, tol,
                                   exact_error=jvp_rounding(sigma, moved, self.point.eps))
        return comparison, estimate, tol

    def quick_pass(self, analytic: np.ndarray, m: _Measured, sigma: Any, tol: Tolerance) -> bool:
        """The central differences match at once, with the output's rounding as noise, and their
        second differences are small (a kink within ``+-h`` shows there)."""
        with np.errstate(invalid="ignore"):
            central = (m.plus1 - m.minus1) / (2 * m.h)
            jump = (m.plus1 - 2 * self.f0 + m.minus1) / m.h
        scale = float(max(np.max(np.abs(analytic), initial=0.0), np.max(np.abs(central), initial=0.0)))
        fine = (np.isfinite(central) & (np.abs(analytic - central)
                                        <= allowed(analytic, central, noise_error(sigma, m.h), tol, scale))
                & (np.abs(jump) <= jump_limit(scale, sigma, m.h)))
        return bool(np.all(fine))

    def tangent(self, tangent: Tangent, analytic: np.ndarray, exact: dict[str, np.ndarray]
                ) -> tuple[InputComparison, NumericEstimate, Tolerance]:
        """Check one tangent: two evaluations where they suffice, four where Richardson pays."""
        step_spread, moved = moves(self.scales, tangent)
        h = STEP_FACTOR * self.point.eps ** (1.0 / 3.0) / step_spread if step_spread > 0 else 1.0
        plus1, minus1 = self.measure(tangent, [h, -h])
        m = _Measured(h, plus1, minus1)
        noise = self.noise.known()
        if not self.quick_pass(analytic, m, self.sigma(noise), self.tolerance(analytic, exact)):
            plus2, minus2 = self.measure(tangent, [2 * h, -2 * h])
            m = replace(m, plus2=plus2, minus2=minus2)
        comparison, estimate, tol = self.compare(tangent, analytic, exact, m, noise, moved)
        if comparison.mismatch_mask.any() and m.plus2 is not None:
            # Measured noise, only where the output's rounding leaves a mismatch.
            comparison, estimate, tol = self.compare(tangent, analytic, exact, m, self.noise.measured(), moved)
        return comparison, estimate, tol


def check_forward(
    point: Point, ev: Evaluator, noise: Noise, prepared: PreparedInputs, names: tuple[str, ...], source: JvpSource,
    *, forward: Callable[..., Any], oracles: tuple[Oracle, ...], rng: np.random.Generator,
    rtol: float | None = None, atol: float | None = None,
    backward: Mapping[str, np.ndarray] | None = None,
    backward_exact: Mapping[str, Mapping[str, np.ndarray]] | None = None, floors: Mapping[str, float] | None = None,
) -> ForwardOutcome:
    """Forward mode of one check (see the module docstring).

    Args:
        point: the forward at the caller's point; ``ev`` evaluates it (its own count);
            ``noise`` its noise, measured only if needed.
        prepared, names: the inputs and the names of those checked.
        source: what gives the checked JVPs.
        forward: the forward (for the exact oracles); ``oracles`` those to run.
        rng: draws the random tangents.
        rtol, atol: as for the gradients.
        backward: the analytic gradients (of ``sum(dout * forward)``), when reverse mode was
            checked too: then the two modes are held to each other; ``backward_exact`` the exact
            oracles' gradients, by oracle name, to tell which side is wrong; ``floors`` the
            absolute floor each input's gradient elements were allowed.
    Raises:
        Fault: the jvp raised or returned something unusable.
    """
    backward_exact = backward_exact or {}
    run = _Forward(point, ev, noise, prepared, names, source, rtol, atol)
    pending = draw_tangents(run.scales, prepared.dtypes, rng)
    tangents: list[Tangent] = []
    drawn = RANDOM_TANGENTS
    crossed = 0
    outcome = ForwardOutcome(ForwardSummary(source.name, tuple(t.label for t in tangents), 0, 0, 0, 0, {},
                                            default_tolerance(source.itemsize, rtol=rtol, atol=atol)))
    worst: dict[str, float | None] = {}
    worst_at: dict[str, str] = {}
    checked = compared = 0
    ran: list[str] = ["numeric"]
    missing: dict[str, str] = {}
    tol = outcome.summary.tolerance
    while pending:
        tangent = pending.pop(0)
        tangents.append(tangent)
        analytic = source.call(tangent).reshape(-1).astype(np.float64)
        # A one-element output's exact JVP is the exact gradient (of dout times it) dotted with
        # the tangent, over dout: no call.
        weight = float(np.ravel(point.dout)[0]) if run.size == 1 else 0.0
        dotted = {o: np.array([sum(float(np.sum(grads[n] * tangent.vectors[n])) for n in names) / weight])
                  for o, grads in backward_exact.items()
                  if weight != 0.0 and o in {oracle.name for oracle in oracles} and all(n in grads for n in names)}
        exact, unavailable = run_exact_jvps(tuple(o for o in oracles if o.name not in dotted), forward,
                                            prepared.widened, tangent.vectors, point.output, point.scale)
        exact = {o.name: dotted[o.name] if o.name in dotted else exact[o.name]
                 for o in oracles if o.name in dotted or o.name in exact}
        for name, why in unavailable.items():
            missing.setdefault(why.reason, name)
        # An oracle that cannot run on the forward cannot along the next tangent either.
        oracles = tuple(o for o in oracles if o.name not in unavailable)
        ran += [o for o in exact if o not in ran]
        comparison, estimate, tol = run.tangent(tangent, analytic, exact)
        if estimate.kink.any() and tangent.label.startswith("random"):
            # As in directional mode: a random tangent that crosses a kink is drawn again.
            crossed += 1
            if drawn < REDRAWS * RANDOM_TANGENTS:
                drawn += 1
                pending.insert(0, random_tangent(run.scales, prepared.dtypes, rng, drawn))
        moved = ", ".join(n for n in names if np.any(tangent.vectors[n]))
        outcome.mismatches += [replace(m, input=moved, tangent=tangent.label, mode="forward")
                               for m in comparison.mismatches]
        outcome.kinks += list(comparison.kinks)
        outcome.disagreements += list(comparison.disagreements)
        checked += run.size
        compared += comparison.compared
        for oracle, value in comparison.worst.items():
            if value is not None and worse(value, worst.get(oracle)):
                worst[oracle] = value
                at = comparison.worst_at.get(oracle)
                worst_at[oracle] = tangent.label + ("" if not at else f" [{', '.join(map(str, at))}]")
        if backward is not None and all(n in backward for n in names) and not estimate.kink.any():
            # Across a kink the jvp and the backward may each follow their own convention.
            outcome.consistency.append(_consistency(tangent, analytic, estimate, exact, point, names, backward,
                                                    backward_exact, tol, floors or {}))
    outcome.notes += [f"{who} oracle's JVP not used: {reason}" for reason, who in missing.items()]
    if crossed:
        outcome.notes.append(f"forward mode: {crossed} random tangent(s) crossed a kink and were drawn again (up "
                             f"to {REDRAWS * RANDOM_TANGENTS} in all); their output elements at the kink were not "
                             "compared")
    outcome.oracles = tuple(ran)
    outcome.summary = ForwardSummary(
        source=source.name, tangents=tuple(t.label for t in tangents), checked=checked, compared=compared,
        mismatches=len(outcome.mismatches), kinks=len(outcome.kinks), worst=worst, tolerance=tol,
        evaluations=ev.evaluations, worst_at=worst_at,
    )
    return outcome


def _consistency(
    tangent: Tangent, jvp: np.ndarray, estimate: NumericEstimate, exact_jvps: Mapping[str, np.ndarray], point: Point,
    names: tuple[str, ...], backward: Mapping[str, np.ndarray], backward_exact: Mapping[str, Mapping[str, np.ndarray]],
    tol: Tolerance, floors: Mapping[str, float],
) -> Consistency:
    """``<v, J u>`` by the jvp and by the backward along ``tangent``; which side is wrong, by the
    oracles, when they disagree."""
    v = np.broadcast_to(np.asarray(point.dout, dtype=np.float64), point.output.shape).reshape(-1)
    u = {n: tangent.vectors[n].reshape(-1) for n in names}
    by_jvp = float(np.dot(v, jvp))
    by_backward = float(sum(np.dot(np.asarray(backward[n], dtype=np.float64).reshape(-1), u[n]) for n in names))
    terms = float(np.sum(np.abs(v * jvp)) + sum(np.sum(np.abs(np.asarray(backward[n]).reshape(-1) * u[n]))
                                                for n in names))
    references: dict[str, float] = {}
    errors: dict[str, float] = {}
    usable = np.isfinite(estimate.gradient) & ~estimate.kink
    if usable.all():
        references["numeric"] = float(np.dot(v, estimate.gradient))
        errors["numeric"] = float(np.dot(np.abs(v), estimate.error))
    for oracle, grads in backward_exact.items():
        if all(n in grads for n in names):
            references[oracle] = float(sum(np.dot(np.asarray(grads[n]).reshape(-1), u[n]) for n in names))
    for oracle, value in exact_jvps.items():
        references.setdefault(oracle, float(np.dot(v, value)))
    eps = point.eps
    scale = float(max(np.max(np.abs(jvp), initial=0.0), np.max(np.abs(estimate.gradient[usable]), initial=0.0)))
    weighted = (sum(floors.get(n, 0.0) * float(np.sum(np.abs(u[n]))) for n in names)
                + absolute_floor(tol, scale) * float(np.sum(np.abs(v))))
    allowance = consistency_allowance(tol, by_jvp, by_backward, terms, eps, weighted)
    ok = abs(by_jvp - by_backward) <= allowance
    wrong = ""
    if not ok:
        wrong = "undetermined"
        # The exact oracles first (in the order chosen), else the numeric one.
        reference = next((o for o in references if o != "numeric"), "numeric" if "numeric" in references else None)
        if reference is not None:
            ref, error = references[reference], errors.get(reference, 0.0)

            def agrees(value: float) -> bool:
                return abs(value - ref) <= consistency_allowance(tol, value, ref, terms, eps, weighted) + error

            jvp_ok, backward_ok = agrees(by_jvp), agrees(by_backward)
            wrong = {(False, True): "jvp", (True, False): "backward", (False, False): "both"}.get(
                (jvp_ok, backward_ok), "undetermined")
    return Consistency(tangent.label, by_jvp, by_backward, references, errors, allowance, ok, wrong)
