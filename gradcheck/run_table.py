"""A run of cases -> text: the terminal table, the markdown table and the failure details.

No numerics here; ``runner`` found everything. One row per case: examples, oracles, kinks met,
worst relative error against each oracle, verdict and a note (the likely bug, or the error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcheck.report import fmt, result_lines
from gradcheck.runner import CaseRun, InputShown, MinimalExample, RunReport

__all__ = ["COLUMNS", "details_lines", "markdown", "rows", "summary_line", "terminal"]

COLUMNS = ("case", "examples", "oracles", "kinks", "worst vs numeric", "worst vs torch", "verdict", "note")
NOTE_WIDTH = 72


def _short(text: str, width: int = NOTE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def note(run: CaseRun) -> str:
    """One line per case: the error, or the likely bug of its failing example."""
    if run.error is not None:
        return _short(run.error)
    example = run.at_point or run.minimal
    if example is None:
        return ""
    result = example.result
    found = [(s.name, s.diagnosis) for s in result.inputs if s.diagnosis is not None]
    if found:
        names = ", ".join(dict.fromkeys(name for name, _ in found))
        d = found[0][1]
        headline = d.summary.split(": ")[0].split(" (a ")[0]
        return _short(f"{d.kind} in {names}: {headline}")
    if result.faults:
        return _short(f"fault: {result.faults[0]}")
    wrong = [s.name for s in result.inputs if not s.ok]
    return _short(f"mismatch in {', '.join(wrong)}; no simple pattern") if wrong else ""


def rows(report: RunReport) -> list[tuple[str, ...]]:
    """The table's rows, one per case, as strings in ``COLUMNS`` order."""
    out = []
    for run in report.runs:
        out.append((
            run.case.name,
            str(run.examples),
            "+".join(run.oracles) or "-",
            str(run.kinks),
            fmt(run.worst_numeric, 2) if "numeric" in run.oracles else "-",
            fmt(run.worst_torch, 2) if "torch" in run.oracles else "-",
            run.verdict,
            note(run),
        ))
    return out


def summary_line(report: RunReport) -> str:
    runs = report.runs
    errors = sum(r.error is not None for r in runs)
    passed = sum(r.ok for r in runs)
    failed = len(runs) - passed - errors
    word = ("caught", "missed") if report.gallery else ("passed", "failed")
    verdict = "OK" if report.ok else "FAILED"
    kinks = sum(r.kinks for r in runs)
    return (
        f"gradcheck report {verdict}: {len(runs)} {'gallery ' if report.gallery else ''}cases, "
        f"{passed} {word[0]}, {failed} {word[1]}, {errors} errors; "
        f"{sum(r.examples for r in runs)} examples{_points(runs)}, {kinks} kinks met (not compared); "
        f"seed {report.settings.seed}; {report.seconds:.1f} s"
    )


def _points(runs: list[CaseRun]) -> str:
    """The fixed points checked besides the drawn examples, if any: " and 4 fixed points"."""
    points = sum(r.points for r in runs)
    return "" if not points else f" and {points} fixed point{'s' if points > 1 else ''}"


def _values(shown: InputShown) -> str:
    if shown.values is not None:
        text = np.array2string(np.asarray(shown.values), precision=6, separator=", ", max_line_width=100)
        return text.replace("\n", "\n          ")
    if shown.at:
        return "at flagged elements: " + ", ".join(
            f"[{', '.join(map(str, index))}] = {value:.6g}" for index, value in shown.at)
    return "(large; no element flagged)"


def example_lines(example: MinimalExample, indent: str = "    ", max_elements: int = 5) -> list[str]:
    """The inputs of an example (shapes; small ones in full) and its check report."""
    where = "fixed point" if example.source == "point" else "smallest failing example (shrunk)"
    lines = [f"{indent}{where}:"]
    for shown in example.inputs:
        lines.append(f"{indent}  {shown.name} {tuple(shown.shape)} {shown.dtype} = {_values(shown)}")
    lines.extend(f"{indent}{line}" for line in result_lines(example.result, max_elements))
    return lines


def details_lines(report: RunReport) -> list[str]:
    """What went wrong per case: errors, failing examples (correct cases) and how each gallery
    bug was caught, with the command that replays the case."""
    lines: list[str] = []
    for run in report.runs:
        if run.ok and not report.gallery:
            continue
        lines.append(f"== {run.case.name}: {run.verdict} (case seed {run.seed}; "
                     f"replay: {report.replay_command(run)})")
        if run.case.bug:
            lines.append(f"    bug: {run.case.bug}")
        if run.error is not None:
            lines.append(f"    error: {run.error}")
        # A caught gallery bug is expected: show how, briefly; a failing correct case in full.
        shown = 2 if report.gallery else 5
        if run.at_point is not None:
            lines.extend(example_lines(run.at_point, max_elements=shown))
        if run.minimal is not None and run.minimal is not run.at_point:
            lines.extend(example_lines(run.minimal, max_elements=shown))
        if report.gallery and not run.caught and run.error is None:
            lines.append(f"    MISSED: {run.examples} examples passed although the backward is buggy")
        lines.append("")
    return lines


def terminal(report: RunReport, console: Any) -> None:
    """Print the table, the details and the summary line on a ``rich`` console."""
    from rich.table import Table

    table = Table(title="gradcheck report" + (" (gallery of known bugs)" if report.gallery else ""),
                  title_justify="left")
    for column in COLUMNS:
        numeric = column in ("examples", "kinks", "worst vs numeric", "worst vs torch")
        table.add_column(column, justify="right" if numeric else "left",
                         overflow="fold", no_wrap=column != "note")
    colors = {"pass": "green", "caught": "green", "FAIL": "bold red", "MISSED": "bold red", "error": "bold yellow"}
    for row in rows(report):
        verdict = row[6]
        table.add_row(*row[:6], f"[{colors[verdict]}]{verdict}[/]", row[7])
    console.print(table)
    details = details_lines(report)
    if details:
        console.print()
        for line in details:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(summary_line(report), style="bold green" if report.ok else "bold red", highlight=False)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: RunReport) -> str:
    """A GitHub-flavoured markdown table (for CI job summaries), details folded below."""
    out = ["### gradcheck report" + (" (gallery of known bugs)" if report.gallery else ""), ""]
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "|".join("---:" if c in ("examples", "kinks", "worst vs numeric", "worst vs torch") else "---"
                              for c in COLUMNS) + "|")
    icons = {"pass": "✅ pass", "caught": "✅ caught", "FAIL": "❌ FAIL", "MISSED": "❌ MISSED", "error": "⚠️ error"}
    for row in rows(report):
        cells = [f"`{row[0]}`", *row[1:6], icons[row[6]], _md(row[7])]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"**{summary_line(report)}**", ""]
    details = details_lines(report)
    if details:
        out += ["<details><summary>details</summary>", "", "```", *details, "```", "", "</details>", ""]
    return "\n".join(out)
