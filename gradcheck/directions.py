"""Random +-1 (Rademacher) directions for directional mode, drawn once per check.

Directional mode moves every coordinate of an input along ``v_i = s_i w_i``: random signs
``s_i`` times the element's scale ``w_i`` (``numeric.element_scale``, so that each coordinate
moves in proportion to its own size, as the per-element steps do). With signs rather than
Gaussian factors, ``|v_i| = w_i`` in every direction: an error in any single element shows in
each direction at its full size, which is what lets the check state the smallest such error it
would have caught (``tolerance.detectable_error``). Signs are also cheap: one random bit per
element instead of a float64 normal draw.

``Signs`` draws the ``k``-th sign vector once, at the size of the largest input, and every input
uses its leading elements (inputs are checked one at a time, each along its own directions).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Signs"]


class Signs:
    """The sign vectors of one check: the ``k``-th is drawn from ``(seed, k)`` on first use.

    Args:
        seed: the check's seed; the same seed gives the same signs.
        size: the largest number of signs any input needs.
    """

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = max(int(size), 0)
        self._bits: list[np.ndarray] = []  # packed, one bit per sign

    @property
    def drawn(self) -> int:
        """Sign vectors drawn so far (each once, whatever the inputs)."""
        return len(self._bits)

    def vector(self, k: int, n: int) -> np.ndarray:
        """The first ``n`` signs (float64, each -1.0 or 1.0) of the ``k``-th vector.

        Raises:
            ValueError: ``n`` exceeds the size the signs were drawn for, or ``k`` is negative.
        """
        if k < 0 or not 0 <= n <= self.size:
            raise ValueError(f"sign vector k={k!r} of n={n!r} signs, but signs are drawn for 0 <= n <= {self.size}")
        while len(self._bits) <= k:
            rng = np.random.default_rng([self.seed, 3, len(self._bits)])
            self._bits.append(np.frombuffer(rng.bytes((self.size + 7) // 8), dtype=np.uint8))
        bits = np.unpackbits(self._bits[k], count=n)
        signs = np.multiply(bits, 2.0)
        signs -= 1.0
        return signs
