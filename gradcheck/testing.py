"""gradcheck in a pytest suite: the ``gradient_test`` decorator and the ``gradcheck`` fixture's
object.

``gradient_test`` turns a forward, its backward and a Hypothesis strategy of inputs (or a
``Case``) into a pytest test::

    @gradient_test(layer_norm, layer_norm_backward, inputs=layer_norm_inputs())
    def test_layer_norm(result):
        '''The hand-written backward agrees with both oracles.'''

Under the plugin (``gradcheck.pytest_plugin``) checks use the run's ``--gradcheck-*`` settings
and count towards its terminal summary; without it they use the defaults of ``Settings``. The
plugin imports this module, never the reverse: it hands its settings and its way of recording
a check to ``set_run`` when pytest starts, and this module reads them back with
``run_for``. Examples are drawn by ``runner.drive`` (the report's loop) from the run's seed,
never from the clock, the worker or the other tests' modules (see ``gradcheck.draws``), so a
run with ``pytest -n auto`` draws exactly what a serial run draws, and a test run alone draws
what it draws beside any other.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gradcheck import validation
from gradcheck.case import Case
from gradcheck.check import run_check
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.options import CheckOptions, Settings, order_of, run_options
from gradcheck.progress import Progress
from gradcheck.result import CheckResult
from gradcheck.runner import Checked, case_order, drive

if TYPE_CHECKING:
    import pytest

__all__ = ["GradcheckFixture", "PytestRun", "gradient_test", "run_for", "set_run"]

_MISSING = object()


def _no_record(node: Any, result: CheckResult) -> None:
    """Without the plugin a check is counted nowhere."""


@dataclass(frozen=True)
class PytestRun:
    """What a pytest run gives the checks its tests make.

    Attributes:
        settings: the run's settings (``--gradcheck-seed`` etc.).
        record: ``record(item, result)`` counts a check made by the test ``item`` (the plugin
            sums these up in its terminal summary).
    """

    settings: Settings = field(default_factory=Settings)
    record: Callable[[Any, CheckResult], None] = _no_record


@functools.cache
def _run_key() -> Any:
    import pytest

    return pytest.StashKey[PytestRun]()


def set_run(config: pytest.Config, run: PytestRun) -> None:
    """Give the checks of this pytest run its settings and recording (the plugin calls this)."""
    config.stash[_run_key()] = run


def run_for(config: pytest.Config) -> PytestRun:
    """The run's settings and recording: the plugin's, or the defaults without it."""
    return config.stash.get(_run_key(), PytestRun())


class GradcheckFixture:
    """What the ``gradcheck`` fixture gives a test: the ``gradcheck`` module's public names
    (its ``__all__``), which the fixture's name shadows inside the test, with
    ``check_gradients`` (also as ``check``) and ``assert_gradients`` using the run's seed and
    tolerances and counted in the run's summary.

    Attributes:
        settings: the run's ``Settings`` (from ``--gradcheck-seed`` etc.).
    """

    def __init__(self, settings: Settings, record: Callable[[CheckResult], None]) -> None:
        self.settings = settings
        self._record = record

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
        oracles: Iterable[str] | None = None,
        deterministic: bool = False,
        jvp: Callable[..., Any] | bool | None = None,
        order: int | None = None,
        hvp: Callable[..., Mapping[str, Any]] | None = None,
        reference: Callable[..., Any] | None = None,
        reference_factor: float | None = None,
        paths: Iterable[str] | None = None,
    ) -> CheckResult:
        """``gradcheck.check_gradients`` with the run's settings for ``seed``, ``rtol``,
        ``atol``, ``oracles`` and ``order`` that are not given (None; the run's order applies
        where the check can be made at it, see ``options.order_of``).

        Raises:
            GradcheckError: misuse, as ``check_gradients`` does.
        """
        __tracebackhide__ = True
        options = run_options(self.settings, wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress,
                              oracles=oracles, deterministic=deterministic, jvp=jvp,
                              order=order_of(order, self.settings, backward=backward, hvp=hvp), hvp=hvp,
                              reference=reference, reference_factor=reference_factor, paths=paths)
        return self._check(forward, backward, inputs, options)

    def _check(self, forward: Callable[..., Any], backward: Callable[..., Mapping[str, Any]] | None,
               inputs: Mapping[str, Any], options: CheckOptions) -> CheckResult:
        __tracebackhide__ = True
        result = run_check(forward, backward, inputs, options)
        self._record(result)
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
        oracles: Iterable[str] | None = None,
        deterministic: bool = False,
        jvp: Callable[..., Any] | bool | None = None,
        order: int | None = None,
        hvp: Callable[..., Mapping[str, Any]] | None = None,
        reference: Callable[..., Any] | None = None,
        reference_factor: float | None = None,
        paths: Iterable[str] | None = None,
    ) -> CheckResult:
        """``check``, raising ``GradientMismatch`` (an AssertionError whose message is the
        mismatch report) unless the check passes; returns the result when it does."""
        __tracebackhide__ = True
        options = run_options(self.settings, wrt=wrt, seed=seed, rtol=rtol, atol=atol, mode=mode, progress=progress,
                              oracles=oracles, deterministic=deterministic, jvp=jvp,
                              order=order_of(order, self.settings, backward=backward, hvp=hvp), hvp=hvp,
                              reference=reference, reference_factor=reference_factor, paths=paths)
        result = self._check(forward, backward, inputs, options)
        if not result.ok:
            raise GradientMismatch(result)
        return result


def _as_case(
    forward: Any, backward: Any, inputs: Any, wrt: str | Sequence[str] | None, jvp: Any = None,
    order: int | None = None, hvp: Callable[..., Mapping[str, Any]] | None = None,
) -> Case:
    """The case a ``gradient_test`` checks, validated where the arguments enter."""
    if isinstance(forward, Case):
        extra = (("backward", backward), ("inputs", inputs), ("wrt", wrt), ("jvp", jvp), ("hvp", hvp))
        given = [n for n, v in extra if v is not _MISSING and v is not None]
        if given:
            raise GradcheckError(
                f"gradient_test(case) takes the case's own backward, inputs, wrt and jvp, and its hvp; got {given} "
                "as well"
            )
        return forward if order is None else replace(forward, order=order)
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
    return Case(name=name, forward=forward, backward=backward, inputs=inputs, wrt=wrt, jvp=jvp,
                order=1 if order is None else order, hvp=hvp)


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
    jvp: Callable[..., Any] | bool | None = None,
    order: int | None = None,
    hvp: Callable[..., Mapping[str, Any]] | None = None,
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
        examples: examples to draw; None uses ``--gradcheck-examples`` (default
            ``options.DEFAULT_EXAMPLES``, 25). A case's ``points`` are checked first, in
            addition.
        mode, rtol, atol: as for ``check_gradients``; None tolerances use ``--gradcheck-rtol``
            and ``--gradcheck-atol``, then the per-dtype defaults.
        jvp: forward mode, as for ``check_gradients`` (a ``Case`` carries its own ``jvp``).
        order, hvp: as for ``check_gradients`` (``order=2`` with an ``hvp``); None keeps the
            case's order, and ``--gradcheck-order 2`` checks the second order where it can.

    A gallery case (``case.bug`` set) is expected to fail: its test passes when some example
    catches the bug and fails when none does.

    Raises:
        GradcheckError: misuse (a forward without backward or inputs, ``inputs`` neither a
            strategy nor a dict of strategies, bad ``examples``/``mode``/tolerances), when the
            decorator is applied, with the messages of ``gradcheck.validation``.
    """
    case = _as_case(forward, backward, inputs, wrt, jvp, order, hvp)
    if examples is not None:
        examples = validation.examples(examples)
    run_options(Settings(), wrt=case.wrt, rtol=rtol, atol=atol, mode=mode, jvp=case.jvp)  # validated here, made per run

    def decorate(fn: Callable[..., Any]) -> Callable[..., None]:
        if not callable(fn):
            raise GradcheckError(f"gradient_test(...) decorates a function, got {fn!r}")
        params = inspect.signature(fn).parameters
        fixtures = [p for name, p in params.items() if name != "result"]
        wanted = {p.name for p in fixtures}

        def test(**kwargs: Any) -> None:
            __tracebackhide__ = True
            request = kwargs["request"]
            own = {k: v for k, v in kwargs.items() if k in wanted}
            run = run_for(request.config)

            def on_check(checked: Checked) -> None:
                """Record each check; fail a failing one (within Hypothesis, to be shrunk), run
                the test's body after a passing one."""
                __tracebackhide__ = True
                run.record(request.node, checked.result)
                if not checked.result.ok:
                    mismatch = GradientMismatch(checked.result)
                    # Hypothesis notes the drawn examples alike; a fixed point has a number.
                    if checked.source == "point" and checked.number is not None:
                        mismatch.add_note(f"Falsifying fixed point (points[{checked.number - 1}] of case "
                                          f"{case.name!r}): {fn.__name__}(\n    inputs={checked.inputs!r},\n)")
                    raise mismatch
                if "result" in params:
                    fn(result=checked.result, **own)
                else:
                    fn(**own)

            settings = run.settings
            count = settings.examples if examples is None else examples
            options = run_options(settings, wrt=case.wrt, rtol=rtol, atol=atol, mode=mode, jvp=case.jvp,
                                  order=case_order(case, settings), hvp=case.hvp)
            try:
                # A gallery case stops at its first failure: its test passes.
                drive(case, options, examples=count, on_check=on_check, shrink=not case.is_gallery, quiet=False,
                      name=fn.__name__)
            except GradientMismatch as mismatch:
                if case.is_gallery:
                    return
                report = [f"{type(mismatch).__name__}: {mismatch}", *getattr(mismatch, "__notes__", ())]
            else:
                if not case.is_gallery:
                    return
                report = [f"gallery case {case.name!r}: the bug ({case.bug}) was not caught in {count} "
                          f"examples (seed {settings.seed})"]
            _fail("\n".join(report))  # outside the except block: pytest shows no exception chain

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

