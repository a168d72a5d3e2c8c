"""The pytest plugin, registered by the ``pytest11`` entry point ``gradcheck``.

* options ``--gradcheck-seed``, ``--gradcheck-examples``, ``--gradcheck-rtol``,
  ``--gradcheck-atol`` in one group, built from ``gradcheck.options.OPTIONS`` (the CLI's flags);
* the seed in the report header;
* the ``gradcheck`` fixture: the ``gradcheck`` module's public names, with
  ``gradcheck.check_gradients(...)`` and ``gradcheck.assert_gradients(...)`` using the run's
  settings;
* a terminal summary of the checks made through the fixture and ``gradient_test``.

A failing ``assert_gradients`` raises ``GradientMismatch``, an AssertionError whose message is
the mismatch report, so pytest shows the report itself. The lines printed here are built by
``gradcheck.report``; the hooks only print them. The plugin imports the library, never the
reverse: it hands ``gradcheck.testing`` the run's settings and its way of recording a check
(``set_run``). Under pytest-xdist each test's tally rides on its report to the
controller, which prints the summary.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any

import pytest

from gradcheck.errors import GradcheckError
from gradcheck.options import OPTIONS, Settings
from gradcheck.oracles import choose_oracles
from gradcheck.report import Tally, header_lines, summary_lines
from gradcheck.result import CheckResult
from gradcheck.testing import GradcheckFixture, PytestRun, run_for, set_run

TALLY_KEY = pytest.StashKey[Tally]()  # what the checks of one test found, on its item
_REPORT_ATTRIBUTE = "gradcheck_tally"


def session_settings(config: pytest.Config) -> Settings:
    """The run's settings: from the options, or the defaults when the plugin is not active."""
    return run_for(config).settings


def record(node: pytest.Item, result: CheckResult) -> None:
    """Count a check made by the test ``node`` in the run's summary."""
    node.stash.setdefault(TALLY_KEY, Tally(node.nodeid)).add(result)


class _Tallies:
    """Collects each test's tally from its report (on the xdist controller: the workers')."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, _REPORT_ATTRIBUTE, None)
        if data is not None:
            self.tallies.append(Tally.from_dict(data))


_TALLIES_KEY = pytest.StashKey[_Tallies]()


def _dest(name: str) -> str:
    return f"gradcheck_{name}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks (gradcheck)")
    for option in OPTIONS:
        default = "" if option.default is None else f" (default: {option.default})"
        group.addoption(
            f"--gradcheck-{option.name}",
            dest=_dest(option.name),
            type=option.type,
            default=None,
            metavar=option.metavar,
            help=option.help + default,
        )


def pytest_configure(config: pytest.Config) -> None:
    values = {option.name: config.getoption(_dest(option.name)) for option in OPTIONS}
    try:
        settings = Settings.from_mapping(values)
        choose_oracles(settings.oracles)
    except GradcheckError as exc:
        raise pytest.UsageError(f"--gradcheck-* options: {exc}") from None
    set_run(config, PytestRun(settings, record))
    tallies = _Tallies()
    config.stash[_TALLIES_KEY] = tallies
    config.pluginmanager.register(tallies, "gradcheck-tallies")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return header_lines(session_settings(config))


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradcheckFixture:
    """The ``gradcheck`` module's public names (the fixture shadows the module inside the
    test), with ``check_gradients`` / ``assert_gradients`` using this run's --gradcheck-*
    settings and counted in the summary."""
    return GradcheckFixture(session_settings(request.config), functools.partial(record, request.node))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    tally = item.stash.get(TALLY_KEY, None)
    if call.when == "teardown" and tally is not None:
        setattr(report, _REPORT_ATTRIBUTE, tally.to_dict())
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller prints
        return
    tallies = config.stash.get(_TALLIES_KEY, None)
    lines = summary_lines(tallies.tallies if tallies else [], session_settings(config))
    if not lines:
        return
    terminalreporter.write_sep("=", "gradcheck summary")
    for line in lines:
        terminalreporter.write_line(line)
