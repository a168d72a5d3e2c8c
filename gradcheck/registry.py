"""Where cases come from: modules register them, the report and plugin read them.

A module registers its cases with ``gradcheck.register(case, ...)`` at import time. Installed
packages advertise such modules under the entry point group ``gradcheck.cases`` (the value is a
module name); ``load_entry_points()`` imports them. ``load_module("pkg.mod")`` imports one module
and returns the cases it registered. gradcheck itself never imports a case module by name.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

from gradcheck.case import Case
from gradcheck.errors import GradcheckError

__all__ = ["ENTRY_POINT_GROUP", "all_cases", "load_entry_points", "load_module", "register"]

ENTRY_POINT_GROUP = "gradcheck.cases"

# name -> (case, module that registered it)
_REGISTRY: dict[str, tuple[Case, str]] = {}


def register(*cases: Case) -> None:
    """Register cases under their names; the calling module is recorded as their origin.

    Raises:
        GradcheckError: an argument is not a Case, or a different case already uses the name
            from another module.
    """
    origin = sys._getframe(1).f_globals.get("__name__", "?")
    for case in cases:
        if not isinstance(case, Case):
            raise GradcheckError(f"register() takes Case objects, got {case!r}")
        known = _REGISTRY.get(case.name)
        if known is not None and known[1] != origin:
            raise GradcheckError(
                f"case name {case.name!r} is registered twice: by {known[1]!r} and by {origin!r}"
            )
        _REGISTRY[case.name] = (case, origin)


def all_cases() -> list[Case]:
    """Every registered case, in registration order."""
    return [case for case, _ in _REGISTRY.values()]


def load_module(name: str) -> list[Case]:
    """Import module ``name`` and return the cases registered by it or its submodules.

    Raises:
        GradcheckError: the module cannot be imported (the message says why), or it registers
            no case.
    """
    if not isinstance(name, str) or not name:
        raise GradcheckError(f"module name must be a non-empty string, got {name!r}")
    try:
        importlib.import_module(name)
    except Exception as exc:  # any import failure is the user's module, reported as misuse
        raise GradcheckError(
            f"could not import case module {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    found = [c for c, origin in _REGISTRY.values() if origin == name or origin.startswith(name + ".")]
    if not found:
        raise GradcheckError(
            f"module {name!r} registered no cases (call gradcheck.register(...) at import time)"
        )
    return found


def load_entry_points() -> list[Case]:
    """Import every module advertised under the ``gradcheck.cases`` entry point group.

    Returns all registered cases afterwards.

    Raises:
        GradcheckError: an advertised module fails to import.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        load_module(ep.value.split(":")[0])
    return all_cases()
