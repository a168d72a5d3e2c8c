"""A run of cases -> text: the terminal table, the markdown table and the failure details.

No numerics here; ``runner`` found everything. One row per case: examples, oracles, kinks met,
worst relative error against each oracle, verdict and a note (the likely bug, or the error).

The terminal table fits the width it is given (``terminal_width()``: ``COLUMNS``, else the
terminal's width, else 80, as when piped). A number or a verdict is never cut: when the table
is too wide, these steps are taken in order until it fits:

1. the ``worst vs ...`` headers go on two lines;
2. ``modes`` is dropped (the details under the table name each failing check's modes), then
   ``oracles`` (a ``-`` in a ``worst vs`` column says that oracle did not run);
3. ``examples`` is dropped (the summary line gives the total);
4. ``note`` is dropped (until then it is cut with an ellipsis to the room left, down to
   ``NOTE_MIN_WIDTH`` characters; the details under the table give it in full);
5. ``kinks`` is dropped (the summary line gives the total);
6. case names wrap over lines, down to ``CASE_MIN_WIDTH`` characters (never cut);
7. ``worst vs numeric`` is dropped (torch is exact where it ran).

Narrower than that, the table is printed at the smallest width that keeps it whole. The
details under the table and the summary line are not cut either (details are not wrapped, so
that commands and values copy whole).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.render import detectable_text
from gradcheck.report import fmt, index_str, result_lines
from gradcheck.runner import CaseRun, InputShown, MinimalExample, RunReport, shown_inputs

__all__ = [
    "COLUMNS",
    "DROP_ORDER",
    "columns",
    "details_lines",
    "detectable_lines",
    "drop_order",
    "fit_table",
    "markdown",
    "report_oracles",
    "rows",
    "summary_line",
    "terminal",
    "terminal_width",
]

DEFAULT_ORACLES = ("numeric", "torch")  # the worst-error columns of a run where none ran


def report_oracles(report: RunReport) -> tuple[str, ...]:
    """The oracles with a worst-error column: numeric first, then the others in the order the
    runs met them."""
    seen: list[str] = ["numeric"]
    for run in report.runs:
        seen += [o for o in run.oracles if o not in seen]
    return tuple(seen) if len(seen) > 1 or any(r.oracles for r in report.runs) else DEFAULT_ORACLES


def columns(oracles: tuple[str, ...] = DEFAULT_ORACLES) -> tuple[str, ...]:
    """The table's columns for a run whose checks used ``oracles``."""
    return ("case", "examples", "oracles", "modes", "kinks", *(f"worst vs {o}" for o in oracles), "verdict", "note")


def drop_order(oracles: tuple[str, ...] = DEFAULT_ORACLES) -> tuple[str, ...]:
    """Dropped from the terminal table in this order while it is too wide; case, verdict and
    the first exact oracle's worst error stay."""
    later = tuple(f"worst vs {o}" for o in reversed(oracles[2:]))
    return ("modes", "oracles", "examples", "note", "kinks", *later, "worst vs numeric")


COLUMNS = columns()
DROP_ORDER = drop_order()


def _is_number(column: str) -> bool:
    """Right-aligned, never cut."""
    return column in ("examples", "kinks") or column.startswith("worst vs ")


def _header(column: str, wrapped: bool) -> str:
    return column.replace("worst vs ", "worst vs\n") if wrapped else column
NOTE_WIDTH = 72  # a note is cut to this many characters in any table
NOTE_MIN_WIDTH = 20  # the terminal table drops the note column rather than show less of it
CASE_MIN_WIDTH = 12  # case names wrap over lines down to this width, no narrower
DEFAULT_WIDTH = 80  # when the width is unknown (output piped, no COLUMNS)
VERDICT_COLORS = {"pass": "green", "caught": "green", "FAIL": "bold red", "MISSED": "bold red",
                  "error": "bold yellow", "inconclusive": "yellow"}


def _short(text: str, width: int = NOTE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def note(run: CaseRun) -> str:
    """One line per case: the error, or the likely bug of its failing example."""
    if run.error is not None:
        return _short(run.error)
    example = run.at_point or run.minimal
    if example is None:
        return ""
    return _short(_finding(example.result))


def _finding(result: Any) -> str:
    """The likely bug, fault or mismatch of a failing check (its second order's after its own)."""
    found = [(s.name, s.diagnosis) for s in result.inputs if s.diagnosis is not None]
    if found:
        names = ", ".join(dict.fromkeys(name for name, _ in found))
        d = found[0][1]
        headline = d.summary.split(": ")[0].split(" (a ")[0]
        return f"{d.kind} in {names}: {headline}"
    if result.faults:
        return f"fault: {result.faults[0]}"
    if result.forward is not None and not result.forward.ok:
        side = next((c.wrong for c in result.consistency if not c.ok), "")
        named = f"; the {side} is wrong" if side in ("jvp", "backward") else ""
        return f"forward mode: {result.forward.mismatches} jvp output element(s) mismatch{named}"
    wrong = [s.name for s in result.inputs if not s.ok]
    if wrong:
        return f"mismatch in {', '.join(wrong)}; no simple pattern"
    second = result.second_order
    return f"second order: {_finding(second)}" if second is not None and not second.ok else ""


def rows(report: RunReport) -> list[tuple[str, ...]]:
    """The table's rows, one per case, as strings in ``columns(report_oracles(report))`` order."""
    out = []
    for run in report.runs:
        out.append((
            run.case.name,
            str(run.examples),
            "+".join(run.oracles) or "-",
            "+".join(run.modes) or "-",
            str(run.kinks),
            *(fmt(run.worst.get(o), 2) if o in run.oracles else "-" for o in report_oracles(report)),
            run.verdict,
            note(run),
        ))
    return out


def _inconclusive(runs: list[CaseRun]) -> str:
    n = sum(r.inconclusive for r in runs)
    return f", {n} inconclusive check{'s' if n != 1 else ''} (empty: nothing compared)" if n else ""


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
        f"{sum(r.examples for r in runs)} examples{_points(runs)}, {kinks} kinks met (held to their slopes)"
        f"{_inconclusive(runs)}; "
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
    lines.extend(_input_line(shown, indent + "  ") for shown in example.inputs)
    lines.extend(f"{indent}{line}" for line in result_lines(example.result, max_elements))
    return lines


def _input_line(shown: InputShown, indent: str) -> str:
    return f"{indent}{shown.name} {tuple(shown.shape)} {shown.dtype} = {_values(shown)}"


def worst_lines(run: CaseRun, indent: str = "    ") -> list[str]:
    """Where each oracle's worst error was met: the element and the example, with the
    example's inputs (a large input at those elements)."""
    groups: list[tuple[Any, list[str], dict[str, list[tuple[int, ...]]]]] = []  # per example
    for oracle in run.oracles:
        where = run.worst_at.get(oracle)
        if where is None:
            continue
        element = (f"{where.input} (along a random direction)" if where.index is None
                   else index_str(where.input, where.index))
        example = "a re-check while shrinking" if where.example is None else f"example {where.example}"
        line = f"{indent}worst vs {oracle} {fmt(where.error, 2)}: {element} in {example}"
        group = next((g for g in groups if g[0] is where.inputs), None)
        if group is None:
            group = (where.inputs, [], {})
            groups.append(group)
        group[1].append(line)
        if where.index is not None and where.index not in group[2].setdefault(where.input, []):
            group[2][where.input].append(where.index)
    lines: list[str] = []
    for inputs, headers, flagged in groups:
        lines.extend(headers)
        lines.extend(_input_line(shown, indent + "  ") for shown in shown_inputs(inputs, flagged))
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
        if not (report.gallery and run.caught):  # a caught bug's worst error says nothing new
            lines.extend(worst_lines(run))
        if report.gallery and not run.caught and run.error is None:
            lines.append(f"    MISSED: {run.examples} examples passed although the backward is buggy")
        lines.append("")
    return lines + detectable_lines(report)


def detectable_lines(report: RunReport) -> list[str]:
    """A note per case that ran directional checks: what they could have missed, per input
    (the weakest statement over the case's checks)."""
    lines = [f"{run.case.name} (directional): {detectable_text(name, d)}"
             for run in report.runs for name, d in run.detectable.items()]
    return [*lines, ""] if lines else []


def terminal_width() -> int:
    """The width to fit: ``COLUMNS`` when set, else the terminal's when stdout is one, else 80."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


@dataclass(frozen=True)
class Layout:
    """Which columns the terminal table shows and how.

    Attributes:
        columns: shown columns, in ``COLUMNS`` order.
        wrapped_headers: the ``worst vs`` headers on two lines.
        case_width: the case column's width when names wrap (None: as wide as the longest).
        note_width: the note column's width (None: no note column).
        width: the table's width, which may exceed the width asked for when nothing fits.
    """

    columns: tuple[str, ...]
    wrapped_headers: bool
    case_width: int | None
    note_width: int | None
    width: int


def _table(report: RunReport, table_rows: list[tuple[str, ...]], columns: tuple[str, ...], *,
           wrapped_headers: bool, case_width: int | None = None, note_width: int | None = None) -> Any:
    from rich.table import Table

    table = Table(title="gradcheck report" + (" (gallery of known bugs)" if report.gallery else ""),
                  title_justify="left")
    for column in columns:
        header = _header(column, wrapped_headers)
        if column == "case":
            table.add_column(header, overflow="fold", max_width=case_width, min_width=case_width)
        elif column == "note":
            table.add_column(header, overflow="ellipsis", no_wrap=True, max_width=note_width)
        else:
            table.add_column(header, justify="right" if _is_number(column) else "left", no_wrap=True)
    every = _columns_of(report)
    shown = [every.index(c) for c in columns]
    for row in table_rows:
        cells = [row[i] for i in shown]
        if "verdict" in columns:
            k = columns.index("verdict")
            cells[k] = f"[{VERDICT_COLORS[cells[k]]}]{cells[k]}[/]"
        table.add_row(*cells)
    return table


def _natural_width(console: Any, table: Any) -> int:
    """The width ``table`` takes when nothing limits it."""
    return console.measure(table, options=console.options.update_width(10**6)).maximum


def _columns_of(report: RunReport) -> tuple[str, ...]:
    return columns(report_oracles(report))


def _steps(columns: tuple[str, ...], order: tuple[str, ...]) -> list[tuple[tuple[str, ...], bool, bool]]:
    """The layouts tried, in order: (columns, ``worst vs`` headers on two lines, case names
    wrapped)."""
    steps = [(columns, False, False), (columns, True, False)]
    for dropped in order:
        if dropped == "worst vs numeric":
            steps.append((columns, True, True))  # case names wrap before the last drop
        columns = tuple(c for c in columns if c != dropped)
        steps.append((columns, True, dropped == "worst vs numeric"))
    return steps


def fit_table(report: RunReport, console: Any, width: int) -> tuple[Any, Layout]:
    """The run's table laid out for ``width`` columns (see the module docstring): the rich
    ``Table`` and its ``Layout``. When no layout fits, the narrowest, wider than ``width``."""
    table_rows = rows(report)
    every = _columns_of(report)
    longest_note = max((len(row[every.index("note")]) for row in table_rows), default=0)
    longest_case = max((len(row[0]) for row in table_rows), default=0)

    def build(columns: tuple[str, ...], wrapped: bool, case_width: int | None,
              note_width: int | None = None) -> tuple[Any, Layout]:
        shown = tuple(c for c in columns if c != "note" or note_width is not None)
        table = _table(report, table_rows, shown, wrapped_headers=wrapped, case_width=case_width,
                       note_width=note_width)
        return table, Layout(shown, wrapped, case_width, note_width, _natural_width(console, table))

    best = None
    all_columns = tuple(c for c in every if c != "note" or longest_note)
    for columns, wrapped, wrap_case in _steps(all_columns, drop_order(report_oracles(report))):
        case_width = None
        if wrap_case and longest_case > CASE_MIN_WIDTH:
            _, narrowest = build(columns, wrapped, CASE_MIN_WIDTH)
            case_width = min(longest_case, CASE_MIN_WIDTH + max(0, width - narrowest.width))
        best = build(columns, wrapped, case_width)
        if "note" in columns:
            # The note takes the room left, if that is enough (3: a column's border and padding).
            room = min(longest_note, width - best[1].width - 3)
            if room < min(NOTE_MIN_WIDTH, longest_note):
                continue
            best = build(columns, wrapped, case_width, room)
        if best[1].width <= width:
            return best
    assert best is not None
    return best


def terminal(report: RunReport, console: Any) -> None:
    """Print the table, the details and the summary line on a ``rich`` console, the table
    fitted to the console's width."""
    width = console.width
    table, layout = fit_table(report, console, width)
    console.width = max(layout.width, width)  # too narrow for any layout: the table whole, wider
    try:
        console.print(table)
    finally:
        console.width = width
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
    every = _columns_of(report)
    out.append("| " + " | ".join(every) + " |")
    out.append("|" + "|".join("---:" if _is_number(c) else "---" for c in every) + "|")
    icons = {"pass": "✅ pass", "caught": "✅ caught", "FAIL": "❌ FAIL", "MISSED": "❌ MISSED", "error": "⚠️ error",
             "inconclusive": "➖ inconclusive"}
    verdict = every.index("verdict")
    for row in rows(report):
        cells = [f"`{row[0]}`", *row[1:verdict], icons[row[verdict]], _md(row[-1])]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"**{summary_line(report)}**", ""]
    details = details_lines(report)
    if details:
        out += ["<details><summary>details</summary>", "", "```", *details, "```", "", "</details>", ""]
    return "\n".join(out)
