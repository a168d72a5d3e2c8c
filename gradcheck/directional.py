"""Directional mode: check large inputs along random directions, then localize what fails.

For an input ``x`` with analytic gradient ``a``, a direction ``v`` (random signs times the
per-element scales, ``v_i = +-w_i``: see ``directions``) gives the numeric directional derivative
``dL/dt`` at ``x + t v``; it must match ``a . v``. As in the per-element oracle, a direction costs
two evaluations (``t = +-h``) when it passes at once; a suspect one (off by more than the
allowance, or with a large second difference) gets two more (``t = +-2h``) for the Richardson
estimate, its error estimate and the kink test (``numeric.richardson``), and only then is the
forward's noise measured (once per check). A correct gradient costs two evaluations per direction.

* Each element moves by its full scale in every direction, so the directions used say what the
  check could have missed: any single element wrong by more than ``tolerance.detectable_error``
  of the best direction fails it (``Detection``, with probability ``1 - POWER_DELTA``).
* A direction whose one-sided slopes disagree crosses a kink: another is drawn, and the crossing
  is reported. If every draw crosses one (a kink sits exactly at the point, as a dead ReLU unit
  puts one along a whole column of its weights), the slices of one axis that hold the kink are
  found by bisection over that axis, left out (a few of their elements are reported as kinks),
  and the rest of the input is checked with directions that avoid them. When no few slices
  hold it, the coordinates are bisected instead, within a budget, and a note says so.
* A failing direction is localized by bisection: the direction restricted to each half of its
  coordinates is checked again, recursing into failing halves down to single elements, which
  become mismatches (or kinks) with their own numeric value. The search has a budget.
* The exact oracle (the first that ran: torch, or jax), is compared element by element (it
  costs no evaluation); elements where it disagrees are checked numerically one by one (a
  sample, if many), so a different choice of subgradient at a kink is not mistaken for a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from gradcheck.compare import InputComparison, compare_input, worst_of
from gradcheck.directions import Signs
from gradcheck.estimates import NumericEstimate
from gradcheck.evaluate import Evaluator
from gradcheck.numeric import element_scale, kink_range, richardson
from gradcheck.point import Context, InputOutcome, exact_rounding
from gradcheck.result import Detection, Kink, Mismatch, Tolerance
from gradcheck.tolerance import (
    POWER_DELTA,
    allowed,
    detectable_error,
    directional_allowance,
    jump_limit,
    kink_allowance,
    noise_error,
    relative_error,
)

__all__ = ["DIRECTIONS", "check_input", "check_input_directional", "with_other_exact"]

# Random directions per input: one catches any single element wrong by its stated size; an
# error spread over many elements shows through ``a . v``, which three of them rarely all miss.
DIRECTIONS = 3
MAX_LEAVES = 5  # elements localized per input before the search stops
MAX_PROBES = 400  # directional probes (2 or 4 evaluations each) per input for localization
EXACT_SAMPLE = 32  # elements the exact oracle disagrees on, verified one by one
MAX_STORED = 1000  # mismatches kept per input (the worst); the count covers all
# The step along a direction, relative to the per-element scale, is a quarter of the
# per-element one (eps**(1/3)): a direction moves every coordinate at once, so it crosses a
# kink (a ReLU unit changing sides) with odds in proportion to the step times the number of
# units; rounding, which grows as the step shrinks, stays far below the tolerance there.
STEP_FACTOR = 0.25


@dataclass
class _Probe:
    """One directional probe: numeric ``dL/dt`` vs ``a . v`` on a set of coordinates."""

    status: str  # "pass", "fail" or "kink"
    expected: float
    numeric: float
    error: float
    left: float
    right: float
    rel: float
    allowance: float


@dataclass
class _Search:
    ev: Evaluator
    name: str
    f0: float
    h: float
    sigma_model: float  # rounding expected of the output (eps * |L|): the first test's noise
    measure_noise: Callable[[], float]  # the forward's measured noise, for suspect directions
    a: np.ndarray
    weights: np.ndarray  # per-element scale of the direction
    tol: Tolerance
    scale: float
    budget: np.ndarray | float = 0.0  # per-element allowance of a gradient computed below float64
    probes: int = 0
    leaves: list = field(default_factory=list)

    def _values(self, v: np.ndarray, steps: list[float]) -> np.ndarray:
        shape = self.ev.work[self.name].shape
        return self.ev.direction_values({self.name: v.reshape(shape)}, np.array(steps))

    def judge(self, expected: float, numeric: float, error: float, terms: float) -> tuple[float, float]:
        """The allowance and the relative error of a directional derivative (``terms`` is
        ``sum |v_i|``, see ``tolerance.directional_allowance``)."""
        return directional_allowance(self.tol, self.scale, expected, numeric, error, terms)

    def slack(self, v: np.ndarray) -> float:
        """The low-precision budget along ``v``: ``sum |b_i v_i|`` (0 for a float64 gradient)."""
        if np.ndim(self.budget) == 0 and float(self.budget) == 0.0:
            return 0.0
        return float(np.sum(np.abs(self.budget * v)))

    def probe(self, v: np.ndarray, first: np.ndarray | None = None, terms: float | None = None,
              slack: float | None = None) -> _Probe:
        """Check the directional derivative along flat direction ``v`` with ``L(x +- 2h v)``
        added to ``first`` (``L(x +- h v)``, evaluated here when not given); ``terms`` is
        ``sum |v_i|`` and ``slack`` the budget along ``v`` when known."""
        self.probes += 1
        h = self.h
        if first is None:
            first = self._values(v, [h, -h])
        second = self._values(v, [2 * h, -2 * h])
        g, e, k, left, right = richardson(
            self.f0, first[0:1], first[1:2], second[0:1], second[1:2], np.array([h]), self.measure_noise()
        )
        expected = float(np.dot(self.a, v))
        numeric, error = float(g[0]), float(e[0])
        terms = float(np.sum(np.abs(v))) if terms is None else terms
        slack = self.slack(v) if slack is None else slack
        allowance, rel = self.judge(expected, numeric, error + slack, terms)
        if not np.isfinite(numeric):
            status = "kink"  # the forward failed along this direction: treated as unusable
        elif k[0]:
            status = "kink"
        else:
            status = "fail" if abs(expected - numeric) > allowance else "pass"
        return _Probe(status, expected, numeric, error, float(left[0]), float(right[0]), rel, allowance)

    def quick_probe(self, v: np.ndarray, terms: float | None = None, contributions: float | None = None,
                    slack: float | None = None) -> _Probe:
        """Two evaluations; a direction that is not clearly fine gets the full ``probe``.

        Clearly fine: the central difference matches ``a . v`` within the allowance with the
        output's rounding as noise, and its second difference is small (a kink crossed within
        ``+-h`` shows there, or moves the central difference). ``terms`` (``sum |v_i|``),
        ``contributions`` (``sum |a_i v_i|``) and ``slack`` (``sum |b_i v_i|``) are computed here
        unless given."""
        h = self.h
        first = self._values(v, [h, -h])
        numeric = float((first[0] - first[1]) / (2 * h))
        jump = float((first[0] - 2 * self.f0 + first[1]) / h)
        expected = float(np.dot(self.a, v))
        error = noise_error(self.sigma_model, h)
        terms = float(np.sum(np.abs(v))) if terms is None else terms
        slack = self.slack(v) if slack is None else slack
        allowance, rel = self.judge(expected, numeric, error + slack, terms)
        if contributions is None:
            contributions = float(np.sum(np.abs(self.a * v)))
        clearly_fine = (
            np.isfinite(numeric)
            and abs(expected - numeric) <= allowance
            and abs(jump) <= jump_limit(contributions, self.sigma_model, h)
        )
        if not clearly_fine:
            return self.probe(v, first, terms, slack)
        self.probes += 1
        return _Probe("pass", expected, numeric, error, numeric, numeric, rel, allowance)

    def leaf(self, i: int) -> _Probe:
        """Per-element check of flat element ``i`` (direction ``weights[i] e_i``)."""
        v = np.zeros_like(self.a)
        v[i] = self.weights[i]
        return self.probe(v)

    def localize(self, v: np.ndarray, coords: np.ndarray) -> None:
        """Bisect the failing (or kink-crossing) direction ``v`` restricted to ``coords``."""
        if len(self.leaves) >= MAX_LEAVES or self.probes >= MAX_PROBES:
            return
        if len(coords) == 1:
            i = int(coords[0])
            p = self.leaf(i)
            if p.status != "pass":
                self.leaves.append((i, p))
            return
        half = len(coords) // 2
        for part in (coords[:half], coords[half:]):
            if len(self.leaves) >= MAX_LEAVES or self.probes >= MAX_PROBES:
                return
            w = np.zeros_like(v)
            w[part] = v[part]
            if self.quick_probe(w).status != "pass":  # a clear half costs two evaluations
                self.localize(w, part)


MAX_KINKED_SLICES = 8  # slices of one axis that may sit at a kink before another axis is tried


def _isolate_kinks(search: _Search, shape: tuple[int, ...], v: np.ndarray) -> tuple[np.ndarray, str] | None:
    """Find the slices, along one axis, of the coordinates at a kink at the point.

    ``v`` is a direction that crosses the kink. Along each axis in turn (the last first: the
    units of a ``x @ W`` layer), index ranges of that axis are bisected: a range whose
    restricted direction crosses no kink is clear, one that does is split, down to single
    slices. Succeeds on the first axis where at most ``MAX_KINKED_SLICES`` slices hold the kink
    within a budget of probes; returns the mask of their coordinates and a description such as
    ``W1[:, 4]``, or None.
    """
    if not shape:
        return None
    flat = np.arange(int(np.prod(shape)))
    for axis in reversed(range(len(shape))):
        size = shape[axis]
        stride = int(np.prod(shape[axis + 1:]))
        along = (flat // stride) % size
        budget = 4 * MAX_KINKED_SLICES * max(1, int(np.ceil(np.log2(max(size, 2))))) + 4
        start = search.probes
        kinked: list[int] = []
        pending = [(0, size)]
        while pending and len(kinked) <= MAX_KINKED_SLICES and search.probes - start <= budget:
            lo, hi = pending.pop()
            w = np.where((along >= lo) & (along < hi), v, 0.0)
            if not w.any():
                continue
            if search.quick_probe(w).status != "kink":
                continue  # this block is clear of the kink (a failure is found later)
            if hi - lo == 1:
                kinked.append(lo)
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
        if pending or not kinked or len(kinked) > MAX_KINKED_SLICES:
            continue
        mask = np.isin(along, kinked)
        if mask.all():
            continue
        picked = sorted(kinked)
        parts = [":"] * len(shape)
        parts[axis] = str(picked[0]) if len(picked) == 1 else "{" + ", ".join(map(str, picked)) + "}"
        return mask, f"{search.name}[{', '.join(parts)}]"
    return None


def check_input_directional(
    ev: Evaluator,
    name: str,
    f0: float,
    eps: float,
    *,
    sigma_model: float,
    measure_noise: Callable[[], float],
    exact_rounding: Callable[[float, np.ndarray], np.ndarray],
    analytic: np.ndarray,
    exact_grad: np.ndarray | None,
    tol: Tolerance,
    rng: np.random.Generator,
    signs: Signs,
    directions: int = DIRECTIONS,
    exact_name: str = "",
    budget: np.ndarray | float = 0.0,
    known_noise: Callable[[], float] | None = None,
) -> tuple[InputComparison, int, list[str], Detection | None]:
    """Directional check of one input; returns the comparison, directions checked, notes and
    the smallest single-element error the directions would have caught (None without any).

    ``sigma_model`` is the rounding expected of the output (``eps * |L|``), used for the first,
    two-evaluation test of each direction; ``measure_noise()`` returns the forward's measured
    noise (evaluated on first use) for the directions that need a closer look, and
    ``known_noise()`` the noise known without evaluating (measured where it was, else the model),
    which the statement of what could have been missed uses.
    ``exact_grad`` is the gradient of the exact oracle called ``exact_name`` (the first that ran;
    None when none did) and ``exact_rounding(sigma, xscale)`` the per-element rounding allowed
    against it, for a noise level and the elements' scale ``max(|x_i|, rms(x))`` (flat).
    ``budget`` is the per-element allowance of a gradient computed below float64 (flat, or 0),
    added to every comparison of the analytic gradient. ``signs`` gives the directions' random
    signs; ``rng`` every other random choice."""
    def rounding(sigma: float, xscale: np.ndarray) -> np.ndarray:
        return exact_rounding(sigma, xscale) + budget

    check = _InputCheck(ev, name, f0, eps, sigma_model, measure_noise, rounding, analytic, exact_grad,
                        exact_name, tol, rng, signs, directions)
    check.search.budget = budget
    check.draw()
    if check.passed + len(check.failing) == 0 and check.kink_directions:
        check.isolate_kink_at_point()
    check.verify_exact_suspects()
    check.explain_failures()
    detectable = check.detectable((known_noise or (lambda: sigma_model))())
    return check.finish(), check.passed + len(check.failing), check.notes, detectable


class _InputCheck:
    """The state of one input's directional check, stage by stage (see the module docstring)."""

    def __init__(
        self, ev: Evaluator, name: str, f0: float, eps: float, sigma_model: float,
        measure_noise: Callable[[], float], exact_rounding: Callable[[float, np.ndarray], np.ndarray],
        analytic: np.ndarray, exact_grad: np.ndarray | None, exact_name: str, tol: Tolerance,
        rng: np.random.Generator, signs: Signs, directions: int,
    ) -> None:
        self.ev, self.name, self.tol, self.rng, self.directions = ev, name, tol, rng, directions
        self.signs = signs
        self.exact_name = exact_name
        self.shape = analytic.shape
        # Read only: no float64 copy of a float64 gradient.
        a = self.a = np.asarray(analytic, dtype=np.float64).reshape(-1)
        t = self.t = None if exact_grad is None else exact_grad.reshape(-1)
        self.weights = element_scale(ev.work[name].reshape(-1))
        self.scale = float(max(np.max(np.abs(a), initial=0.0), 0.0 if t is None else np.max(np.abs(t), initial=0.0)))
        self.search = _Search(ev, name, f0, STEP_FACTOR * eps ** (1.0 / 3.0), sigma_model, measure_noise, a,
                              self.weights, tol, self.scale)
        self.notes: list[str] = []
        self._order: np.ndarray | None = None
        self.exact_err = np.zeros(a.size)
        self.exact_bad = np.zeros(a.size, dtype=bool)
        if t is not None:
            # Rounding allowed between the backward and the exact oracle (see ``check``): with the output's
            # rounding first, and the measured noise only if that leaves elements disagreeing.
            self.exact_err = np.broadcast_to(exact_rounding(sigma_model, self.weights), a.shape)
            self.exact_bad = np.abs(a - t) > allowed(a, t, self.exact_err, tol, self.scale)
            if self.exact_bad.any():
                self.exact_err = np.broadcast_to(exact_rounding(measure_noise(), self.weights), a.shape)
                self.exact_bad &= np.abs(a - t) > allowed(a, t, self.exact_err, tol, self.scale)
        self.passed = self.crossed = self.disagreeing = 0
        self.failing: list[np.ndarray] = []  # directions that failed, to explain or localize
        self.compared: list[tuple[float, float, float]] = []  # (a . v, sum |v_i|, slack) of each compared
        self.drawn = 0  # sign vectors used
        self.worst = 0.0
        self.kink_directions: list[np.ndarray] = []
        self.excluded = np.zeros(a.size, dtype=bool)  # slices at a kink, left out of the directions
        self.mismatches: list[Mismatch] = []
        self.kinks: list[Kink] = []
        self.kink_elements: set[int] = set()
        self.wrong_elements: set[int] = set()
        self.exact_only = np.zeros(0, dtype=np.int64)  # exact-bad elements listed unverified
        self.extra = 0

    @property
    def order(self) -> np.ndarray:
        """A random order of the elements, for the bisection (drawn when first needed: a
        permutation of a million elements costs more than a forward call)."""
        if self._order is None:
            self._order = self.rng.permutation(self.a.size)
        return self._order

    def detectable(self, sigma: float) -> Detection | None:
        """The smallest error in a single element (relative to the largest gradient) that one of
        the directions compared would have caught, with probability ``1 - POWER_DELTA``, for the
        forward's noise ``sigma`` (``tolerance.detectable_error``); None when no direction was
        compared or the gradient is all zeros."""
        moved = self.weights[~self.excluded] if self.excluded.any() else self.weights
        if not self.compared or not moved.size or not self.scale > 0:
            return None
        noise = noise_error(sigma, self.search.h)
        weight = float(np.min(moved))
        smallest = min(detectable_error(self.tol, self.scale, d, terms, noise, weight, slack=slack)
                       for d, terms, slack in self.compared)
        return Detection(smallest / self.scale, 1.0 - POWER_DELTA)

    # -- stage 1: random directions -----------------------------------------------------------

    def _exact_confirms(self, v: np.ndarray, p: _Probe) -> bool:
        """Along ``v``, the exact oracle agrees with the backward while the numeric estimate disagrees with
        both: an oracle disagreement (as in ``compare``), not a failure."""
        if self.t is None:
            return False
        exact = float(np.dot(self.t, v))
        rounding = float(np.sum(self.exact_err * np.abs(v)))
        allowance, _ = self.search.judge(p.expected, exact, rounding, float(np.sum(np.abs(v))))
        return abs(p.expected - exact) <= allowance and abs(p.numeric - exact) > p.allowance

    def draw(self) -> None:
        """Random directions (avoiding excluded slices) until ``directions`` were usable."""
        self.ev.tracker.stage("directions", self.name, 2 * self.directions)
        moved = ~self.excluded if self.excluded.any() else None
        # Every direction moves each coordinate by its whole scale: sum |v_i|, sum |a_i v_i| and
        # the budget along it, sum |b_i v_i|, are the same for all of them.
        w = self.weights if moved is None else np.where(moved, self.weights, 0.0)
        terms = float(np.sum(w))
        contributions = float(np.dot(np.abs(self.a), w))
        slack = self.search.slack(w)
        draws = 0
        while self.passed + len(self.failing) < self.directions and draws < 3 * self.directions:
            draws += 1
            v = self.signs.vector(self.drawn, self.a.size)
            self.drawn += 1
            v *= w
            p = self.search.quick_probe(v, terms, contributions, slack)
            if p.status == "kink":
                self.crossed += 1
                self.kink_directions.append(v)
            elif p.status == "fail" and self._exact_confirms(v, p):
                self.disagreeing += 1
                self.passed += 1
            else:
                self.worst = max(self.worst, p.rel)
                self.compared.append((p.expected, terms, slack))
                if p.status == "fail":
                    self.failing.append(v)
                else:
                    self.passed += 1

    # -- stage 2: a kink at the point ----------------------------------------------------------

    def isolate_kink_at_point(self) -> None:
        """Every direction crossed a kink: leave out the slices that hold it, check the rest."""
        name = self.name
        self.ev.tracker.stage("kink search", name)
        found = _isolate_kinks(self.search, self.shape, self.kink_directions[0])
        if found is None:
            self.ev.tracker.stage("localization", name)
            self.search.localize(self.kink_directions[0], self.order)
            self._record_leaves()
            if len(self.kink_elements) == self.a.size:
                self.notes.append(f"{name}: every element sits at a kink at the point; none can be compared")
            else:
                self.notes.append(
                    f"{name}: every random direction crossed a kink at the point, and no few slices of the "
                    "input hold it; only the elements the bisection reached were checked"
                )
            return
        self.excluded, where = found
        self.notes.append(
            f"{name}: every random direction crossed a kink at the point; {where} "
            f"({int(self.excluded.sum())} element(s)) sit at it and were left out, the rest was checked"
        )
        self.draw()
        at_kink = np.flatnonzero(self.excluded)
        for i in self.rng.choice(at_kink, size=min(MAX_LEAVES, at_kink.size), replace=False).tolist():
            p = self.search.leaf(i)  # a few of them, to show their one-sided slopes
            if p.status == "kink":
                self._record(i, p, ())

    # -- stage 3: elements the exact oracle disagrees on----------------------------------------------

    def verify_exact_suspects(self) -> None:
        """Check a sample of the elements the exact oracle disagrees on one by one; list the rest."""
        if self.t is None or not self.exact_bad.any():
            return
        a, t = self.a, self.t
        suspects = np.flatnonzero(self.exact_bad)
        sample = self.rng.choice(suspects, EXACT_SAMPLE, replace=False) if len(suspects) > EXACT_SAMPLE else suspects
        self.ev.tracker.stage("element checks", self.name, 4 * len(sample))
        verdicts = []
        for i in sample.tolist():
            if self._seen(i):
                continue
            p = self.search.leaf(i)
            verdicts.append(p.status)
            if p.status != "pass":
                self._record(i, p, ("numeric", self.exact_name) if p.status == "fail" else (self.exact_name,))
        rest = np.array([i for i in suspects.tolist() if not self._seen(i)], dtype=np.int64)
        if not rest.size:
            return
        if verdicts and all(v == "kink" for v in verdicts):
            self.notes.append(
                f"{self.name}: {rest.size} more element(s) disagree with {self.exact_name} where the sampled ones "
                "were kinks; not compared"
            )
            return
        rel = relative_error(a[rest], t[rest], self.scale)
        keep = rest[np.argsort(-rel, kind="stable")[:MAX_STORED]]
        allowance = allowed(a[keep], t[keep], self.exact_err[keep], self.tol, self.scale)
        rel_keep = relative_error(a[keep], t[keep], self.scale)
        for j, i in enumerate(keep.tolist()):
            self.mismatches.append(Mismatch(self.name, self._at(i), float(a[i]), {self.exact_name: float(t[i])}, {},
                                            float(rel_keep[j]), float(allowance[j]), (self.exact_name,),
                                            difference=float(abs(a[i] - t[i]))))
        self.extra = rest.size - keep.size
        self.exact_only = rest

    # -- stage 4: failed directions ------------------------------------------------------------

    def explain_failures(self) -> None:
        """Each failed direction is explained by kinks found meanwhile, by elements already shown
        wrong, or localized by bisection; what remains unexplained is itself a mismatch."""
        explained = 0
        unexplained = 0
        for v in self.failing:
            w = v.copy()
            w[list(self.kink_elements)] = 0.0
            if self.kink_elements and w.any() and self.search.quick_probe(w).status == "pass":
                explained += 1  # it failed for crossing kinks, now found and left out
                continue
            if self.wrong_elements:
                continue  # elements shown wrong explain it
            if len(self.search.leaves) < MAX_LEAVES:
                self.ev.tracker.stage("localization", self.name)
                before = len(self.search.leaves)
                self.search.localize(w, self.order[w[self.order] != 0])
                self._record_leaves()
                if len(self.search.leaves) > before and not self.wrong_elements:
                    # Only kinks on the way: does the direction pass without them?
                    w[list(self.kink_elements)] = 0.0
                    if w.any() and self.search.quick_probe(w).status == "pass":
                        explained += 1
                        continue
            if not self.wrong_elements:
                unexplained += 1
        if explained:
            self.notes.append(
                f"{self.name}: {explained} direction(s) failed only for crossing kinks; without those "
                "elements they pass"
            )
        if unexplained and not self.mismatches:
            self.notes.append(
                f"{self.name}: {unexplained} direction(s) failed but no single element could be "
                "localized within the budget"
            )
            # A failing direction is a mismatch even when it could not be pinned to an element.
            self.mismatches.append(
                Mismatch(self.name, (), float("nan"), {}, {}, self.worst, float("nan"), ("numeric",))
            )

    # -- findings -----------------------------------------------------------------------------

    def _at(self, i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, self.shape)) if self.shape else ()

    def _seen(self, i: int) -> bool:
        return i in self.kink_elements or i in self.wrong_elements

    def _record(self, i: int, p: _Probe, against: tuple[str, ...]) -> None:
        if self._seen(i):
            return
        w = self.weights[i]
        exact = {} if self.t is None else {self.exact_name: float(self.t[i])}
        a = float(self.a[i])
        if p.status == "kink":
            self.kink_elements.add(i)
            self.kinks.append(Kink(self.name, self._at(i), a, p.left / w, p.right / w, exact))
            # As in full mode, a gradient at a kink lies in the range its slopes allow.
            low, high = kink_range(p.left / w, p.right / w)
            nearest = min(max(a, low), high)
            if abs(a - nearest) > p.allowance / w + float(kink_allowance(low, high)):
                self.wrong_elements.add(i)
                rel = float(relative_error(np.array(a), np.array(nearest), self.scale))
                self.mismatches.append(Mismatch(self.name, self._at(i), a, exact, {}, rel, p.allowance / w,
                                                ("numeric",), difference=abs(a - nearest),
                                                slopes=(p.left / w, p.right / w)))
        else:
            self.wrong_elements.add(i)
            self.mismatches.append(Mismatch(self.name, self._at(i), a, {"numeric": p.numeric / w, **exact},
                                            {"numeric": p.error / w}, p.rel, p.allowance / w, against,
                                            difference=abs(a - p.numeric / w)))

    def _record_leaves(self) -> None:
        for i, p in self.search.leaves:
            by_exact = self.t is not None and bool(self.exact_bad[i])
            self._record(i, p, ("numeric", self.exact_name) if by_exact else ("numeric",))

    def finish(self) -> InputComparison:
        """The last stage: the notes on what the stages met, and the comparison."""
        if self.crossed:
            self.notes.insert(0, f"{self.name}: {self.crossed} random direction(s) crossed a kink and were drawn again")
        if self.disagreeing:
            self.notes.append(
                f"{self.name}: along {self.disagreeing} direction(s) the numeric derivative disagrees with both "
                f"the backward and {self.exact_name}, which agree (a forward that rounds coarsely there?); "
                "not a mismatch"
            )
        if self.extra:
            self.notes.append(
                f"{self.name}: the worst {MAX_STORED} of {len(self.mismatches) + self.extra} mismatching "
                "elements are listed"
            )
        a, t = self.a, self.t
        mask = np.zeros(a.size, dtype=bool)
        for m in self.mismatches:
            if (m.index or not self.shape) and not np.isnan(m.analytic):
                mask[np.ravel_multi_index(m.index, self.shape) if self.shape else 0] = True
        mask[self.exact_only] = True
        worst: dict[str, float | None] = {"numeric": self.worst}
        worst_at = {}
        if t is not None:
            # Over elements above the rounding allowed (as in ``compare``).
            measurable = np.maximum(np.abs(a), np.abs(t)) > np.maximum(self.tol.rounding, self.exact_err)
            worst[self.exact_name], at = worst_of(relative_error(a, t, self.scale), measurable)
            if at is not None:  # the worst error against numeric is along a direction, at no element
                worst_at[self.exact_name] = self._at(at)
        mismatches = sorted(self.mismatches, key=lambda m: -m.relative_error)
        return InputComparison(
            tuple(mismatches), tuple(self.kinks), (), worst, mask,
            t, None if t is None else np.ones(a.size, dtype=bool), worst_at=worst_at,
        )


def with_other_exact(
    comparison: InputComparison, name: str, analytic: np.ndarray, exact: Mapping[str, np.ndarray],
    tol: Tolerance, rounding: np.ndarray,
) -> InputComparison:
    """Directional mode weighs the numeric oracle against the first exact oracle; the others are
    compared with the backward (and with the first) element by element, at no evaluation."""
    first = next(iter(exact))
    none = NumericEstimate.missing(analytic.size)
    kink_mask = np.zeros(analytic.size, dtype=bool)
    for k in comparison.kinks:
        kink_mask[np.ravel_multi_index(k.index, analytic.shape) if analytic.shape else 0] = True
    none = replace(none, kink=kink_mask)
    others = compare_input(name, analytic.shape, analytic.reshape(-1).astype(np.float64), none,
                           {o: g.reshape(-1) for o, g in exact.items()}, tol, exact_error=rounding)
    # Elements the first oracle's check already lists are not listed twice.
    listed = comparison.mismatch_mask
    shape = analytic.shape
    extra = tuple(m for m in others.mismatches if set(m.against) - {first}
                  and not listed[np.ravel_multi_index(m.index, shape) if shape else 0])
    worst = {**comparison.worst, **{o: w for o, w in others.worst.items() if o not in (first, "numeric")}}
    worst_at = {**comparison.worst_at, **{o: i for o, i in others.worst_at.items() if o not in (first, "numeric")}}
    return replace(comparison, mismatches=comparison.mismatches + extra,
                   disagreements=comparison.disagreements + others.disagreements,
                   mismatch_mask=comparison.mismatch_mask | others.mismatch_mask, worst=worst, worst_at=worst_at)


def check_input(
    ctx: Context, name: str, analytic: np.ndarray, exact: Mapping[str, np.ndarray], tol: Tolerance,
) -> InputOutcome:
    """Directional check of one input, with the same interface as ``full.check_input_full``:
    weighed against the first exact oracle, the others compared element by element."""
    point = ctx.point
    first = next(iter(exact), None)
    comparison, checked, notes, detectable = check_input_directional(
        point.evaluator, name, point.value, point.eps,
        sigma_model=ctx.noise.model,
        measure_noise=ctx.noise.measured,
        known_noise=ctx.noise.known,
        signs=ctx.signs,
        exact_rounding=lambda sigma, xscale: exact_rounding(point, ctx.sensitivity, sigma, xscale),
        analytic=analytic,
        exact_grad=None if first is None else exact[first],
        exact_name=first or "",
        tol=tol,
        rng=ctx.rng,
        budget=ctx.budgets.get(name, 0.0),
    )
    if len(exact) > 1:
        xscale = element_scale(point.evaluator.work[name]).reshape(-1)
        # The noise the first oracle's comparison was allowed (measured, where it needed that).
        rounding = exact_rounding(point, ctx.sensitivity, ctx.noise.known(), xscale) + ctx.budgets.get(name, 0.0)
        comparison = with_other_exact(comparison, name, analytic, exact, tol, rounding)
    return InputOutcome(comparison, checked, checked, notes=tuple(notes), detectable=detectable)
