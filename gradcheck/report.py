"""Results -> lines of text. No numerics here: only formatting of what the engine found.

* ``result_lines`` (from ``render``): the report of one check (``str(result)``, a
  ``GradientMismatch``).
* ``header_lines`` and ``summary_lines``: the pytest run's header and terminal summary, from
  the run's settings and a ``Tally`` per test; the plugin's hooks only print them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gradcheck.render import fmt, index_str, result_lines
from gradcheck.result import CheckResult
from gradcheck.worst import track_worst, worse

if TYPE_CHECKING:
    from gradcheck.options import Settings

__all__ = ["Tally", "fmt", "header_lines", "index_str", "result_lines", "summary_lines"]

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
            self.kink = index_str(result.kinks[0].input, result.kinks[0].index, result.kinks[0].part)
        track_worst(self, result)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        return cls(**data)


def header_lines(settings: Settings) -> list[str]:
    """The pytest header: the seed first, so that any failure can be replayed."""
    rtol = "per dtype" if settings.rtol is None else f"{settings.rtol:g}"
    atol = "scaled floor" if settings.atol is None else f"{settings.atol:g}"
    order = "" if settings.order == 1 else f", order {settings.order} where a check can"
    return [
        f"gradcheck: seed {settings.seed} (replay with --gradcheck-seed {settings.seed}), "
        f"examples {settings.examples}, rtol {rtol}, atol {atol}{order}"
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
