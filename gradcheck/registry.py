"""Where cases come from: modules register them, the report and plugin read them.

A module registers its cases with ``gradcheck.register(case, ...)`` at import time. Installed
packages advertise such modules under the entry point group ``gradcheck.cases`` (the value is a
module name); ``load_entry_points()`` imports them. ``load_module("pkg.mod")`` (or
``load_module("path/to/cases.py")``) imports one module and returns the cases it registered.
gradcheck itself never imports a case module by name.
"""

from __future__ import annotations

import importlib
import os
import site
import sys
import sysconfig
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from gradcheck.case import Case
from gradcheck.errors import GradcheckError

__all__ = ["ENTRY_POINT_GROUP", "CaseModuleError", "all_cases", "is_path", "load_entry_points", "load_module",
           "register", "user_location"]

ENTRY_POINT_GROUP = "gradcheck.cases"


class CaseModuleError(GradcheckError):
    """A case module failed to import (misuse); the import's exception is ``__cause__``."""


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


def is_path(spec: str) -> bool:
    """``spec`` names a file or folder (``cases.py``, ``path/to/cases``), not a dotted module."""
    return spec.endswith(".py") or any(sep and sep in spec for sep in (os.sep, os.altsep))


def _name_from_path(spec: str) -> str:
    """Make the module at path ``spec`` importable (its folder first on sys.path); its name.

    Raises:
        GradcheckError: no such ``.py`` file or package folder, or another module of that name
            is already imported.
    """
    path = Path(spec).resolve()
    if path.is_dir() and (path / "__init__.py").is_file():
        name, file = path.name, path / "__init__.py"
    elif path.is_file() and path.suffix == ".py":
        name, file = path.stem, path
    else:
        raise GradcheckError(f"case module {spec!r} is neither a .py file nor a package folder")
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != file:
        raise GradcheckError(
            f"case module {spec!r}: a module named {name!r} is already imported from "
            f"{getattr(loaded, '__file__', None) or 'elsewhere'}; rename the file"
        )
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return name


def _library_dirs() -> tuple[str, ...]:
    """Folders whose code is not the user's: the standard library, installed packages, gradcheck."""
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.update(site.getsitepackages())
    found.add(site.getusersitepackages())
    found.add(str(Path(__file__).parent))
    return tuple(os.path.join(os.path.realpath(p), "") for p in found if p)


def _shown_path(filename: str) -> str:
    """``filename`` relative to the current directory when under it, else as it is."""
    relative = os.path.relpath(filename) if os.path.isabs(filename) else filename
    return filename if relative.startswith("..") else relative


def user_location(exc: BaseException) -> str | None:
    """``path:line`` where ``exc`` arose in the user's code: the innermost frame outside the
    standard library, installed packages and gradcheck (the innermost frame when there is none),
    or the place of a syntax error; None when unknown."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return _shown_path(exc.filename) + (f":{exc.lineno}" if exc.lineno else "")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    library = _library_dirs()
    user = [f for f in frames if not os.path.realpath(f.filename).startswith(library)]
    chosen = (user or frames)[-1:]
    return f"{_shown_path(chosen[0].filename)}:{chosen[0].lineno}" if chosen else None


def _import_failure(name: str, exc: Exception) -> str:
    """One line: what failed to import, why, and where in the user's code."""
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    message = " ".join(str(message).split())  # one line
    where = user_location(exc)
    return (f"could not import case module {name!r}: {type(exc).__name__}: {message}"
            + (f" (at {where})" if where else ""))


def load_module(spec: str) -> list[Case]:
    """Import a module and return the cases registered by it or its submodules.

    Args:
        spec: a dotted module name (``mypkg.cases``, found on ``sys.path``) or the path of a
            ``.py`` file or package folder (``path/to/cases.py``: imported under its file name,
            with its folder put first on ``sys.path``).
    Raises:
        GradcheckError: no such file, the module cannot be imported (the message says why and
            where in the user's code; the import's exception is its ``__cause__``), or it
            registers no case.
    """
    if not isinstance(spec, str) or not spec:
        raise GradcheckError(f"module name must be a non-empty string, got {spec!r}")
    name = _name_from_path(spec) if is_path(spec) else spec
    try:
        importlib.import_module(name)
    except Exception as exc:  # any import failure is the user's module, reported as misuse
        raise CaseModuleError(_import_failure(name, exc)) from exc
    found = [c for c, origin in _REGISTRY.values() if origin == name or origin.startswith(name + ".")]
    if not found:
        raise GradcheckError(
            f"module {spec!r} registered no cases (call gradcheck.register(...) at import time)"
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
