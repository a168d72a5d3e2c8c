"""What oracles return: estimates as values.

* ``Estimate``: an exact oracle's gradients (automatic differentiation of the forward as
  written: exact up to rounding), with the forward's output on that oracle's arrays.
* ``NumericEstimate``: the numeric oracle's gradient of one input with its error estimate, the
  kinks it found and the one-sided slopes there.
* ``Unavailable``: why an oracle did not run.

Plain frozen data; no oracle is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "NumericEstimate", "Unavailable"]


@dataclass(frozen=True)
class Estimate:
    """An exact oracle's gradients at one point.

    Attributes:
        oracle: the oracle's name.
        gradients: input name -> float64 gradient, shaped like the input.
        output: the forward's output on the oracle's arrays, as float64 numpy.
    """

    oracle: str
    gradients: Mapping[str, np.ndarray]
    output: np.ndarray


@dataclass(frozen=True)
class Unavailable:
    """Why an oracle did not run: ``reason`` in one line of our words, ``error`` the original
    exception (with file and line) where there was one."""

    oracle: str
    reason: str
    error: str = ""


@dataclass(frozen=True)
class NumericEstimate:
    """The numeric oracle's estimate of one input's gradient (flat arrays of length ``n``).

    Attributes:
        gradient: the estimate (central difference, Richardson-refined where suspect);
            NaN where the forward failed.
        error: its error estimate.
        kink: True where the function is not differentiable along that coordinate.
        left, right: the one-sided slopes at kinks (NaN elsewhere).
        low, high: at kinks, the range a correct gradient may take: every one-sided slope
            measured within ``2h`` on either side lies in it (NaN elsewhere).
    """

    gradient: np.ndarray
    error: np.ndarray
    kink: np.ndarray
    left: np.ndarray
    right: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def missing(cls, n: int) -> NumericEstimate:
        """No numeric estimate for ``n`` elements (all NaN: nothing is compared with it)."""
        nan = np.full(n, np.nan)
        return cls(nan, nan, np.zeros(n, dtype=bool), nan, nan, nan, nan)

    @classmethod
    def exact(cls, gradient: np.ndarray) -> NumericEstimate:
        """A gradient known exactly (no kinks, no error): zeros for an empty output."""
        g = np.asarray(gradient, dtype=np.float64).reshape(-1)
        nan = np.full(g.shape, np.nan)
        return cls(g, np.zeros(g.shape), np.zeros(g.shape, dtype=bool), nan, nan, nan, nan)
