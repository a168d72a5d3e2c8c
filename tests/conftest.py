"""Shared test configuration.

* ``pytester`` runs the pytest plugin in a fresh session, as pytest would.
* Hypothesis profiles, chosen by the ``HYPOTHESIS_PROFILE`` environment variable: ``default``
  (Hypothesis's own), ``ci`` (fewer examples, no deadline) and ``thorough`` (many examples).
"""

import os

from hypothesis import settings

pytest_plugins = ["pytester"]

settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
