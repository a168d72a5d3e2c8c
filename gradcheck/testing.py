"""gradcheck in a pytest suite: the ``gradient_test`` decorator, the ``gradcheck`` fixture's
object, and the per-test tallies the plugin sums up at the end of a run.

``gradient_test`` turns a forward, its backward and a Hypothesis strategy of inputs (or a
``Case``) into a pytest test::

    @gradient_test(layer_norm, layer_norm_backward, inputs=layer_norm_inputs())
    def test_layer_norm(result):
        '''The hand-written backward agrees with both oracles.'''

Under the plugin (``gradcheck.pytest_plugin``) checks use the run's ``--gradcheck-*`` settings
and count towards its terminal summary; without it they use the defaults of ``Settings``.
Examples are drawn from the run's seed, never from the clock, the worker or the other tests'
modules (see ``gradcheck.draws``), so a run with ``pytest -n auto`` draws exactly what a serial
run draws, and a test run alone draws what it draws beside any other.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gradcheck import draws
from gradcheck.case import Case
from gradcheck.check import _validate_options, check_gradients
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.options import Settings
from gradcheck.progress import Progress
from gradcheck.report import fmt, index_str
from gradcheck.result import CheckResult
from gradcheck.worst import track_worst, worse

if TYPE_CHECKING:
    import pytest

__all__ = ["GradcheckFixture", "Tally", "gradient_test", "header_lines", "summary_lines"]

_MISSING = object()


@dataclass
class Tally:
    """What the gradient checks made by one test found; plain data, so it crosses to the
    pytest-xdist controller on the test's report.

    Attributes:
        test: the test's node id.
        checks: checks made; failed: those that were not ok.
        inconclusive: checks that compared nothing (empty inputs or output).
        kinks: kinks met (elements held to their one-sided slopes, not to a single value);
            kink: the first one, e.g. ``"x[0, 2]"``.
        worst: the largest relative error against each oracle, by oracle name, and
            ``worst_input`` the input it was found in (an oracle that did not run is absent).
    """

    test: str
    checks: int = 0
    failed: int = 0
    inconclusive: int = 0
    kinks: int = 0
    kink: str | None = None
    worst: dict[str, float | None] = field(default_factory=dict)
    worst_input: dict[str, str] = field(default_factory=dict)

    def add(self, result: CheckResult) -> None:
        """Count one check."""
        self.checks += 1
        self.failed += not result.ok
        self.inconclusive += result.verdict == "inconclusive"
        self.kinks += len(result.kinks)
        if self.kink is None and result.kinks:
            self.kink = index_str(result.kinks[0].input, result.kinks[0].index)
        track_worst(self, result)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Tally":
        return cls(**data)




def header_lines(settings: Settings) -> list[str]:
    """The pytest header: the seed first, so that any failure can be replayed."""
    rtol = "per dtype" if settings.rtol is None else f"{settings.rtol:g}"
    atol = "scaled floor" if settings.atol is None else f"{settings.atol:g}"
    return [
        f"gradcheck: seed {settings.seed} (replay with --gradcheck-seed {settings.seed}), "
        f"examples {settings.examples}, rtol {rtol}, atol {atol}"
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_lines(tallies: Iterable[Tally], settings: Settings) -> list[str]:
    """The terminal summary of a run: checks made, how many failed, kinks met and the worst
    relative error against each oracle, naming the test and input. Empty when no test made a
    check. The order of ``tallies`` does not matter (serial and parallel runs print the same)."""
    ran = sorted((t for t in tallies if t.checks), key=lambda t: t.test)
    if not ran:
        return []
    checks = sum(t.checks for t in ran)
    failed = [t for t in ran if t.failed]
    head = f"{_plural(checks, 'check')} in {_plural(len(ran), 'test')}"
    if failed:
        head += f", {sum(t.failed for t in failed)} failed in {_plural(len(failed), 'test')}"
    else:
        head += ", all passed"
    inconclusive = sum(t.inconclusive for t in ran)
    if inconclusive:
        head += f" ({inconclusive} inconclusive: empty, nothing compared)"
    lines = [f"gradcheck: {head}; seed {settings.seed}"]
    kinked = [t for t in ran if t.kinks]
    if kinked:
        first = kinked[0]
        lines.append(
            f"  kinks met (held to their one-sided slopes): {sum(t.kinks for t in kinked)} in "
            f"{_plural(len(kinked), 'test')}, e.g. {first.kink} in {first.test}"
        )
    else:
        lines.append("  kinks met: none")
    oracles: list[str] = []
    for t in ran:
        oracles += [o for o in t.worst if o not in oracles]
    for oracle in sorted(oracles, key=lambda o: o != "numeric"):  # numeric first, then as met
        worst: Tally | None = None
        for t in ran:
            value = t.worst.get(oracle)
            if value is not None and (worst is None or worse(value, worst.worst.get(oracle))):
                worst = t
        if worst is not None:
            lines.append(
                f"  worst relative error vs {oracle}: {fmt(worst.worst[oracle], 2)} "
                f"in {worst.test} (input {worst.worst_input[oracle]})"
            )
    for t in failed:
        lines.append(f"  FAIL {t.test}: {t.failed} of {_plural(t.checks, 'check')} failed")
    return lines


def _options(settings: Settings, seed: int | None, rtol: float | None, atol: float | None) -> dict[str, Any]:
    """Keyword options for one check: a value given for the check wins over the run's setting,
    which wins over the per-dtype default."""
    return {
        "seed": settings.seed if seed is None else seed,
        "rtol": settings.rtol if rtol is None else rtol,
        "atol": settings.atol if atol is None else atol,
    }


class GradcheckFixture:
    """What the ``gradcheck`` fixture gives a test: the ``gradcheck`` module's public names
    (its ``__all__``), which the fixture's name shadows inside the test, with
    ``check_gradients`` (also as ``check``) and ``assert_gradients`` using the run's seed and
    tolerances and counted in the run's summary.

    Attributes:
        settings: the run's ``Settings`` (from ``--gradcheck-seed`` etc.).
    """

    def __init__(self, settings: Settings, node: pytest.Item) -> None:
        self.settings = settings
        self._node = node

    def __getattr__(self, name: str) -> Any:
        """``Case``, ``GradientMismatch``, ``numeric_gradient``, ...: the module's own."""
        import gradcheck

        if name in gradcheck.__all__:
            return getattr(gradcheck, name)
        raise AttributeError(
            f"the gradcheck fixture has no attribute {name!r}; it has the gradcheck module's "
            f"public names ({', '.join(gradcheck.__all__)}) and settings"
        )

    def __dir__(self) -> list[str]:
        import gradcheck

        return sorted({*super().__dir__(), *gradcheck.__all__})

    def check(
        self,
        forward: Callable[..., Any],
        backward: Callable[..., Mapping[str, Any]] | None,
        inputs: Mapping[str, Any],
        *,
        wrt: str | Iterable[str] | None = None,
        seed: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        mode: str = "auto",
        progress: bool | Callable[[Progress], Any] | None = None,
    ) -> CheckResult:
        """``gradcheck.check_gradients`` with the run's settings for ``seed``, ``rtol`` and
        ``atol`` that are not given (None).

        Raises:
            GradcheckError: misuse, as ``check_gradients`` does.
        """
        __tracebackhide__ = True
        from gradcheck.pytest_plugin import record

        result = check_gradients(
            forward, backward, inputs, wrt=wrt, mode=mode, progress=progress,
            **_options(self.settings, seed, rtol, atol),
        )
        record(self._node, result)
        return result

    check_gradients = check

    def assert_gradients(
        self,
        forward: Callable[..., Any],
        backward: Callable[..., Mapping[str, Any]] | None,
        inputs: Mapping[str, Any],
        *,
        wrt: str | Iterable[str] | None = None,
        seed: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        mode: str = "auto",
        progress: bool | Callable[[Progress], Any] | None = None,
    ) -> CheckResult:
        """``check``, raising ``GradientMismatch`` (an AssertionError whose message is the
        mismatch report) unless the check passes; returns the result when it does."""
        __tracebackhide__ = True
        result = self.check(forward, backward, inputs, wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode,
                            progress=progress)
        if not result.ok:
            raise GradientMismatch(result)
        return result


def _as_case(
    forward: Any, backward: Any, inputs: Any, wrt: str | Sequence[str] | None
) -> Case:
    """The case a ``gradient_test`` checks, validated where the arguments enter."""
    if isinstance(forward, Case):
        extra = (("backward", backward), ("inputs", inputs), ("wrt", wrt))
        given = [n for n, v in extra if v is not _MISSING and v is not None]
        if given:
            raise GradcheckError(
                f"gradient_test(case) takes the case's own backward, inputs and wrt; got {given} as well"
            )
        return forward
    if backward is _MISSING:
        raise GradcheckError(
            "gradient_test(forward, backward, inputs=...) needs a backward (None checks torch autograd)"
        )
    if inputs is None:
        raise GradcheckError(
            "gradient_test(forward, backward, inputs=...) needs inputs, a Hypothesis strategy "
            "(or a dict of strategies)"
        )
    name = getattr(forward, "__qualname__", None) or type(forward).__name__
    return Case(
        name=name, forward=forward, backward=backward, inputs=inputs,
        wrt=(wrt,) if isinstance(wrt, str) else wrt,
    )


def gradient_test(
    forward: Callable[..., Any] | Case,
    backward: Callable[..., Mapping[str, Any]] | None = _MISSING,  # type: ignore[assignment]
    *,
    inputs: Any = None,
    wrt: str | Sequence[str] | None = None,
    examples: int | None = None,
    mode: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., None]]:
    """Decorate a function into a Hypothesis-driven pytest test of a backward pass.

    Each drawn example is checked with ``check_gradients``; a failing check fails the test with
    the mismatch report of the smallest failing example Hypothesis finds. After each passing
    check the decorated function runs, given the ``CheckResult`` as ``result`` if it has that
    parameter (its other parameters are pytest fixtures); a docstring alone is a fine body.

    Args:
        forward: ``forward(**inputs)``, or a ``Case`` (then give nothing else but options).
        backward: ``backward(dout, **inputs) -> {name: gradient}``, or None for torch autograd.
        inputs: a Hypothesis strategy drawing ``{name: array or number}``, or a dict of
            strategies ``{name: strategy}`` (drawn as ``st.fixed_dictionaries``).
        wrt: the names to check; None checks every floating input.
        examples: examples to draw; None uses ``--gradcheck-examples`` (default 10). A case's
            ``points`` are checked first, in addition.
        mode, rtol, atol: as for ``check_gradients``; None tolerances use ``--gradcheck-rtol``
            and ``--gradcheck-atol``, then the per-dtype defaults.

    A gallery case (``case.bug`` set) is expected to fail: its test passes when some example
    catches the bug and fails when none does.

    Raises:
        GradcheckError: misuse (a forward without backward or inputs, ``inputs`` neither a
            strategy nor a dict of strategies, bad ``examples``/``mode``/tolerances), when the decorator is applied.
    """
    case = _as_case(forward, backward, inputs, wrt)
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
        raise GradcheckError(f"examples must be a positive integer or None, got examples={examples!r}")
    _validate_options(case.forward, case.backward, 0, rtol, atol, mode, False)

    def decorate(fn: Callable[..., Any]) -> Callable[..., None]:
        if not callable(fn):
            raise GradcheckError(f"gradient_test(...) decorates a function, got {fn!r}")
        params = inspect.signature(fn).parameters
        fixtures = [p for name, p in params.items() if name != "result"]
        wanted = {p.name for p in fixtures}

        def test(**kwargs: Any) -> None:
            __tracebackhide__ = True
            from gradcheck.pytest_plugin import session_settings

            request = kwargs["request"]
            own = {k: v for k, v in kwargs.items() if k in wanted}

            def after(result: CheckResult) -> None:
                __tracebackhide__ = True
                if "result" in params:
                    fn(result=result, **own)
                else:
                    fn(**own)

            settings = session_settings(request.config)
            try:
                _run(
                    case, request.node, settings, fn.__name__,
                    examples=settings.examples if examples is None else examples,
                    options={"wrt": case.wrt, "mode": mode, **_options(settings, None, rtol, atol)},
                    after=after,
                )
                return
            except GradientMismatch as mismatch:
                report = [f"{type(mismatch).__name__}: {mismatch}", *getattr(mismatch, "__notes__", ())]
            _fail("\n".join(report))

        functools.update_wrapper(test, fn)
        keyword = inspect.Parameter.KEYWORD_ONLY
        shown = [p.replace(kind=keyword, default=inspect.Parameter.empty) for p in fixtures]
        if "request" not in wanted:
            shown.insert(0, inspect.Parameter("request", keyword))
        test.__signature__ = inspect.Signature(shown)  # type: ignore[attr-defined]
        return test

    return decorate


def _fail(message: str) -> None:
    """Fail a ``gradient_test`` with ``message`` (the mismatch report and the example Hypothesis
    found) and no traceback: every frame it passed through is gradcheck's or Hypothesis' own.
    This frame stays visible (of a failure without traceback pytest prints only the message)."""
    import pytest

    pytest.fail(message, pytrace=False)


def _run(
    case: Case,
    node: pytest.Item,
    settings: Settings,
    name: str,
    *,
    examples: int,
    options: dict[str, Any],
    after: Callable[[CheckResult], None],
) -> None:
    """Draw ``examples`` inputs from the run's seed and check each; a failure is shrunk and
    raised as ``GradientMismatch`` (for a gallery case, the first failure ends the test)."""
    __tracebackhide__ = True
    import hypothesis
    from hypothesis import HealthCheck, Phase

    from gradcheck.pytest_plugin import record

    def check_one(inputs: Mapping[str, Any]) -> None:
        __tracebackhide__ = True
        result = check_gradients(case.forward, case.backward, inputs, **options)
        record(node, result)
        if not result.ok:
            raise GradientMismatch(result)
        after(result)

    check_one.__name__ = check_one.__qualname__ = name
    run = hypothesis.given(inputs=case.inputs)(check_one)
    for point in reversed(case.points):
        run = hypothesis.example(inputs=point)(run)
    # Phase.explain would list gradcheck's own lines; a gallery case stops at its first failure.
    if case.is_gallery:
        phases = [Phase.explicit, Phase.generate]
    else:
        phases = [p for p in Phase if p is not Phase.explain]
    run = draws.settings(
        examples=examples,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(run)
    run = hypothesis.seed(settings.seed)(run)
    if not case.is_gallery:
        with draws.replayable_draws():
            run()
        return
    try:
        with draws.replayable_draws():
            run()
    except GradientMismatch:
        return
    _fail(f"gallery case {case.name!r}: the bug ({case.bug}) was not caught in {examples} "
          f"examples (seed {settings.seed})")
