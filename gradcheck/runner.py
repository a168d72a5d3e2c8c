"""Run cases: draw inputs with Hypothesis, check each, shrink a failure to its smallest example.

``drive`` is the one loop that does this, for the report (``run_case``, ``run_cases``) and for
``gradient_test``: for one ``Case`` it checks its fixed ``points`` first, then ``examples``
inputs drawn from ``case.inputs``. A failing check is raised inside the Hypothesis test so that
Hypothesis shrinks it; the smallest failing example, with its ``CheckResult``, is what the
report shows. What each caller does with every check (count it, record it, run a test body) is
a callback.

Every case gets its own seed, ``case_seed(seed, case.name)``, used both for Hypothesis and for
``check_gradients`` (the random upstream gradient), so a case draws the same examples whichever
other cases run and in whatever order; ``gradcheck.draws`` keeps the draws independent of what
else is imported or installed.

A correct case passes when every example passes; a gallery case (``case.bug`` set) passes when
some example is caught. An exception from the case's own strategy or a misuse found while
checking is a case error: reported with the case, never a crash of the run.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck import draws
from gradcheck.case import Case
from gradcheck.check import run_check
from gradcheck.errors import GradcheckError
from gradcheck.evaluate import describe_exception
from gradcheck.layouts import draw as draw_layout
from gradcheck.options import OPTIONS, CheckOptions, Settings, order_of, run_options
from gradcheck.progress import Progress
from gradcheck.result import CheckResult, Detection, Kink, Mismatch
from gradcheck.worst import WorstAt, track_worst

__all__ = ["CaseRun", "CaseSelectionError", "Checked", "InputShown", "MinimalExample", "RunReport",
           "case_order", "case_seed", "drive", "run_case", "run_cases", "select_cases", "shown_inputs"]

MAX_VALUES_SHOWN = 16  # an input with at most this many elements is shown in full
MAX_SAMPLES = 20  # example inputs kept per case for plots


def case_seed(seed: int, name: str) -> int:
    """The seed of case ``name`` in a run with ``seed``: independent of which cases run."""
    return zlib.crc32(f"{seed}:{name}".encode())


@dataclass(frozen=True)
class InputShown:
    """One input of an example as the report shows it.

    Attributes:
        name, shape, dtype: the input.
        values: every value (nested lists) when the input has at most ``MAX_VALUES_SHOWN``
            elements, else None.
        at: for larger inputs, ``(index, value)`` for the elements the check flagged.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    values: Any = None
    at: tuple[tuple[tuple[int, ...], float], ...] = ()


@dataclass(frozen=True)
class MinimalExample:
    """The smallest failing example Hypothesis found (or the fixed point that failed).

    Attributes:
        inputs: the example's inputs, as shown.
        result: the check of that example.
        source: "point" (one of ``case.points``) or "drawn".
    """

    inputs: tuple[InputShown, ...]
    result: CheckResult
    source: str


@dataclass
class CaseRun:
    """What running one case found.

    Attributes:
        case: the case.
        seed: the case's own seed (see ``case_seed``).
        examples: drawn examples checked (``settings.examples`` unless a failure stopped a
            gallery case early, or the strategy has fewer distinct examples), not counting the
            re-checks Hypothesis makes while shrinking.
        points: fixed points (``case.points``) checked, before the drawn examples.
        oracles: oracles that ran in any check, e.g. ("numeric", "torch").
        modes: the modes checked in any check, e.g. ("reverse", "forward").
        kinks: kinks met over all checks (elements held to their one-sided slopes).
        inconclusive: checks that compared nothing (empty inputs or output).
        worst: the largest relative error against each oracle over all checks, by oracle name
            (absent when that oracle never ran); ``worst_input`` names the input.
        worst_at: per oracle, where its worst error was met (``WorstAt``: input, element,
            example and its inputs).
        failures: checks that failed (including the re-checks while shrinking).
        minimal: the smallest failing drawn example (shrunk by Hypothesis), else the first
            failing fixed point; None when every check passed.
        at_point: the first failing fixed point (``case.points``), if any: points are chosen
            to be non-degenerate, so this is where a bug's pattern is clearest.
        error: a case error (its strategy raised, or a misuse found while checking), if any.
        seconds: wall time.
        samples: the inputs of the first ``MAX_SAMPLES`` examples checked (for plots).
        detectable: per input checked in directional mode, the weakest statement of what its
            checks could have missed (the largest ``Detection.relative_error`` over them).
    """

    case: Case
    seed: int
    examples: int = 0
    points: int = 0
    oracles: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    kinks: int = 0
    inconclusive: int = 0
    worst: dict[str, float | None] = field(default_factory=dict)
    worst_input: dict[str, str] = field(default_factory=dict)
    worst_at: dict[str, WorstAt] = field(default_factory=dict, repr=False)
    failures: int = 0
    minimal: MinimalExample | None = None
    at_point: MinimalExample | None = None
    error: str | None = None
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)
    detectable: dict[str, Detection] = field(default_factory=dict)

    @property
    def caught(self) -> bool:
        """Some check failed: for a gallery case, its bug was caught."""
        return self.minimal is not None

    @property
    def ok(self) -> bool:
        """The case passes: a correct case with no failure, or a gallery case that was caught."""
        if self.error is not None:
            return False
        return self.caught if self.case.is_gallery else not self.caught

    @property
    def verdict(self) -> str:
        """"pass", "FAIL", "error", or "inconclusive" when no check compared anything (every
        example was empty); for a gallery case "caught", "MISSED" or "error"."""
        if self.error is not None:
            return "error"
        if self.case.is_gallery:
            return "caught" if self.caught else "MISSED"
        if self.caught:
            return "FAIL"
        return "inconclusive" if self.inconclusive and self.inconclusive >= self.examples + self.points else "pass"

    def add(self, result: CheckResult, inputs: Mapping[str, Any] | None = None,
            example: int | None = None) -> None:
        """Count one check's findings (of example number ``example`` with ``inputs``)."""
        self.oracles = (*self.oracles, *(o for o in result.oracles if o not in self.oracles))
        self.modes = (*self.modes, *(m for m in result.modes if m not in self.modes))
        self.kinks += len(result.kinks)
        self.failures += not result.ok
        self.inconclusive += result.verdict == "inconclusive"
        track_worst(self, result, example=example, inputs=inputs)
        for s in result.inputs:
            known = self.detectable.get(s.name)
            if s.detectable is not None and (known is None or s.detectable.relative_error > known.relative_error):
                self.detectable[s.name] = s.detectable


@dataclass
class RunReport:
    """A whole run: the settings, whether it ran the gallery, and one ``CaseRun`` per case.

    ``modules`` are the case modules the run imported instead of the entry points (the CLI's
    ``--module`` arguments, as given)."""

    settings: Settings
    gallery: bool
    runs: list[CaseRun]
    seconds: float = 0.0
    modules: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def replay_command(self, run: CaseRun) -> str:
        """The shell command that runs ``run``'s case again as this run did: the same case
        modules, the case alone (its draws depend on nothing else), the same kind of run, and
        every setting (the seed always, the others where they differ from their default)."""
        import shlex

        words = ["python", "-m", "gradcheck", "report"]
        for module in self.modules:
            words += ["--module", module]
        words += ["--case", _literal_pattern(run.case.name)]
        for option in OPTIONS:
            value = getattr(self.settings, option.name)
            if option.name == "seed" or value != option.default:
                words += [f"--{option.name}", option.show(value)]
        if self.gallery:
            words.append("--gallery")
        return shlex.join(words)


def case_order(case: Case, settings: Settings) -> int:
    """The order ``case`` is checked at in a run with ``settings``: its own, or the run's where
    that is higher and the case can be checked at it (``options.order_of``)."""
    return max(case.order, order_of(None, settings, backward=case.backward, hvp=case.hvp))


def _literal_pattern(name: str) -> str:
    """A ``--case`` pattern (fnmatch) that matches ``name`` alone."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)




def _shown(inputs: Mapping[str, Any], result: CheckResult) -> tuple[InputShown, ...]:
    """The inputs of an example: small ones in full, large ones at the flagged elements."""
    flagged: dict[str, list[tuple[int, ...]]] = {}
    items: tuple[Mismatch | Kink, ...] = (*result.mismatches, *result.kinks)
    for item in items:
        spots = flagged.setdefault(item.input, [])
        if item.index not in spots and len(spots) < 5:
            spots.append(item.index)
    return shown_inputs(inputs, flagged)


def shown_inputs(inputs: Mapping[str, Any],
                 flagged: Mapping[str, Sequence[tuple[int, ...]]]) -> tuple[InputShown, ...]:
    """The inputs of an example: small ones in full, large ones at the ``flagged`` elements."""
    shown = []
    for name, value in inputs.items():
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        if array.size <= MAX_VALUES_SHOWN:
            shown.append(InputShown(name, tuple(array.shape), str(array.dtype), array.tolist()))
        else:
            at = tuple((index, array[index].item()) for index in flagged.get(name, ()))
            shown.append(InputShown(name, tuple(array.shape), str(array.dtype), None, at))
    return tuple(shown)


@dataclass(frozen=True)
class Checked:
    """One check made by ``drive``.

    Attributes:
        inputs: the example's inputs.
        result: its check.
        source: "point" (one of ``case.points``), "drawn", or "shrinking" (a re-check that
            Hypothesis makes while shrinking a failure, or replaying the one it reports).
        number: the example's number: 1 for the first checked (fixed points first, then the
            drawn examples); None for a re-check while shrinking.
    """

    inputs: Mapping[str, Any]
    result: CheckResult
    source: str
    number: int | None


class _Failed(Exception):
    """Raised inside the Hypothesis test for a failing check, so that Hypothesis shrinks it."""

    def __init__(self, checked: Checked) -> None:
        super().__init__("gradient check failed")
        self.checked = checked


# What Hypothesis may skip a check for: a gradient check is slow and its inputs are arrays.
_HEALTH_CHECKS_SUPPRESSED = ("too_slow", "data_too_large")


def drive(
    case: Case,
    options: CheckOptions,
    *,
    examples: int,
    on_check: Callable[[Checked], None] | None = None,
    shrink: bool = True,
    quiet: bool = True,
    name: str = "check",
) -> Checked | None:
    """Check ``case``: its fixed points in order (up to the first that fails), then
    ``examples`` inputs that Hypothesis draws from ``case.inputs`` and ``options.seed``; a
    failing drawn example is shrunk to the smallest one Hypothesis finds (unless ``shrink`` is
    false: then the first failure ends the drawing). Every check uses ``options``.

    The report (``run_case``) and ``gradient_test`` both drive their checks through here; what
    they do with each check is the callback's part.

    Args:
        case: the case to check.
        options: the options of every check; ``options.seed`` also seeds Hypothesis.
        examples: the examples to draw.
        on_check: called with each check as it is made (re-checks while shrinking too). What
            it raises ends the drive and propagates; raised within Hypothesis, it is the
            failure that Hypothesis shrinks (and notes the example of).
        shrink: shrink a failing drawn example.
        quiet: Hypothesis reports nothing (no notes), only one failure (the first found), and
            a strategy that filters out too many examples only draws fewer. Otherwise these
            follow the loaded Hypothesis profile, as in any other Hypothesis test (by default:
            notes, every distinct failure, and a health check failing such a strategy).
        name: the name Hypothesis gives the test in its notes.
    Returns:
        The check of the drawn example that failed (the smallest found, as Hypothesis replays
        it last), or None when every drawn example passed.
    Raises:
        GradcheckError: misuse found while checking a fixed point (``"fixed point: ..."``) or
            a drawn example; whatever the case's strategy or ``on_check`` raises.
    """
    __tracebackhide__ = True
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity
    from hypothesis import strategies as st

    count = 0
    shrinking = False

    def check(inputs: Mapping[str, Any], source: str, layout: str | None = None) -> Checked:
        __tracebackhide__ = True
        nonlocal count, shrinking
        try:
            result = run_check(case.forward, case.backward, inputs, options,
                               layouts=None if layout is None else (layout,))
        except GradcheckError as exc:
            if source != "point":
                raise
            raise GradcheckError(f"fixed point: {exc}") from None
        if source != "shrinking":
            count += 1
        if source != "point" and not result.ok:
            shrinking = True  # what Hypothesis checks from now on re-checks the failure
        checked = Checked(inputs, result, source, count if source != "shrinking" else None)
        if on_check is not None:
            on_check(checked)
        return checked

    for point in case.points:
        if not check(point, "point").result.ok:
            break

    def test(inputs: Mapping[str, Any], data: Any) -> None:
        __tracebackhide__ = True
        # A torch callable's example draws the layout its backward runs under (a fixed point
        # runs every layout), so a shrunk failure names one.
        layout = draw_layout(data, case.backward, inputs)
        checked = check(inputs, "shrinking" if shrinking else "drawn", layout)
        if not checked.result.ok:
            raise _Failed(checked)

    test.__name__ = test.__qualname__ = name
    suppressed = _HEALTH_CHECKS_SUPPRESSED + (("filter_too_much",) if quiet else ())
    reporting = {"verbosity": Verbosity.quiet, "report_multiple_bugs": False} if quiet else {}
    given = hypothesis.given(inputs=case.inputs, data=st.data())(test)
    given = draws.settings(
        examples=examples,
        # Phase.explain would list gradcheck's own lines.
        phases=[p for p in Phase if p is not Phase.explain] if shrink else [Phase.explicit, Phase.generate],
        suppress_health_check=[getattr(HealthCheck, n) for n in suppressed],
        **reporting,
    )(given)
    given = hypothesis.seed(options.seed)(given)
    try:
        with draws.replayable_draws():
            given()
    except _Failed as failed:
        # Hypothesis re-runs the smallest failing example last and raises its exception.
        return failed.checked
    return None


def run_case(
    case: Case,
    settings: Settings,
    *,
    progress: Callable[[CaseRun], None] | None = None,
    check_progress: Callable[[Progress], None] | None = None,
) -> CaseRun:
    """Check ``case`` on its fixed points and ``settings.examples`` drawn examples (``drive``).

    A correct case's failure is shrunk to its smallest example; a gallery case stops at the
    first failing example and shrinks it too, so the report shows how the bug was caught.

    Args:
        case: the case to run.
        settings: seed, examples and tolerances of the run.
        progress: called with the ``CaseRun`` after each check.
        check_progress: called with the ``Progress`` of each check while it runs (the
            ``progress`` callback of ``check_gradients``); None: none.
    Returns:
        The ``CaseRun``; never raises for a bug in the case (that is a failure or a case error).
    """
    seed = case_seed(settings.seed, case.name)
    run = CaseRun(case=case, seed=seed)
    # The report draws its own progress (no stderr line from each check).
    options = run_options(settings, wrt=case.wrt, seed=seed,
                          progress=check_progress if check_progress is not None else False, jvp=case.jvp,
                          order=case_order(case, settings), hvp=case.hvp)
    start = time.perf_counter()

    def count(checked: Checked) -> None:
        if checked.source == "point":
            run.points += 1
            if not checked.result.ok:
                run.at_point = run.minimal = MinimalExample(_shown(checked.inputs, checked.result), checked.result,
                                                            "point")
        elif checked.source == "drawn":
            run.examples += 1
        if checked.number is not None and len(run.samples) < MAX_SAMPLES:
            run.samples.append(dict(checked.inputs))
        run.add(checked.result, checked.inputs, checked.number)
        if progress is not None:
            progress(run)

    try:
        failed = drive(case, options, examples=settings.examples, on_check=count)
        if failed is not None:
            run.minimal = MinimalExample(_shown(failed.inputs, failed.result), failed.result, "drawn")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the case's strategy or a misuse: a case error, not a crash
        run.error = _describe_error(exc)
    run.seconds = time.perf_counter() - start
    return run


def _describe_error(exc: BaseException) -> str:
    """One line for an exception raised while running a case (groups: their first member)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, GradcheckError):
        return str(exc)
    return describe_exception(exc) if isinstance(exc, Exception) else type(exc).__name__


class CaseSelectionError(GradcheckError):
    """No case to run for a pattern, or none of the kind asked for.

    Attributes:
        pattern: the pattern that matched none of the kind asked for; None when there was no
            pattern and there is no case of that kind.
        gallery: the kind asked for (True: gallery cases).
        other: a case of the other kind that ``pattern`` matches, if any.
        detail: what went wrong, after the pattern (the message is ``pattern <p> <detail>``).
    """

    def __init__(self, message: str, *, pattern: str | None, gallery: bool, other: Case | None = None,
                 detail: str = "") -> None:
        super().__init__(message)
        self.pattern, self.gallery, self.other, self.detail = pattern, gallery, other, detail


def _kind(gallery: bool) -> str:
    return "gallery" if gallery else "correct (non-gallery)"


def select_cases(cases: Sequence[Case], patterns: Iterable[str], *, gallery: bool) -> list[Case]:
    """The cases to run: gallery or correct ones, filtered by fnmatch ``patterns`` (any).

    Raises:
        CaseSelectionError: a pattern matches no case of the kind asked for (``other`` is a
            case of the other kind it matches, if any), or there is no case of that kind.
    """
    from fnmatch import fnmatchcase

    kind = [c for c in cases if c.is_gallery == gallery]
    patterns = list(patterns)
    if not patterns:
        if not kind:
            raise CaseSelectionError(f"there are no {_kind(gallery)} cases to run", pattern=None, gallery=gallery)
        return kind
    chosen: list[Case] = []
    for pattern in patterns:
        matched = [c for c in kind if fnmatchcase(c.name, pattern)]
        if not matched:
            other = next((c for c in cases if c.is_gallery != gallery and fnmatchcase(c.name, pattern)), None)
            if other is not None:
                detail = f"matches only {'correct' if gallery else 'gallery'} cases (e.g. {other.name!r})"
            else:
                detail = (f"matches no case (known: {', '.join(c.name for c in cases[:8])}"
                          f"{', ...' if len(cases) > 8 else ''})")
            raise CaseSelectionError(f"pattern {pattern!r} {detail}", pattern=pattern, gallery=gallery,
                                     other=other, detail=detail)
        chosen.extend(c for c in matched if c not in chosen)
    return chosen


def run_cases(
    cases: Sequence[Case],
    settings: Settings,
    *,
    gallery: bool = False,
    modules: Sequence[str] = (),
    started: Callable[[Case], None] | None = None,
    progress: Callable[[CaseRun], None] | None = None,
    check_progress: Callable[[Progress], None] | None = None,
    done: Callable[[CaseRun], None] | None = None,
) -> RunReport:
    """Run each case in turn (``run_case``) into a ``RunReport``.

    Args:
        cases: the cases, run in this order.
        settings: the run's settings.
        gallery: the cases are the gallery's (for the report and its replay commands).
        modules: the case modules the cases came from (for the replay commands).
        started: called with each case before it runs; ``done``, with its ``CaseRun`` after.
        progress, check_progress: as for ``run_case``.
    """
    start = time.perf_counter()
    runs = []
    for case in cases:
        if started is not None:
            started(case)
        run = run_case(case, settings, progress=progress, check_progress=check_progress)
        runs.append(run)
        if done is not None:
            done(run)
    return RunReport(settings, gallery, runs, time.perf_counter() - start, modules=tuple(modules))
