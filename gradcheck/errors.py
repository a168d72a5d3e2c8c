"""The two ways a check can go wrong, kept apart.

``GradcheckError`` is misuse of the harness (bad arguments); it is a ``ValueError``.
``GradientMismatch`` is a wrong gradient found by ``assert_gradients``; it is an
``AssertionError`` so that pytest shows it as a test failure, and it carries the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradcheck.result import CheckResult

__all__ = ["GradcheckError", "GradientMismatch"]


class GradcheckError(ValueError):
    """The harness was called wrongly: the message names the offending argument and value."""


class GradientMismatch(AssertionError):
    """A backward pass disagreed with the oracles; ``.result`` is the full CheckResult."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        super().__init__(str(result))
