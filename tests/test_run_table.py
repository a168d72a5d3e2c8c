"""The terminal table fits the width it is given and never cuts a number or a verdict; the
failure details say where each worst error was met."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import strategies as st
from rich.console import Console

from gradcheck.case import Case
from gradcheck.options import Settings
from gradcheck.result import CheckResult
from gradcheck.run_table import COLUMNS, DEFAULT_WIDTH, details_lines, rows, terminal, terminal_width
from gradcheck.runner import CaseRun, MinimalExample, RunReport, run_case


def _case(name: str) -> Case:
    return Case(name=name, forward=lambda x: x, backward=None, inputs=st.just({"x": np.zeros(2)}))


def _report() -> RunReport:
    """Rows as a long run shows them: wide numbers, long names, every verdict, a long note."""
    fault = "backward raised ValueError: operands could not be broadcast together with shapes (4,3) (3,4)"
    failed = MinimalExample((), CheckResult(ok=False, faults=(fault,)), "drawn")
    runs = [
        CaseRun(_case("gates.max"), 1, examples=200, oracles=("numeric", "torch"), kinks=156,
                worst={"numeric": 1.0e-11, "torch": 0.0}),
        CaseRun(_case("sigmoid_chain.one_per_layer"), 2, examples=25, oracles=("numeric", "torch"),
                worst={"numeric": 0.15, "torch": 1.6e-15}),
        CaseRun(_case("twolayer.llayer_relu"), 3, examples=25, oracles=("numeric", "torch"), kinks=3,
                worst={"numeric": 1.8e-08, "torch": 0.0049}),
        CaseRun(_case("mine.numpy_only"), 4, examples=7, oracles=("numeric",), worst={"numeric": 0.33},
                minimal=failed),
        CaseRun(_case("mine.broken_strategy"), 5, error="strategy raised TypeError: unhashable type: 'list'"),
    ]
    return RunReport(Settings(), False, runs, 1.0)


def _render(report: RunReport, width: int) -> tuple[list[str], list[str]]:
    """The table's lines and the summary's lines, as printed at ``width``."""
    console = Console(width=width, file=io.StringIO(), highlight=False, color_system=None)
    terminal(report, console)
    lines = console.file.getvalue().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    summary = max(i for i, line in enumerate(lines) if not line.strip()) + 1  # after the details
    assert " ".join(" ".join(lines[summary:]).split()).startswith("gradcheck report FAILED")
    return lines[: end + 1], lines[summary:]


def _parse(table: list[str]) -> tuple[list[str], list[list[str]]]:
    """Headers (two-line headers joined) and rows (wrapped case names joined) of a rich table."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line[1:-1].split(line[0])]

    header_lines = [cells(line) for line in table if line.startswith("┃")]
    headers = [" ".join(filter(None, column)) for column in zip(*header_lines, strict=True)]
    parsed: list[list[str]] = []
    for line in table:
        if not line.startswith("│"):
            continue
        row = cells(line)
        if parsed and not any(row[1:]):  # a wrapped case name goes on
            parsed[-1][0] += row[0]
        else:
            parsed.append(row)
    return headers, parsed


# Width -> the columns shown, as DROP_ORDER prescribes for this report.
SHOWN = [
    (200, COLUMNS),
    (120, ("case", "examples", "kinks", "worst vs numeric", "worst vs torch", "verdict", "note")),
    (100, ("case", "kinks", "worst vs numeric", "worst vs torch", "verdict", "note")),
    (80, ("case", "kinks", "worst vs numeric", "worst vs torch", "verdict")),
    (60, ("case", "worst vs numeric", "worst vs torch", "verdict")),  # case names wrap
    (40, ("case", "worst vs torch", "verdict")),
]


@pytest.mark.parametrize(("width", "columns"), SHOWN)
def test_table_fits_the_width_and_never_cuts_a_number_or_a_verdict(width, columns):
    report = _report()
    table, summary = _render(report, width)
    assert max(map(len, table + summary)) <= width
    headers, shown = _parse(table)
    assert tuple(headers) == columns
    expected = rows(report)
    assert len(shown) == len(expected)
    for row, full in zip(shown, expected, strict=True):
        for column, cell in zip(columns, row, strict=True):
            value = full[COLUMNS.index(column)]
            if column == "note" and cell != value:
                assert cell.endswith("…") and value.startswith(cell[:-1]) and len(cell) >= 20
            else:
                assert cell == value, (column, cell, value)  # whole: 156, 0.0049, FAIL, the name


def test_too_narrow_a_width_prints_the_table_whole_and_wider():
    table, _ = _render(_report(), 20)
    headers, shown = _parse(table)
    assert headers == ["case", "worst vs torch", "verdict"]
    assert [row[0] for row in shown] == [r[0] for r in rows(_report())]
    assert [row[2] for row in shown] == ["pass", "pass", "pass", "FAIL", "error"]


@pytest.mark.parametrize(
    ("columns_env", "terminal_columns", "expected"),
    [
        ("132", None, 132),  # COLUMNS wins, even when piped
        ("132", 100, 132),
        (None, 100, 100),  # a terminal's own width
        (None, None, DEFAULT_WIDTH),  # piped, nothing known
    ],
)
def test_width_is_columns_else_the_terminal_else_80(monkeypatch, columns_env, terminal_columns, expected):
    if columns_env is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns_env)

    def size(fd=None):
        if terminal_columns is None:
            raise OSError("not a terminal")
        return os.terminal_size((terminal_columns, 24))

    monkeypatch.setattr(os, "get_terminal_size", size)
    assert terminal_width() == expected


POINT = np.array([[0.5, -1.0, 0.25, 1.0], [0.75, 0.5, 5.0, -0.5], [1.5, 2.0, -2.5, 0.5],
                  [-1.5, 1.25, 0.5, 2.5], [1.0, -2.0, 3.0, 0.5]])  # largest |x| at [1, 2]


def _cube(x):
    return (x ** 3).sum()


def _slightly_off(scale):
    """The gradient of sum(x^3), off by a relative ``scale * max|x|`` at the largest |x|."""
    def backward(dout, x):
        grad = 3 * x ** 2 * dout
        i = np.unravel_index(np.argmax(np.abs(x)), x.shape)
        grad[i] *= 1 + scale * np.max(np.abs(x))
        return {"x": grad}
    return backward


def test_failure_details_say_where_each_worst_error_was_met():
    case = Case(name="mine.cube_off_at_max", forward=_cube, backward=_slightly_off(1e-2),
                inputs=st.just({"x": POINT / 5}), points=({"x": POINT},))
    run = run_case(case, Settings(examples=2))
    assert run.verdict == "FAIL"
    lines = details_lines(RunReport(Settings(examples=2), False, [run], 1.0))
    # The fixed point (example 1) has the largest error, 5e-2, at its largest element.
    assert "    worst vs numeric 0.048: x[1, 2] in example 1" in lines
    assert "    worst vs torch 0.048: x[1, 2] in example 1" in lines
    assert "      x (5, 4) float64 = at flagged elements: [1, 2] = 5" in lines
