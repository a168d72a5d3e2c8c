"""The run settings, defined once for the command line and the pytest plugin.

``OPTIONS`` describes each flag (name, type, default, help). The CLI adds them as ``--seed`` etc.,
the pytest plugin as ``--gradcheck-seed`` etc.; both turn the parsed values into ``Settings``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from gradcheck.errors import GradcheckError

__all__ = ["DEFAULT_EXAMPLES", "OPTIONS", "Option", "Settings"]

DEFAULT_EXAMPLES = 25


@dataclass(frozen=True)
class Option:
    """One run setting as a command-line flag."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    metavar: str


OPTIONS: tuple[Option, ...] = (
    Option("seed", int, 0, "seed for drawn examples and random upstream gradients (printed; "
           "rerun with it to replay a failure)", "N"),
    Option("examples", int, DEFAULT_EXAMPLES, "Hypothesis examples drawn per case", "N"),
    Option("rtol", float, None, "relative tolerance (default: per dtype; float64 flags a "
           "relative error of 1e-6)", "X"),
    Option("atol", float, None, "absolute tolerance (default: a floor scaled to each input's "
           "largest gradient)", "X"),
)


@dataclass(frozen=True)
class Settings:
    """Validated run settings: seed >= 0, examples >= 1, tolerances None or finite >= 0."""

    seed: int = 0
    examples: int = DEFAULT_EXAMPLES
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GradcheckError(f"seed must be a non-negative integer, got seed={self.seed!r}")
        if isinstance(self.examples, bool) or not isinstance(self.examples, int) or self.examples < 1:
            raise GradcheckError(f"examples must be a positive integer, got examples={self.examples!r}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
                raise GradcheckError(f"{name} must be a finite number >= 0, got {name}={value!r}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "Settings":
        """Settings from parsed option values keyed by option name (missing -> default)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})
