"""One check's result -> lines of text: the verdict, a line per input, the worst elements with
the likely bug, kinks, disagreements, faults and notes. No numerics; formatting only.

``CheckResult.__str__`` renders with ``result_lines``; the result types are imported for type
checking only, so this module sits below ``result`` (see the import contract in pyproject.toml).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradcheck.result import (
        CheckResult,
        Consistency,
        Detection,
        ForwardSummary,
        InputSummary,
        Mismatch,
        TaylorEvidence,
    )

__all__ = ["MAX_ELEMENTS_SHOWN", "detectable_text", "fmt", "index_str", "result_lines", "taylor_text", "through_text"]

MAX_ELEMENTS_SHOWN = 5


def fmt(value: float | None, digits: int = 4) -> str:
    """A float in a fixed-width-friendly form; '-' for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.{digits - 1}e}"


def index_str(name: str, index: tuple[int, ...], part: str = "") -> str:
    """``W[4, 2]``; with the ``part`` of a complex element, ``z[1, 2].imag``."""
    element = f"{name}[{', '.join(map(str, index))}]" if index else name
    return f"{element}.{part}" if part else element


def through_text(names: tuple[str, ...]) -> str:
    """``through output `c``` or ``through outputs `h` and `c```: the outputs of a forward with
    several that a gradient is wrong through."""
    quoted = [f"`{n}`" for n in names]
    if len(quoted) == 1:
        return f"through output {quoted[0]}"
    return f"through outputs {', '.join(quoted[:-1])} and {quoted[-1]}"


def detectable_text(name: str, detection: Detection) -> str:
    """What directional mode could have missed in input ``name``, in a sentence."""
    return (f"a single element wrong by {fmt(detection.relative_error, 2)} or more (relative to {name}'s "
            f"largest gradient) would have been caught with probability >= {detection.probability:g}")


def _input_line(s: InputSummary, oracles: tuple[str, ...], mode: str, empty_output: bool) -> str:
    verdict = "FAIL" if not s.ok else ("ok  " if s.compared or s.kinks else "--  ")
    head = f"  {verdict} {s.name} {tuple(s.shape)} {s.dtype}:"
    if s.checked == 0:
        return f"{head} empty, nothing to compare"
    if empty_output and s.ok:
        return f"{head} {s.checked} elements are 0, as the empty output makes every gradient"
    parts = [head]
    if mode == "directional":
        parts.append(f"{s.checked} random direction(s) checked;")
        if s.mismatches:
            parts.append(f"{s.mismatches} element(s) mismatch;")
    else:
        counts = []
        if s.mismatches:
            counts.append(f"{s.mismatches}/{s.checked} elements mismatch")
        else:
            counts.append(f"{s.compared} element{' matches' if s.compared == 1 else 's match'}")
        if s.kinks:
            counts.append(f"{s.kinks} at kinks, held to their one-sided slopes")
        skipped = s.checked - s.compared - s.kinks
        if skipped > 0:
            counts.append(f"{skipped} not compared")
        parts.append(", ".join(counts) + ";")
    parts.append("worst rel. error " + ", ".join(f"{o} {fmt(s.worst.get(o), 2)}" for o in oracles))
    if s.kinks and mode == "directional":
        parts.append(f"; {s.kinks} kink(s) left out")
    return " ".join(parts).replace(" ;", ";")


def _forward_line(f: ForwardSummary, oracles: tuple[str, ...]) -> str:
    verdict = "FAIL" if not f.ok else ("ok  " if f.compared or f.kinks else "--  ")
    randoms = sum(t.startswith("random") for t in f.tangents)
    kinds = f"{randoms} random" + (f", {len(f.tangents) - randoms} basis" if len(f.tangents) > randoms else "")
    source = "torch forward-mode AD" if f.source == "torch" else "jvp"
    per = f" ({f.checked // len(f.tangents)} per tangent)" if f.tangents else ""
    counts = (f"{f.mismatches}/{f.checked} output elements mismatch{per}" if f.mismatches
              else f"{f.compared} output element{' matches' if f.compared == 1 else 's match'}{per}")
    if f.kinks:
        counts += f", {f.kinks} at kinks"
    worst = ", ".join(f"{o} {fmt(f.worst.get(o), 2)}" for o in oracles if o in f.worst or o == "numeric")
    return (f"  {verdict} forward mode ({source}) along {len(f.tangents)} tangents ({kinds}): {counts}; "
            f"worst rel. error {worst}")


def _consistency_line(c: Consistency, source: str) -> str:
    refs = ", ".join(f"{o} {fmt(v, 6)}" + (f" (+-{fmt(c.errors[o], 1)})" if o in c.errors else "")
                     for o, v in c.references.items())
    side = {"jvp": f"the {source} (forward-mode side) is wrong",
            "backward": "the backward (reverse-mode side) is wrong",
            "both": "both sides are wrong", "undetermined": "the oracles cannot tell which side is wrong"}[c.wrong]
    return (f"  FAIL {source} vs backward along {c.tangent}: <dout, J u> is {fmt(c.by_jvp, 6)} by the {source}, "
            f"{fmt(c.by_backward, 6)} by the backward (allowed apart {fmt(c.tolerance, 2)}); "
            f"{refs or 'no oracle value'}: {side}")


def taylor_text(e: TaylorEvidence) -> str:
    """``x[1, 2]: remainder order 1.00 (wrong)`` (``x along random: ...`` for a random direction)."""
    where = f"{e.input} along a random direction" if e.direction == "random" else e.direction
    if e.order is None:
        return f"{where}: remainder at the noise floor ({e.verdict})"
    return f"{where}: remainder order {e.order:.2f} ({e.verdict})" + ("; cleared" if e.cleared else "")


def _mismatch_line(m: Mismatch, oracles: tuple[str, ...]) -> str:
    if m.mode == "forward":
        values = [f"{o} {fmt(m.references[o], 6)}" + (f" (+-{fmt(m.errors[o], 1)})" if o in m.errors else "")
                  if o in m.references else f"{o} -" for o in oracles or ("numeric",)]
        where = index_str("output", m.index) if m.index else "output"
        why = ("outside the one-sided slopes" if m.slopes is not None
               else f"disagrees with {' and '.join(m.against)}")
        return (f"      along {m.tangent} (moves {m.input}), {where}: jvp {fmt(m.analytic, 6)}, {', '.join(values)}; "
                f"off by {fmt(m.difference, 3)} (rel. {fmt(m.relative_error, 2)}), allowed {fmt(m.tolerance, 2)} "
                f"({why})")
    if m.tied:
        low, high = m.slopes or (float("nan"), float("nan"))
        return (
            f"      {', '.join(m.tied[:4])}{' ...' if len(m.tied) > 4 else ''} tied: moved together, the loss "
            f"changes at slope {fmt(low, 4)} | {fmt(high, 4)}, but their analytic gradients sum to "
            f"{fmt(m.analytic, 6)}; off by {fmt(m.difference, 3)}, allowed {fmt(m.tolerance, 2)} "
            "(a tie's gradient counted more than once?)"
        )
    values = []
    for oracle in oracles or ("numeric",):
        if oracle == "numeric" and m.slopes is not None:
            values.append(f"numeric at a kink, slopes {fmt(m.slopes[0], 4)} | {fmt(m.slopes[1], 4)}")
        elif oracle in m.references:
            error = m.errors.get(oracle)
            spread = "" if error is None else f" (+-{fmt(error, 1)})"
            values.append(f"{oracle} {fmt(m.references[oracle], 6)}{spread}")
        else:
            values.append(f"{oracle} -")
    why = "outside the one-sided slopes" if m.slopes is not None else f"disagrees with {' and '.join(m.against)}"
    if m.difference == m.difference:  # not NaN: a located element
        off = f"off by {fmt(m.difference, 3)} (rel. {fmt(m.relative_error, 2)}), allowed {fmt(m.tolerance, 2)}"
    else:
        off = f"rel. error {fmt(m.relative_error, 2)}"
    element = index_str(m.input, m.index, m.part)
    return f"      {element}: analytic {fmt(m.analytic, 6)}, {', '.join(values)}; {off} ({why})"


_INCONCLUSIVE = {
    "empty output": "the output is empty, so the loss is identically 0: the check shows only that "
                    "the backward returns zeros",
    "empty inputs": "every checked input is empty: nothing was compared",
}


def result_lines(result: CheckResult, max_elements: int = MAX_ELEMENTS_SHOWN) -> list[str]:
    """The terminal report of one check: a verdict line, a line per input with its worst
    error, the worst ``max_elements`` elements of each mismatching input with the likely bug,
    kinks, faults and notes; with ``order=2``, the second-order check's report after it,
    indented."""
    verdict = result.verdict.upper()
    oracles = ", ".join(result.oracles) if result.oracles else "none"
    modes = "" if result.modes == ("reverse",) else f"modes {'+'.join(result.modes)}; "
    lines = [
        f"gradcheck {verdict}: oracles {oracles}; mode {result.mode}; {modes}"
        f"{result.evaluations} forward evaluations; seed {result.seed}"
    ]
    for fault in result.faults:
        lines.append(f"  FAULT {fault}")
    empty_output = math.prod(result.output_shape) == 0
    if result.verdict == "inconclusive":
        lines.append("  " + _INCONCLUSIVE["empty output" if empty_output else "empty inputs"])
    if result.outputs:
        lines.append("  outputs: " + ", ".join(
            f"{o.name} {tuple(o.shape)} {o.dtype}" + ("" if o.differentiable else " (not differentiable)")
            for o in result.outputs))
    for summary in result.inputs:
        lines.append(_input_line(summary, result.oracles, result.mode, empty_output))
        if summary.outputs:
            lines.append(f"      wrt {summary.name}, {through_text(summary.outputs)}")
        if summary.budget:
            caught = "" if summary.smallest_caught is None else \
                f"; smallest relative error caught {fmt(summary.smallest_caught, 2)}"
            lines.append(f"      budget: {summary.budget}{caught}")
        if summary.detectable is not None:
            lines.append(f"      {detectable_text(summary.name, summary.detectable)}")
        if summary.diagnosis is not None:
            found = summary.diagnosis
            label = "" if found.kind == "undetermined" else f"likely bug ({found.kind}): "
            lines.append(f"      {label}{found.summary}" + (f" [{found.evidence}]" if found.evidence else ""))
        listed = [m for m in result.mismatches if m.input == summary.name and m.mode == "reverse"][:max_elements]
        if summary.diagnosis is None and any(not m.tied for m in listed):
            lines.append("      likely bug: no simple pattern")
        lines.extend(_mismatch_line(m, result.oracles) for m in listed)
        if summary.mismatches > len(listed):
            lines.append(f"      ... and {summary.mismatches - len(listed)} more")
        evidence = [e for e in result.taylor if e.input == summary.name]
        if evidence:
            lines.append("      Taylor test: " + "; ".join(taylor_text(e) for e in evidence))
    if result.forward is not None:
        lines.append(_forward_line(result.forward, result.oracles))
        listed = [m for m in result.mismatches if m.mode == "forward"][:max_elements]
        lines.extend(_mismatch_line(m, result.oracles) for m in listed)
        if result.forward.mismatches > len(listed):
            lines.append(f"      ... and {result.forward.mismatches - len(listed)} more")
    wrong = [c for c in result.consistency if not c.ok]
    if wrong:
        source = "torch forward-mode AD" if result.forward is not None and result.forward.source == "torch" else "jvp"
        lines.append(_consistency_line(wrong[0], source))
        if len(wrong) > 1:
            lines.append(f"      ... and along {len(wrong) - 1} more tangent(s)")
    if result.kinks:
        kinks = result.kinks[:MAX_ELEMENTS_SHOWN]
        lines.append(
            f"  kinks (not differentiable there; the gradient must lie between the one-sided slopes): "
            f"{len(result.kinks)}, e.g. "
            + "; ".join(
                f"{index_str(k.input, k.index, k.part)} slopes {fmt(k.left, 3)} | {fmt(k.right, 3)}, "
                f"analytic {fmt(k.analytic, 3)}"
                for k in kinks[:3]
            )
        )
    if result.disagreements:
        # Exact oracles apart from each other first: then the numeric one sides with one of them.
        exact_apart = [x for x in result.disagreements if "numeric" not in x.values]
        d = (exact_apart or list(result.disagreements))[0]
        numeric_apart = [] if exact_apart else list(result.disagreements)
        if numeric_apart and all(x.values["numeric"] == 0 for x in numeric_apart):
            why = ("central differences see a flat loss: it rounds away changes this small (a saturated "
                   "softmax?), while the exact oracles and the backward agree")
        elif numeric_apart:
            why = "the forward may differ between numpy and the exact oracle's arrays, or round coarsely there"
        else:
            why = "two exact oracles differentiate the forward differently (a library's gradient convention?)"
        values = " vs ".join(
            f"{o} {fmt(v, 6)}" + (f" (+-{fmt(d.errors[o], 1)})" if o in d.errors else "") for o, v in d.values.items()
        )
        lines.append(
            f"  oracles disagree at {len(result.disagreements)} element(s), e.g. "
            f"{index_str(d.input, d.index, d.part)}: {values}: {why}"
        )
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.second_order is not None:
        nested = result_lines(result.second_order, max_elements)
        head = nested[0].removeprefix("gradcheck ")
        lines.append(f"  second order {head}")
        lines.extend(f"  {line}" for line in nested[1:])
    return lines


# --- the pytest run: header and summary -----------------------------------------------------
