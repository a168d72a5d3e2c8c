"""Shared test configuration.

* ``pytester`` runs the pytest plugin in a fresh session, as pytest would.
* Hypothesis profiles, chosen by the ``HYPOTHESIS_PROFILE`` environment variable: ``ci`` (the
  default, as CI runs the suite: the same examples on every run, 25 where a test sets no count
  of its own, no example database and no deadline, which would fail a test for a slow example
  on a busy machine), ``default`` (Hypothesis's own: 100 new examples each run, 200 ms
  deadline) and ``thorough`` (500 new examples each run).
* ``check_clock``: the clock checks time their progress by, under the test's control.
"""

import itertools
import os

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def check_clock(monkeypatch):
    """``check_clock(step)``: checks started afterwards time their progress by a clock that
    advances ``step`` seconds at each reading (0: a stopped clock), so what they show depends on
    how often they read it (a count of events), not on how fast this machine runs them."""
    from gradcheck import progress

    def use(step: float) -> None:
        monkeypatch.setattr(progress, "CLOCK", itertools.count(0.0, step).__next__)

    return use
