"""Results -> lines of text. No numerics here: only formatting of what the engine found."""

from __future__ import annotations

from gradcheck.result import CheckResult, InputSummary, Mismatch

__all__ = ["fmt", "index_str", "result_lines"]

MAX_ELEMENTS_SHOWN = 5


def fmt(value: float | None, digits: int = 4) -> str:
    """A float in a fixed-width-friendly form; '-' for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.{digits - 1}e}"


def index_str(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def _input_line(s: InputSummary, oracles: tuple[str, ...], mode: str) -> str:
    verdict = "ok  " if s.ok else "FAIL"
    parts = [f"  {verdict} {s.name} {tuple(s.shape)} {s.dtype}:"]
    if mode == "directional":
        parts.append(f"{s.checked} random direction(s) checked;")
        if s.mismatches:
            parts.append(f"{s.mismatches} element(s) mismatch;")
    elif s.mismatches:
        parts.append(f"{s.mismatches}/{s.checked} elements mismatch;")
    else:
        parts.append(f"{s.checked} elements match;")
    errors = []
    if "numeric" in oracles:
        errors.append(f"numeric {fmt(s.worst_numeric, 2)}")
    if "torch" in oracles:
        errors.append(f"torch {fmt(s.worst_torch, 2)}")
    parts.append("worst rel. error " + ", ".join(errors))
    if s.kinks:
        parts.append(f"; {s.kinks} kink(s) not compared")
    return " ".join(parts).replace(" ;", ";")


def _mismatch_line(m: Mismatch) -> str:
    numeric = "-" if m.numeric is None else f"{fmt(m.numeric, 6)} (+-{fmt(m.numeric_error, 1)})"
    return (
        f"      {index_str(m.input, m.index)}: analytic {fmt(m.analytic, 6)}, numeric {numeric}, "
        f"torch {fmt(m.torch, 6)}; rel. error {fmt(m.relative_error, 2)}, allowed "
        f"{fmt(m.tolerance, 2)} (disagrees with {' and '.join(m.against)})"
    )


def result_lines(result: CheckResult, max_elements: int = MAX_ELEMENTS_SHOWN) -> list[str]:
    """The terminal report of one check: a verdict line, a line per input with its worst
    error, the worst ``max_elements`` elements of each mismatching input with the likely bug,
    kinks, faults and notes."""
    verdict = "PASS" if result.ok else "FAIL"
    oracles = ", ".join(result.oracles) if result.oracles else "none"
    lines = [
        f"gradcheck {verdict}: oracles {oracles}; mode {result.mode}; "
        f"{result.evaluations} forward evaluations; seed {result.seed}"
    ]
    for fault in result.faults:
        lines.append(f"  FAULT {fault}")
    for summary in result.inputs:
        lines.append(_input_line(summary, result.oracles, result.mode))
        if summary.diagnosis is not None:
            d = summary.diagnosis
            lines.append(f"      likely bug ({d.kind}): {d.summary}" + (f" [{d.evidence}]" if d.evidence else ""))
        elif summary.mismatches:
            lines.append("      likely bug: no simple pattern")
        shown = [m for m in result.mismatches if m.input == summary.name][:max_elements]
        lines.extend(_mismatch_line(m) for m in shown)
        if summary.mismatches > len(shown):
            lines.append(f"      ... and {summary.mismatches - len(shown)} more")
    if result.kinks:
        shown = result.kinks[:MAX_ELEMENTS_SHOWN]
        lines.append(
            f"  kinks (not differentiable there, not compared): {len(result.kinks)}, e.g. "
            + "; ".join(
                f"{index_str(k.input, k.index)} slopes {fmt(k.left, 3)} | {fmt(k.right, 3)}, analytic {fmt(k.analytic, 3)}"
                for k in shown[:3]
            )
        )
    if result.disagreements:
        d = result.disagreements[0]
        if all(x.numeric == 0 for x in result.disagreements):
            why = ("central differences see a flat loss: it rounds away changes this small (a saturated "
                   "softmax?), while torch and the backward agree")
        else:
            why = "the forward may differ between numpy and torch, or round coarsely there"
        lines.append(
            f"  oracles disagree at {len(result.disagreements)} element(s), e.g. "
            f"{index_str(d.input, d.index)}: numeric {fmt(d.numeric, 6)} (+-{fmt(d.numeric_error, 1)}) "
            f"vs torch {fmt(d.torch, 6)}: {why}"
        )
    for note in result.notes:
        lines.append(f"  note: {note}")
    return lines
