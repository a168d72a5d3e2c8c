"""The worst relative error per oracle over many checks (the report's and the plugin's tallies)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradcheck.result import CheckResult

__all__ = ["WorstAt", "track_worst", "worse"]


@dataclass(frozen=True)
class WorstAt:
    """Where a worst relative error was met.

    Attributes:
        error: the relative error.
        input: the input whose gradient it is in.
        index: the element (``()`` for a 0-d input), or None when the error is not at an element
            (the directional mode's numeric error is along a direction).
        example: the number of the example it was met in (1 for the first one checked), or None
            for a re-check while shrinking a failure.
        inputs: that example's inputs.
    """

    error: float
    input: str
    index: tuple[int, ...] | None
    example: int | None
    inputs: Mapping[str, Any]


def worse(value: float, than: float | None) -> bool:
    """``value`` is a larger error than ``than`` (None counts as the smallest, NaN as the largest)."""
    if than is None or math.isnan(value):
        return than is None or not math.isnan(than)
    return not math.isnan(than) and value > than


def track_worst(holder: Any, result: CheckResult, *, example: int | None = None,
                inputs: Mapping[str, Any] | None = None) -> None:
    """Raise ``holder.worst[oracle]`` (and ``holder.worst_input[oracle]``) to the worst input of
    ``result`` where it is worse, for every oracle; a holder with a ``worst_at`` dict also gets a
    ``WorstAt`` per oracle (``example`` and ``inputs`` say which example ``result`` checked)."""
    where = getattr(holder, "worst_at", None)
    for summary in result.inputs:
        for oracle, value in summary.worst.items():
            if value is not None and worse(value, holder.worst.get(oracle)):
                holder.worst[oracle] = value
                holder.worst_input[oracle] = summary.name
                if where is not None:
                    where[oracle] = WorstAt(value, summary.name, summary.worst_at.get(oracle), example,
                                            inputs if inputs is not None else {})
