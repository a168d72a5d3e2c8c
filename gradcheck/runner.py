"""Run cases: draw inputs with Hypothesis, check each, shrink a failure to its smallest example.

For one ``Case`` the runner checks its fixed ``points`` first, then ``examples`` inputs drawn
from ``case.inputs``. A failing check is raised inside the Hypothesis test so that Hypothesis
shrinks it; the smallest failing example, with its ``CheckResult``, is what the report shows.

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
from gradcheck.check import check_gradients
from gradcheck.errors import GradcheckError
from gradcheck.evaluate import describe_exception
from gradcheck.options import OPTIONS, Settings
from gradcheck.progress import Progress
from gradcheck.result import CheckResult
from gradcheck.worst import WorstAt, track_worst

__all__ = ["CaseRun", "InputShown", "MinimalExample", "RunReport", "case_seed", "run_case", "run_cases",
           "shown_inputs"]

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
    """

    case: Case
    seed: int
    examples: int = 0
    points: int = 0
    oracles: tuple[str, ...] = ()
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
        self.kinks += len(result.kinks)
        self.failures += not result.ok
        self.inconclusive += result.verdict == "inconclusive"
        track_worst(self, result, example=example, inputs=inputs)


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
                words += [f"--{option.name}", repr(value)]
        if self.gallery:
            words.append("--gallery")
        return shlex.join(words)


def _literal_pattern(name: str) -> str:
    """A ``--case`` pattern (fnmatch) that matches ``name`` alone."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)




def _shown(inputs: Mapping[str, Any], result: CheckResult) -> tuple[InputShown, ...]:
    """The inputs of an example: small ones in full, large ones at the flagged elements."""
    flagged: dict[str, list[tuple[int, ...]]] = {}
    for item in (*result.mismatches, *result.kinks):
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


class _Failed(Exception):
    """Raised inside the Hypothesis test for a failing check, so that Hypothesis shrinks it."""

    def __init__(self, inputs: Mapping[str, Any], result: CheckResult) -> None:
        super().__init__("gradient check failed")
        self.inputs = inputs
        self.result = result


def run_case(
    case: Case,
    settings: Settings,
    *,
    progress: Callable[[CaseRun], None] | None = None,
    check_progress: Callable[[Progress], None] | None = None,
) -> CaseRun:
    """Check ``case`` on its fixed points and ``settings.examples`` drawn examples.

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
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity

    seed = case_seed(settings.seed, case.name)
    run = CaseRun(case=case, seed=seed)
    # The report draws its own progress (no stderr line from each check).
    options = {"wrt": case.wrt, "seed": seed, "rtol": settings.rtol, "atol": settings.atol,
               "progress": check_progress if check_progress is not None else False}
    start = time.perf_counter()
    shrinking = False

    def check(inputs: Mapping[str, Any], *, point: bool = False) -> CheckResult:
        result = check_gradients(case.forward, case.backward, inputs, **options)
        if point:
            run.points += 1
        elif not shrinking:
            run.examples += 1
        if not shrinking:
            if len(run.samples) < MAX_SAMPLES:
                run.samples.append(dict(inputs))
        run.add(result, inputs, None if shrinking else run.points + run.examples)  # fixed points first
        if progress is not None:
            progress(run)
        return result

    try:
        for point in case.points:
            result = check(point, point=True)
            if not result.ok:
                run.at_point = run.minimal = MinimalExample(_shown(point, result), result, "point")
                break
    except GradcheckError as exc:
        run.error = f"fixed point: {exc}"
        run.seconds = time.perf_counter() - start
        return run

    def test(inputs: Mapping[str, Any]) -> None:
        nonlocal shrinking
        result = check(inputs)
        if not result.ok:
            shrinking = True
            raise _Failed(inputs, result)

    given = hypothesis.given(inputs=case.inputs)(test)
    given = draws.settings(
        examples=settings.examples,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
        ],
    )(given)
    given = hypothesis.seed(seed)(given)
    try:
        with draws.replayable_draws():
            given()
    except _Failed as failed:
        # Hypothesis re-runs the smallest failing example last and raises its exception.
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


def select_cases(cases: Sequence[Case], patterns: Iterable[str], *, gallery: bool) -> list[Case]:
    """The cases to run: gallery or correct ones, filtered by fnmatch ``patterns`` (any).

    Raises:
        GradcheckError: a pattern matches no case of the kind asked for (the message says when
            it matches cases of the other kind), or there is no case at all.
    """
    from fnmatch import fnmatchcase

    kind = [c for c in cases if c.is_gallery == gallery]
    patterns = list(patterns)
    if not patterns:
        if not kind:
            what = "gallery cases" if gallery else "correct (non-gallery) cases"
            hint = "" if gallery else "; use --gallery to run the known-buggy variants"
            raise GradcheckError(f"there are no {what} to run{hint}")
        return kind
    chosen: list[Case] = []
    for pattern in patterns:
        matched = [c for c in kind if fnmatchcase(c.name, pattern)]
        if not matched:
            other = [c for c in cases if c.is_gallery != gallery and fnmatchcase(c.name, pattern)]
            if other:
                flag = "without --gallery" if gallery else "with --gallery"
                raise GradcheckError(
                    f"--case {pattern!r} matches only {'correct' if gallery else 'gallery'} cases "
                    f"(e.g. {other[0].name!r}); run them {flag}"
                )
            raise GradcheckError(
                f"--case {pattern!r} matches no case (known: {', '.join(c.name for c in cases[:8])}"
                f"{', ...' if len(cases) > 8 else ''}); --list shows them all"
            )
        chosen.extend(c for c in matched if c not in chosen)
    return chosen


def run_cases(
    cases: Sequence[Case],
    settings: Settings,
    *,
    gallery: bool = False,
    progress: Callable[[CaseRun], None] | None = None,
    done: Callable[[CaseRun], None] | None = None,
) -> RunReport:
    """Run each case in turn (see ``run_case``); ``done`` is called after each case."""
    start = time.perf_counter()
    runs = []
    for case in cases:
        run = run_case(case, settings, progress=progress)
        runs.append(run)
        if done is not None:
            done(run)
    return RunReport(settings, gallery, runs, time.perf_counter() - start)
