"""Options, each validated once where it is made (by ``gradcheck.validation``).

* ``CheckOptions``: the keyword options of one check (``check_gradients``'s ``wrt``, ``seed``,
  ``rtol``, ``atol``, ``mode``, ``progress``, ``oracles``, ``deterministic``), passed as one
  value from the public functions, the fixture, ``gradient_test`` and the runner to the check.
* ``Settings``: the settings of a run (seed, examples, tolerances), defined once for the command
  line and the pytest plugin. ``OPTIONS`` describes each as a flag (name, type, default, help):
  the CLI adds them as ``--seed`` etc., the pytest plugin as ``--gradcheck-seed`` etc.; both
  turn the parsed values into ``Settings``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from gradcheck import validation
from gradcheck.errors import GradcheckError

if TYPE_CHECKING:
    from gradcheck.progress import Progress

__all__ = ["DEFAULT_EXAMPLES", "OPTIONS", "CheckOptions", "Option", "Settings", "order_of", "run_options"]

DEFAULT_EXAMPLES = 25


@dataclass(frozen=True)
class CheckOptions:
    """The options of one check, validated when made (``GradcheckError`` on a bad value).

    Attributes:
        wrt: the names of the inputs to check (a tuple; one name is made a 1-tuple), or None
            for every floating input.
        seed: seed for the upstream gradient and the noise probe (an ``int`` >= 0).
        rtol, atol: tolerances overriding the per-dtype defaults; None keeps the default.
        mode: "auto", "full" or "directional".
        progress: None, True, False or a callable receiving ``Progress`` updates.
        oracles: the exact oracles to run, by name (a tuple), or None for the default
            (``gradcheck.oracles.DEFAULT_ORACLES``); whether each is an oracle is for the
            registry to say.
        deterministic: True makes any difference between repeated runs of the forward or the
            backward at the point a fault; False allows rounding-level differences (reported).
        jvp: forward mode: None or False (not checked), True (torch's forward-mode AD, with
            ``backward=None``) or a hand-written ``jvp(tangents, **inputs)``.
        order: 1 checks first derivatives; 2 second derivatives as well (see
            ``gradcheck.second_order``).
        hvp: ``hvp(vectors, **inputs) -> {name: H v}``, a hand-written Hessian-vector product
            checked at ``order=2``, or None.
        reference: a differentiable torch function of the same inputs, the slow and obviously
            right version of the forward (``gradcheck.reference_oracle``), or None.
        reference_factor: how many times the reference's own error in a low dtype the forward
            may make (None: ``tolerance.LOW_PRECISION_FACTOR``); only with a reference.
        paths: execution paths whose gradients are compared with eager's
            (``validation.PATHS``; a tuple), or None.
    """

    wrt: str | Iterable[str] | None = None
    seed: int = 0
    rtol: float | None = None
    atol: float | None = None
    mode: str = "auto"
    progress: bool | Callable[[Progress], Any] | None = None
    oracles: Iterable[str] | None = None
    deterministic: bool = False
    jvp: Callable[..., Any] | bool | None = None
    order: int = 1
    hvp: Callable[..., Any] | None = None
    reference: Callable[..., Any] | None = None
    reference_factor: float | None = None
    paths: Iterable[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "wrt", validation.wrt(self.wrt))
        object.__setattr__(self, "seed", validation.seed(self.seed))
        validation.tolerance("rtol", self.rtol)
        validation.tolerance("atol", self.atol)
        validation.mode(self.mode)
        validation.progress(self.progress)
        object.__setattr__(self, "oracles", validation.names("oracles", self.oracles, empty_ok=True))
        validation.flag("deterministic", self.deterministic)
        validation.jvp(self.jvp)
        object.__setattr__(self, "order", validation.order(self.order))
        validation.function("hvp", self.hvp, none_ok=True)
        validation.second_order_needs(self.order, self.hvp)
        validation.function("reference", self.reference, none_ok=True)
        validation.factor("reference_factor", self.reference_factor)
        if self.reference_factor is not None and self.reference is None:
            raise GradcheckError(
                f"reference_factor={self.reference_factor!r} scales a reference's error: pass reference= too"
            )
        object.__setattr__(self, "paths", validation.paths(self.paths))


@dataclass(frozen=True)
class Option:
    """One run setting as a command-line flag."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    metavar: str
    show: Callable[[Any], str] = repr  # the value as the flag's argument (a replay command)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (``torch,jax``) as a tuple."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


OPTIONS: tuple[Option, ...] = (
    Option("seed", int, 0, "seed for drawn examples and random upstream gradients (printed; "
           "rerun with it to replay a failure)", "N"),
    Option("examples", int, DEFAULT_EXAMPLES, "Hypothesis examples drawn per case", "N"),
    Option("rtol", float, None, "relative tolerance (default: per dtype; float64 flags a "
           "relative error of 1e-6)", "X"),
    Option("atol", float, None, "absolute tolerance (default: a floor scaled to each input's "
           "largest gradient)", "X"),
    Option("oracles", _names, None, "exact oracles beside the numeric one, comma-separated: torch, "
           "jax (the jax extra); default torch", "NAMES", show=",".join),
    Option("order", int, 1, "2 checks second derivatives too where a check can (a torch callable's "
           "double backward, a case with an hvp)", "N"),
)


@dataclass(frozen=True)
class Settings:
    """Validated run settings: seed >= 0, examples >= 1, tolerances None or finite >= 0, the
    exact oracles by name (None: the default), the derivative order (1 or 2; see ``order_of``)."""

    seed: int = 0
    examples: int = DEFAULT_EXAMPLES
    rtol: float | None = None
    atol: float | None = None
    oracles: tuple[str, ...] | None = None
    order: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", validation.seed(self.seed))
        object.__setattr__(self, "examples", validation.examples(self.examples))
        validation.tolerance("rtol", self.rtol)
        validation.tolerance("atol", self.atol)
        object.__setattr__(self, "oracles", validation.names("oracles", self.oracles, empty_ok=True))
        object.__setattr__(self, "order", validation.order(self.order))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Settings:
        """Settings from parsed option values keyed by option name (missing -> default)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


def run_options(
    settings: Settings,
    *,
    seed: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    oracles: Iterable[str] | None = None,
    **given: Any,
) -> CheckOptions:
    """The options of one check in a run with ``settings``: a seed, tolerance or oracles given
    for the check (not None) win over the run's setting, which wins over the default; the rest
    (``given``: any other ``CheckOptions`` field) are the check's own, the order too
    (``order_of`` applies the run's)."""
    return CheckOptions(
        seed=settings.seed if seed is None else seed,
        rtol=settings.rtol if rtol is None else rtol,
        atol=settings.atol if atol is None else atol,
        oracles=settings.oracles if oracles is None else oracles,
        **given,
    )


def order_of(given: int | None, settings: Settings, *, backward: Callable[..., Any] | None,
             hvp: Callable[..., Any] | None) -> int:
    """The order a check in a run is made at: ``given`` for the check if not None; else the
    run's ``settings.order`` where the check can be made at the second order (a torch callable,
    ``backward=None``, or one with an ``hvp``), and 1 where it cannot (a hand-written backward
    without its Hessian-vector product).

    Raises:
        GradcheckError: ``given`` is not an order.
    """
    if given is not None:
        return validation.order(given)
    return settings.order if backward is None or hvp is not None else 1
