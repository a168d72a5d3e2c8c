"""The command line: ``python -m gradcheck report`` (also installed as ``gradcheck``).

    python -m gradcheck report [--seed N] [--examples N] [--rtol X] [--atol X]
                               [--case PATTERN]... [--gallery] [--module MODULE]...
                               [--format table|json|markdown] [--plot DIR] [--list]
                               [--no-progress] [--traceback]
    python -m gradcheck --version

Cases come from the ``gradcheck.cases`` entry points (the reference implementations by
default), or only from the modules named by ``--module`` (a dotted name, found from the current
directory as ``python -m`` finds it, or a path to a ``.py`` file). Exit codes: 0 every case
passed (with ``--gallery``: every known bug was caught), 1 a case failed or errored, 2 misuse (a
bad flag, an unknown case, a module that fails to import, an unwritable plot directory),
reported in one line (``--traceback`` adds the traceback of a failed import).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gradcheck import __version__
from gradcheck.errors import GradcheckError
from gradcheck.options import OPTIONS, Settings
from gradcheck.oracles import choose_oracles

if TYPE_CHECKING:
    from gradcheck.runner import CaseSelectionError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_MISUSE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports misuse in one line and exits with 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GradcheckError(message)


def _plot_dir(value: str) -> str:
    """``--plot`` names a directory: an empty value is misuse, not the current directory."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a directory name (--plot . writes into the current directory)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gradcheck",
                     description="Check hand-written backward passes against numeric gradients and torch autograd.")
    parser.add_argument("--version", action="version", version=f"gradcheck {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    report = commands.add_parser(
        "report", help="run every registered case through Hypothesis and report what matched",
        description="Run every registered case (the reference implementations by default) through "
                    "Hypothesis: each drawn example is checked against the numeric and torch oracles; a "
                    "failing case is shrunk to its smallest failing example. Exit 0 when all pass, 1 on a "
                    "mismatch, 2 on misuse.")
    for option in OPTIONS:
        report.add_argument(f"--{option.name}", type=option.type, default=option.default,
                            metavar=option.metavar, help=f"{option.help} (default: {option.default})")
    report.add_argument("--case", action="append", default=[], metavar="PATTERN",
                        help="run only cases whose name matches this shell pattern (repeatable), e.g. 'twolayer.*'")
    report.add_argument("--gallery", action="store_true",
                        help="run the known-buggy variants instead; passes only when every bug is caught")
    report.add_argument("--module", action="append", default=[], metavar="MODULE",
                        help="import this module (pkg.mod, found from the current directory, or a path to a "
                             ".py file) and run the cases it registers (repeatable)")
    report.add_argument("--format", choices=("table", "json", "markdown"), default="table",
                        help="table (terminal), json (one document, see gradcheck.run_json) or markdown "
                             "(CI job summaries)")
    report.add_argument("--plot", metavar="DIR", type=_plot_dir,
                        help="write per-case pictures into DIR (needs matplotlib)")
    report.add_argument("--list", action="store_true", help="list the selected cases and exit")
    report.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    report.add_argument("--traceback", action="store_true",
                        help="when a case module fails to import, show the full traceback too")
    return parser


def _cases(args: argparse.Namespace) -> list[Any]:
    from gradcheck.registry import load_entry_points, load_module
    from gradcheck.runner import CaseSelectionError, select_cases

    if args.module:
        # As under ``python -m``: modules are found from the current directory, also when run
        # as the installed ``gradcheck`` script (whose sys.path starts at the script's folder).
        here = os.getcwd()
        if here not in sys.path and "" not in sys.path:
            sys.path.insert(0, here)
        cases: list[Any] = []
        for name in args.module:
            cases.extend(c for c in load_module(name) if c not in cases)
    else:
        cases = load_entry_points()
    try:
        return select_cases(cases, args.case, gallery=args.gallery)
    except CaseSelectionError as exc:
        raise GradcheckError(_selection_message(exc)) from None


def _selection_message(exc: CaseSelectionError) -> str:
    """A ``CaseSelectionError`` in the words of the flags: ``--case``, ``--gallery``, ``--list``."""
    if exc.pattern is None:
        return f"{exc}{'' if exc.gallery else '; use --gallery to run the known-buggy variants'}"
    if exc.other is not None:
        return f"--case {exc.pattern!r} {exc.detail}; run them {'without' if exc.gallery else 'with'} --gallery"
    return f"--case {exc.pattern!r} {exc.detail}; --list shows them all"


LOG_EVERY = 30.0  # seconds between lines of a long check's progress in a log


class _Progress:
    """Progress on stderr: a rich progress bar on a terminal, a line per case otherwise.

    A long check shows its own stage in the bar's description (``W1: central differences
    38%...``); in a log, a line every ``LOG_EVERY`` seconds while one check runs."""

    def __init__(self, cases: list[Any], examples: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = len(cases)
        self.done_cases = 0
        self.case_name = ""
        self.last_line = 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            units = sum(len(c.points) + examples for c in cases)
            self.task = self.bar.add_task("gradcheck", total=units)
            self.bar.start()

    def start_case(self, case: Any) -> None:
        self.case_name = case.name
        self.last_line = time.perf_counter()
        if self.bar is not None:
            self.bar.update(self.task, description=case.name)

    def check(self, run: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=run.case.name)

    def within_check(self, update: Any) -> None:
        """A ``gradcheck.Progress`` of the running check."""
        if not self.enabled or update.elapsed < 1.0:
            return  # short checks: the per-check count is enough
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.case_name} ({update.describe()})")
            return
        now = time.perf_counter()
        if now - self.last_line >= LOG_EVERY:
            self.last_line = now
            print(f"[{self.done_cases + 1}/{self.total}] {self.case_name}: {update.describe()}",
                  file=sys.stderr, flush=True)

    def case_done(self, run: Any) -> None:
        self.done_cases += 1
        if self.bar is not None:
            return
        if self.enabled:
            print(f"[{self.done_cases}/{self.total}] {run.case.name}: {run.verdict} "
                  f"({run.examples} examples, {run.seconds:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _report(args: argparse.Namespace) -> int:
    settings = Settings.from_mapping({o.name: getattr(args, o.name) for o in OPTIONS})
    choose_oracles(settings.oracles)  # a name that is no oracle's is misuse before any case runs
    plot_dir = None
    if args.plot is not None:
        from gradcheck.plots import check_plot_dir, require_matplotlib

        require_matplotlib()
        plot_dir = check_plot_dir(args.plot)
    cases = _cases(args)
    if args.list:
        for case in cases:
            print(f"{case.name}\t{case.bug or case.description}")
        return EXIT_OK

    from gradcheck.runner import run_cases

    progress = _Progress(cases, settings.examples, enabled=not args.no_progress)
    try:
        report = run_cases(cases, settings, gallery=args.gallery, modules=args.module, started=progress.start_case,
                           progress=progress.check, check_progress=progress.within_check, done=progress.case_done)
    finally:
        progress.close()

    if plot_dir is not None:
        _plot(report, plot_dir)
    if args.format == "json":
        from gradcheck.run_json import run_to_dict

        print(json.dumps(run_to_dict(report), indent=2, allow_nan=False))
    elif args.format == "markdown":
        from gradcheck.run_table import markdown

        print(markdown(report))
    else:
        from rich.console import Console

        from gradcheck.run_table import terminal, terminal_width

        terminal(report, Console(width=terminal_width(), highlight=False))
    return EXIT_OK if report.ok else EXIT_FAILED


def _plot(report: Any, directory: Any) -> None:
    from gradcheck.plots import plot_case

    written = 0
    for run in report.runs:
        if not run.samples:
            continue
        try:
            written += len(plot_case(run.case, run.samples, directory))
        except Exception as exc:  # a picture is a bonus: say why it is missing, go on
            print(f"gradcheck: no plot for {run.case.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"gradcheck: wrote {written} plot(s) to {directory}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_MISUSE
        return _report(args)
    except GradcheckError as exc:
        from gradcheck.registry import CaseModuleError

        hint = ""
        if isinstance(exc, CaseModuleError) and exc.__cause__ is not None:
            if getattr(args, "traceback", False):
                traceback.print_exception(exc.__cause__, file=sys.stderr)
            else:
                hint = "; --traceback shows the full traceback"
        print(f"gradcheck: error: {exc}{hint}", file=sys.stderr)
        return EXIT_MISUSE
    except KeyboardInterrupt:
        print("gradcheck: interrupted", file=sys.stderr)
        return 130
