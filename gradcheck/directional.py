"""Directional mode: check large inputs along random directions, then localize what fails.

For an input ``x`` with analytic gradient ``a``, a direction ``v`` (Gaussian, scaled per element
like the per-element steps) gives the numeric directional derivative ``dL/dt`` at ``x + t v``;
it must match ``a . v``. As in the per-element oracle, a direction costs two evaluations
(``t = +-h``) when it passes at once; a suspect one (off by more than the allowance, or with a
large second difference) gets two more (``t = +-2h``) for the Richardson estimate, its error
estimate and the kink test (``numeric.richardson``), and only then is the forward's noise
measured (once per check). A correct gradient costs two evaluations per direction.

* A direction whose one-sided slopes disagree crosses a kink: another is drawn, and the crossing
  is reported. If every draw crosses one (a kink sits exactly at the point, as a dead ReLU unit
  puts one along a whole column of its weights), the slices of one axis that hold the kink are
  found by bisection over that axis, left out (a few of their elements are reported as kinks),
  and the rest of the input is checked with directions that avoid them. When no few slices
  hold it, the coordinates are bisected instead, within a budget, and a note says so.
* A failing direction is localized by bisection: the direction restricted to each half of its
  coordinates is checked again, recursing into failing halves down to single elements, which
  become mismatches (or kinks) with their own numeric value. The search has a budget.
* The torch oracle, when it ran, is compared element by element (it costs no evaluation);
  elements where it disagrees are checked numerically one by one (a sample, if many), so a
  different choice of subgradient at a kink is not mistaken for a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gradcheck.compare import InputComparison, absolute_floor, allowed, relative_error
from gradcheck.evaluate import Evaluator
from gradcheck.numeric import richardson
from gradcheck.result import Kink, Mismatch, Tolerance

__all__ = ["DIRECTIONS", "check_input_directional"]

DIRECTIONS = 3  # random directions per input (a 1e-6 error escapes all three with odds ~1e-4)
MAX_LEAVES = 5  # elements localized per input before the search stops
MAX_PROBES = 400  # directional probes (4 evaluations each) per input for localization
TORCH_SAMPLE = 32  # torch-disagreeing elements verified one by one
MAX_STORED = 1000  # mismatches kept per input (the worst); the count covers all


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
    probes: int = 0
    leaves: list = field(default_factory=list)

    def _values(self, v: np.ndarray, steps: list[float]) -> np.ndarray:
        shape = self.ev.work[self.name].shape
        return self.ev.direction_values({self.name: v.reshape(shape)}, np.array(steps))

    def _judge(self, expected: float, numeric: float, error: float, terms: float) -> tuple[float, float]:
        """The allowance and the relative error of a directional derivative."""
        allowance = float(
            self.tol.rtol * max(abs(expected), abs(numeric)) + absolute_floor(self.tol, self.scale) * terms + error
        )
        rel = float(relative_error(np.array([expected]), np.array([numeric]), self.scale * terms)[0])
        return allowance, rel

    def probe(self, v: np.ndarray, first: np.ndarray | None = None) -> _Probe:
        """Check the directional derivative along flat direction ``v`` with ``L(x +- 2h v)``
        added to ``first`` (``L(x +- h v)``, evaluated here when not given)."""
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
        allowance, rel = self._judge(expected, numeric, error, float(np.sum(np.abs(v))))
        if not np.isfinite(numeric):
            status = "kink"  # the forward failed along this direction: treated as unusable
        elif k[0]:
            status = "kink"
        else:
            status = "fail" if abs(expected - numeric) > allowance else "pass"
        return _Probe(status, expected, numeric, error, float(left[0]), float(right[0]), rel, allowance)

    def quick_probe(self, v: np.ndarray) -> _Probe:
        """Two evaluations; a direction that is not clearly fine gets the full ``probe``.

        Clearly fine: the central difference matches ``a . v`` within the allowance with the
        output's rounding as noise, and its second difference is small (a kink crossed within
        ``+-h`` shows there, or moves the central difference)."""
        h = self.h
        first = self._values(v, [h, -h])
        numeric = float((first[0] - first[1]) / (2 * h))
        jump = float((first[0] - 2 * self.f0 + first[1]) / h)
        expected = float(np.dot(self.a, v))
        error = 4 * self.sigma_model / h
        allowance, rel = self._judge(expected, numeric, error, float(np.sum(np.abs(v))))
        contributions = float(np.sum(np.abs(self.a * v)))
        clearly_fine = (
            np.isfinite(numeric)
            and abs(expected - numeric) <= allowance
            and abs(jump) <= 1e-3 * contributions + 16 * self.sigma_model / h
        )
        if not clearly_fine:
            return self.probe(v, first)
        self.probes += 1
        return _Probe("pass", expected, numeric, error, numeric, numeric, rel, allowance)

    def leaf(self, i: int) -> tuple[str, _Probe]:
        """Per-element check of flat element ``i`` (direction ``weights[i] e_i``)."""
        v = np.zeros_like(self.a)
        v[i] = self.weights[i]
        return "leaf", self.probe(v)

    def localize(self, v: np.ndarray, coords: np.ndarray) -> None:
        """Bisect the failing (or kink-crossing) direction ``v`` restricted to ``coords``."""
        if len(self.leaves) >= MAX_LEAVES or self.probes >= MAX_PROBES:
            return
        if len(coords) == 1:
            i = int(coords[0])
            _, p = self.leaf(i)
            if p.status != "pass":
                self.leaves.append((i, p))
            return
        half = len(coords) // 2
        for part in (coords[:half], coords[half:]):
            if len(self.leaves) >= MAX_LEAVES or self.probes >= MAX_PROBES:
                return
            w = np.zeros_like(v)
            w[part] = v[part]
            if self.probe(w).status != "pass":
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
    sigma_model: float,
    measure_noise: Callable[[], float],
    analytic: np.ndarray,
    torch_grad: np.ndarray | None,
    tol: Tolerance,
    rng: np.random.Generator,
    *,
    directions: int = DIRECTIONS,
) -> tuple[InputComparison, int, list[str]]:
    """Directional check of one input; returns the comparison, directions checked, notes.

    ``sigma_model`` is the rounding expected of the output (``eps * |L|``), used for the first,
    two-evaluation test of each direction; ``measure_noise()`` returns the forward's measured
    noise (evaluated on first use) for the directions that need a closer look."""
    shape = analytic.shape
    a = analytic.reshape(-1).astype(np.float64)
    t = None if torch_grad is None else torch_grad.reshape(-1)
    x = ev.work[name].reshape(-1)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    weights = np.maximum(np.abs(x), rms if rms > 0 else 1.0)
    scale = float(max(np.max(np.abs(a), initial=0.0), 0.0 if t is None else np.max(np.abs(t), initial=0.0)))
    search = _Search(ev, name, f0, eps ** (1.0 / 3.0), sigma_model, measure_noise, a, weights, tol, scale)
    notes: list[str] = []
    order = rng.permutation(a.size)
    torch_bad = None if t is None else np.abs(a - t) > allowed(a, t, 0.0, tol, scale)
    # torch pins wrong elements for free; bisect only when it cannot.
    bisect = torch_bad is None or not torch_bad.any()
    passed = failed = crossed = 0
    ev.tracker.stage("directions", name, 2 * directions)
    worst = 0.0
    kink_directions = []
    excluded = np.zeros(a.size, dtype=bool)  # coordinates at a kink, left out of the directions

    def draw_directions() -> None:
        nonlocal passed, failed, crossed, worst
        draws = 0
        usable = order[~excluded[order]]
        while passed + failed < directions and draws < 3 * directions:
            draws += 1
            v = rng.standard_normal(a.size) * weights
            v[excluded] = 0.0
            p = search.quick_probe(v)
            if p.status == "kink":
                crossed += 1
                kink_directions.append(v)
                continue
            worst = max(worst, p.rel)
            if p.status == "fail":
                failed += 1
                if bisect and len(search.leaves) < MAX_LEAVES:
                    with ev.tracker.interlude("localization", same_input=True):
                        search.localize(v, usable)
            else:
                passed += 1

    draw_directions()
    if crossed:
        notes.append(f"{name}: {crossed} random direction(s) crossed a kink and were drawn again")
    if passed + failed == 0 and kink_directions:
        # A kink sits at the point itself: find the slices of the input it lies along, leave
        # them out, and check the rest.
        ev.tracker.stage("kink search", name)
        found = _isolate_kinks(search, shape, kink_directions[0])
        if found is not None:
            excluded, where = found
            notes.append(
                f"{name}: every random direction crossed a kink at the point; {where} "
                f"({int(excluded.sum())} element(s)) sit at it and were left out, the rest was checked"
            )
            ev.tracker.stage("directions", name, 2 * directions)
            draw_directions()
            for i in rng.choice(np.flatnonzero(excluded), size=min(MAX_LEAVES, int(excluded.sum())), replace=False):
                _, p = search.leaf(int(i))  # a few of them, to show their one-sided slopes
                search.leaves.append((int(i), p))
        else:
            notes.append(
                f"{name}: every random direction crossed a kink at the point, and no few slices of the "
                "input hold it; only the elements the bisection reached were checked"
            )
            ev.tracker.stage("localization", name)
            search.localize(kink_directions[0], order)

    mismatches: list[Mismatch] = []
    kinks: list[Kink] = []
    seen: set[int] = set()

    def at(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()

    def record(i: int, p: _Probe, against: tuple[str, ...]) -> None:
        seen.add(i)
        w = weights[i]
        tv = None if t is None else float(t[i])
        if p.status == "kink":
            kinks.append(Kink(name, at(i), float(a[i]), p.left / w, p.right / w, tv))
        else:
            mismatches.append(Mismatch(name, at(i), float(a[i]), p.numeric / w, p.error / w, tv,
                                       p.rel, p.allowance / w, against))

    for i, p in search.leaves:
        if i not in seen:
            record(i, p, ("numeric",) + (("torch",) if t is not None and abs(a[i] - t[i]) > allowed(a[i:i+1], t[i:i+1], 0.0, tol, scale)[0] else ()))

    worst_torch = None
    extra_count = 0
    rest_mask = np.zeros(0, dtype=np.int64)
    if t is not None:
        bad = torch_bad
        worst_torch = float(np.max(relative_error(a, t, scale), initial=0.0))
        suspects = np.flatnonzero(bad)
        sample = suspects if len(suspects) <= TORCH_SAMPLE else rng.choice(suspects, TORCH_SAMPLE, replace=False)
        verdicts = []
        ev.tracker.stage("element checks", name, 4 * len(sample))
        for i in sample.tolist():
            if i in seen:
                continue
            _, p = search.leaf(i)
            verdicts.append(p.status)
            if p.status != "pass":
                record(i, p, ("numeric", "torch") if p.status == "fail" else ("torch",))
        rest = [i for i in suspects.tolist() if i not in seen]
        if rest:
            if not verdicts or any(v != "kink" for v in verdicts):
                rest = np.array(rest)
                rel = relative_error(a[rest], t[rest], scale)
                keep = rest[np.argsort(-rel, kind="stable")[:MAX_STORED]]
                allowance = allowed(a[keep], t[keep], 0.0, tol, scale)
                rel_keep = relative_error(a[keep], t[keep], scale)
                for j, i in enumerate(keep.tolist()):
                    mismatches.append(Mismatch(name, at(i), float(a[i]), None, None, float(t[i]),
                                               float(rel_keep[j]), float(allowance[j]), ("torch",)))
                extra_count = len(rest) - len(keep)
                rest_mask = rest
            else:
                notes.append(
                    f"{name}: {len(rest)} more element(s) disagree with torch where the sampled ones "
                    "were kinks; not compared"
                )
    mismatches.sort(key=lambda m: -m.relative_error)
    mask = np.zeros(a.size, dtype=bool)
    for m in mismatches:
        if m.index or not shape:
            mask[np.ravel_multi_index(m.index, shape) if shape else 0] = True
    mask[rest_mask] = True
    if failed and not mismatches:
        notes.append(f"{name}: {failed} direction(s) failed but no single element could be localized within the budget")
    if extra_count:
        notes.append(f"{name}: the worst {MAX_STORED} of {len(mismatches) + extra_count} mismatching elements are listed")
    comparison = InputComparison(
        tuple(mismatches), tuple(kinks), (), worst, worst_torch, mask,
        t, None if t is None else np.ones(a.size, dtype=bool),
    )
    checked = passed + failed
    ok_dirs = failed == 0
    if not ok_dirs and not mismatches:
        # A failing direction is a mismatch even when it could not be pinned to an element.
        comparison = InputComparison(
            (Mismatch(name, (), float("nan"), None, None, None, worst, float("nan"), ("numeric",)),),
            tuple(kinks), (), worst, worst_torch, mask,
        )
    return comparison, checked, notes
