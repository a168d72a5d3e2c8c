"""Argument validation: one function per rule, one message per rule.

Every entry point (``check_gradients``, ``assert_gradients``, ``numeric_gradient``, the
``gradcheck`` fixture, ``gradient_test``, ``Case``, ``Settings``, the command line, the pytest
plugin's options and the strategies) validates through these functions, so the same bad value
gets the same message wherever it enters. Each message names the argument and quotes its value
(``seed must be a non-negative integer, got seed=-1``); an entry point may put its context in
front (``Case 'twolayer.net': ...``, ``gradcheck: error: ...``) but never rewords the rule.

Each function returns the value in the form the rest of the code uses (``seed`` an ``int``,
``wrt`` a tuple of names) and raises ``GradcheckError`` (a ``ValueError``) otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gradcheck.errors import GradcheckError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "LAYOUTS",
    "MODES",
    "ORDERS",
    "PATHS",
    "complex_dtype",
    "examples",
    "factor",
    "flag",
    "float_dtype",
    "function",
    "input_strategy",
    "integer",
    "jvp",
    "layouts",
    "mode",
    "order",
    "ordered",
    "paths",
    "points",
    "positive_number",
    "progress",
    "second_order_needs",
    "seed",
    "shape",
    "tolerance",
    "wrt",
]

MODES = ("auto", "full", "directional")
# The layouts a torch callable's backward runs under (``gradcheck.layouts``), besides contiguous.
LAYOUTS = ("transposed", "narrowed", "expanded", "channels_last")
ORDERS = (1, 2)  # first derivatives (the backward), and second (the double backward or an hvp)
# Execution paths of a torch callable whose gradients are compared (``gradcheck.paths``).
PATHS = ("eager", "compile", "aot_eager")


def _integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an ``int``: any integral number (a Python or numpy integer, not a bool) of
    at least ``minimum``."""
    if not _integral(value) or value < minimum:
        wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise GradcheckError(f"{name} must be {wanted}, got {name}={value!r}")
    return int(value)


def seed(value: Any) -> int:
    """A seed: an integer >= 0 (``seed must be a non-negative integer, got seed=-1``)."""
    return integer("seed", value, minimum=0)


def examples(value: Any) -> int:
    """A number of examples to draw: an integer >= 1."""
    return integer("examples", value, minimum=1)


def tolerance(name: str, value: Any) -> float | None:
    """``rtol`` or ``atol``: None (the per-dtype default) or a finite number >= 0, kept as given."""
    if value is None:
        return None
    if not _real(value) or not math.isfinite(value) or value < 0:
        raise GradcheckError(f"{name} must be None or a finite number >= 0, got {name}={value!r}")
    return value


def positive_number(name: str, value: Any) -> float:
    """A finite number > 0, kept as given."""
    if not _real(value) or not math.isfinite(value) or value <= 0:
        raise GradcheckError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return value


def ordered(low_name: str, low: Any, high_name: str, high: Any) -> None:
    """Bounds of a range (each validated already): ``low <= high``."""
    if high < low:
        raise GradcheckError(f"{high_name}={high!r} is smaller than {low_name}={low!r}")


def mode(value: Any) -> str:
    """A check's mode: one of ``MODES``."""
    if not isinstance(value, str) or value not in MODES:
        raise GradcheckError(f"mode must be one of {MODES}, got mode={value!r}")
    return value


def order(value: Any) -> int:
    """The derivative order to check: one of ``ORDERS`` (an integral number), as an ``int``."""
    if not _integral(value) or value not in ORDERS:
        raise GradcheckError(
            f"order must be 1 or 2 (first derivatives, or second derivatives as well), got order={value!r}"
        )
    return int(value)


def second_order_needs(order: int, hvp: Any) -> None:
    """An ``hvp`` is checked at the second order: given with ``order=1`` it would be ignored."""
    if hvp is not None and order != 2:
        raise GradcheckError(f"hvp is checked at the second order: pass order=2 with it, got order={order!r}")


def progress(value: Any) -> Any:
    """A check's ``progress``: None, True, False or a callable (receiving ``Progress``)."""
    if value is not None and not isinstance(value, bool) and not callable(value):
        raise GradcheckError(f"progress must be None, True, False or a callable, got progress={value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """A switch: True or False (a bool, not a number or a string)."""
    if not isinstance(value, bool):
        raise GradcheckError(f"{name} must be True or False, got {name}={value!r}")
    return value


def layouts(value: Any) -> tuple[str, ...] | None:
    """The layouts to run a torch callable's backward under: None (every one of ``LAYOUTS``),
    one name or a sequence of them (empty: none), as a tuple."""
    given = names("layouts", value, empty_ok=True)
    unknown = [n for n in given or () if n not in LAYOUTS]
    if unknown:
        raise GradcheckError(f"layouts must name some of {LAYOUTS}, got layouts={value!r}")
    return given


def paths(value: Any) -> tuple[str, ...] | None:
    """Execution paths to compare: None, one of ``PATHS`` or a sequence of distinct ones, as a
    tuple (``()`` and ``("eager",)`` compare nothing beyond the check itself)."""
    given = names("paths", value, empty_ok=True)
    for path in given or ():
        if path not in PATHS:
            raise GradcheckError(f"paths names {path!r}, which is not an execution path (paths: {PATHS})")
    return given


def factor(name: str, value: Any) -> float | None:
    """None (the default) or a finite number > 0, kept as given."""
    return None if value is None else positive_number(name, value)


def function(name: str, value: Any, *, none_ok: bool = False) -> Callable[..., Any] | None:
    """A callable (``forward``, ``backward``); with ``none_ok`` also None."""
    if value is None and none_ok:
        return None
    if not callable(value):
        wanted = "callable or None" if none_ok else "callable"
        raise GradcheckError(f"{name} must be {wanted}, got {name}={value!r}")
    return value


def jvp(value: Any) -> Callable[..., Any] | bool | None:
    """A check's ``jvp``: None or False (forward mode not checked), True (torch's forward-mode AD
    of a torch forward) or a callable ``jvp(tangents, **inputs)``."""
    if value is None or isinstance(value, bool) or callable(value):
        return value
    raise GradcheckError(
        f"jvp must be None, True, False or a callable jvp(tangents, **inputs), got jvp={value!r}"
    )


def wrt(value: Any) -> tuple[str, ...] | None:
    """The names of the inputs to check: None (every floating input), one name, or a non-empty
    sequence of distinct names, as a tuple. Whether the names are inputs is for the inputs to
    say (``inputs.resolve_wrt``)."""
    return names("wrt", value)


def names(name: str, value: Any, *, empty_ok: bool = False) -> tuple[str, ...] | None:
    """None, one name, or a sequence of distinct names (non-empty unless ``empty_ok``), as a
    tuple."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        given = tuple(value)
        if all(isinstance(n, str) for n in given):
            if not given and not empty_ok:
                raise GradcheckError(f"{name}=() names no input to check")
            if len(set(given)) != len(given):
                raise GradcheckError(f"{name} repeats a name: {name}={given!r}")
            return given
    raise GradcheckError(f"{name} must be a name or a sequence of names, got {name}={value!r}")


def input_strategy(value: Any) -> Any:
    """A case's ``inputs``: a Hypothesis strategy drawing a dict of inputs, or a non-empty dict
    of strategies ``{name: strategy}`` (returned as ``st.fixed_dictionaries`` of it)."""
    from hypothesis import strategies as st

    if isinstance(value, st.SearchStrategy):
        return value
    expected = ("inputs must be a Hypothesis strategy drawing a dict of inputs, "
                "or a dict of strategies {name: strategy}")
    if not isinstance(value, Mapping) or not value:
        raise GradcheckError(f"{expected}; got inputs={value!r}")
    keys = [k for k in value if not isinstance(k, str)]
    if keys:
        raise GradcheckError(f"{expected}; got inputs with non-string names {keys!r}")
    fixed = [k for k, v in value.items() if not isinstance(v, st.SearchStrategy)]
    if fixed:
        raise GradcheckError(
            f"{expected}; got inputs={value!r}, where {', '.join(map(repr, fixed))} "
            f"{'is' if len(fixed) == 1 else 'are'} not a strategy (st.just(value) holds a "
            f"value fixed)"
        )
    return st.fixed_dictionaries(dict(value))


def points(value: Any) -> tuple[Mapping[str, Any], ...]:
    """A case's fixed points: a sequence of mappings of inputs, as a tuple."""
    if isinstance(value, Mapping | str) or not isinstance(value, Iterable):
        raise GradcheckError(f"points must be a sequence of mappings of inputs, got points={value!r}")
    value = tuple(value)
    for i, point in enumerate(value):
        if not isinstance(point, Mapping):
            raise GradcheckError(f"points[{i}] must be a mapping of inputs, got {point!r}")
    return value


def float_dtype(value: Any) -> np.dtype:
    """A floating numpy dtype (anything ``np.dtype`` takes), as a ``np.dtype``."""
    import numpy as np

    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "f":
        raise GradcheckError(f"dtype must be a floating dtype, got dtype={value!r}")
    return dtype


def complex_dtype(value: Any) -> np.dtype:
    """complex64 or complex128 (anything ``np.dtype`` takes), as a ``np.dtype``."""
    import numpy as np

    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype not in (np.complex64, np.complex128):
        raise GradcheckError(f"dtype must be complex64 or complex128, got dtype={value!r}")
    return dtype


def shape(value: Any) -> Any:
    """An array shape for a strategy: a tuple, an int, or a strategy of tuples."""
    from hypothesis import strategies as st

    if not isinstance(value, st.SearchStrategy | tuple | int) or isinstance(value, bool):
        raise GradcheckError(f"shape must be a tuple or a strategy of tuples, got shape={value!r}")
    return value
