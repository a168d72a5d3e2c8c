"""Hypothesis draws that depend only on the strategy, the seed and the number of examples.

The one driver of Hypothesis (``runner.drive``, for the report and for ``gradient_test``) draws
through ``replayable_draws``, so that a printed seed replays the same examples whatever else is
imported, installed or selected:

* ``settings(examples=..., ...)`` fixes every setting that changes what is drawn (no example
  database, so nothing is reused from or written to ``.hypothesis/`` in the current directory;
  no derandomizing; Hypothesis' own backend) whatever profile the user loaded.
* ``replayable_draws()`` keeps Hypothesis' "local constants" out of the draws. Recent versions
  of Hypothesis sometimes draw number literals found in the source of every imported module it
  considers local (not installed into site-packages, not a test file) and caches them under
  ``.hypothesis/constants``; which modules happen to be imported then changes the examples a seed
  draws. Hypothesis has no setting for this, so while gradcheck draws, its local constants are
  empty: its global constants (0, 1, the float edge cases, ...) are still drawn, a fixed set for
  a given Hypothesis version. Hypothesis versions without local constants are left alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["replayable_draws", "settings"]


def settings(*, examples: int, **options: Any) -> Any:
    """``hypothesis.settings`` for ``examples`` drawn examples with ``options`` (phases, health
    checks, verbosity), every setting that changes the draws fixed."""
    import hypothesis

    return hypothesis.settings(
        max_examples=examples,
        database=None,
        derandomize=False,
        deadline=None,
        backend="hypothesis",
        **options,
    )


@contextmanager
def replayable_draws() -> Iterator[None]:
    """Within the block, Hypothesis draws no constants taken from imported local modules.

    The switch is process-wide (Hypothesis keeps the constants in a module global): a
    Hypothesis test run concurrently in another thread also draws without them meanwhile.
    """
    providers: Any  # a Hypothesis internal, absent from some versions
    try:
        providers = importlib.import_module("hypothesis.internal.conjecture.providers")
    except ImportError:
        providers = None
    collect = getattr(providers, "_get_local_constants", None)
    constants = getattr(providers, "Constants", None)
    if collect is None or constants is None:  # a Hypothesis without local constants
        yield
        return
    empty = constants()
    providers._get_local_constants = lambda: empty
    _forget_cached_constants(providers)
    try:
        yield
    finally:
        providers._get_local_constants = collect
        _forget_cached_constants(providers)


def _forget_cached_constants(providers: Any) -> None:
    """Drop the constants Hypothesis cached per kind of draw, which include the local ones."""
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if cache is not None:
        cache.cache.clear()
