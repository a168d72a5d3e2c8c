"""The worst relative error per oracle over many checks (the report's and the plugin's tallies)."""

from __future__ import annotations

import math
from typing import Any

from gradcheck.result import CheckResult

__all__ = ["ORACLES", "track_worst", "worse"]

ORACLES = ("numeric", "torch")


def worse(value: float, than: float | None) -> bool:
    """``value`` is a larger error than ``than`` (None counts as the smallest, NaN as the largest)."""
    if than is None or math.isnan(value):
        return than is None or not math.isnan(than)
    return not math.isnan(than) and value > than


def track_worst(holder: Any, result: CheckResult) -> None:
    """Raise ``holder.worst_<oracle>`` (and ``worst_<oracle>_input``) to the worst input of
    ``result`` where it is worse."""
    for summary in result.inputs:
        for oracle in ORACLES:
            value = getattr(summary, f"worst_{oracle}")
            if value is not None and worse(value, getattr(holder, f"worst_{oracle}")):
                setattr(holder, f"worst_{oracle}", value)
                setattr(holder, f"worst_{oracle}_input", summary.name)
