"""Exact oracles as plug-ins: automatic differentiation of the forward as written.

An exact oracle runs the forward (written against the array API) on its own arrays in float64 and
differentiates it: its gradient is exact for the forward's arithmetic, so it is held to rounding
only. Each oracle is one module with an object that satisfies ``Oracle``; ``ORACLES`` registers
them in the order they are tried. The numeric oracle (``gradcheck.numeric``) is of another kind:
it estimates, with an error, element by element.

``gradients(forward, inputs, wrt, dout)`` returns an ``Estimate`` (the gradients of
``sum(dout * forward(**inputs))`` and the forward's output on the oracle's arrays) or an
``Unavailable`` that says in one line why not (the package is not installed, the forward is
numpy-only, ...), with the original error kept apart for whoever asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.estimates import Estimate, Unavailable
from gradcheck.jax_oracle import JAX
from gradcheck.tolerance import outputs_differ
from gradcheck.torch_oracle import TORCH

__all__ = ["DEFAULT_ORACLES", "ORACLES", "ExactFound", "Oracle", "choose_oracles", "oracle_named", "run_exact_jvps",
           "run_exact_oracles"]


class Oracle(Protocol):
    """What an exact oracle offers: a name, and gradients or the reason there are none."""

    name: str
    arrays: str  # what the forward runs on there, in words: "torch tensors"

    def gradients(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
        dout: np.ndarray | float, *, dtypes: Mapping[str, str] | None = None,
    ) -> Estimate | Unavailable: ...

    def jvp(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray],
    ) -> Estimate | Unavailable: ...


ORACLES: tuple[Oracle, ...] = (TORCH, JAX)
# Used unless a check names its own: torch is a dependency and cheap per check; jax is an
# optional extra whose eager vjp costs a few milliseconds per check (about as much as a whole
# small check), so it runs when asked for (``oracles=("torch", "jax")``).
DEFAULT_ORACLES = ("torch",)


def choose_oracles(names: Iterable[str] | None) -> tuple[Oracle, ...]:
    """The exact oracles a check runs, in order: ``names`` (validated by ``CheckOptions``; None:
    ``DEFAULT_ORACLES``).

    Raises:
        GradcheckError: a name is not a registered oracle's.
    """
    chosen = DEFAULT_ORACLES if names is None else tuple(names)
    known = [o.name for o in ORACLES]
    for name in chosen:
        if name not in known:
            raise GradcheckError(f"oracles names {name!r}, which is not an oracle (oracles: {known})")
    return tuple(oracle_named(n) for n in chosen)


def oracle_named(name: str) -> Oracle:
    """The registered oracle called ``name``.

    Raises:
        KeyError: no oracle has that name.
    """
    for oracle in ORACLES:
        if oracle.name == name:
            return oracle
    raise KeyError(name)


@dataclass(frozen=True)
class ExactFound:
    """What the chosen exact oracles found at a point.

    Attributes:
        gradients: oracle name -> input name -> float64 gradient, for the oracles that ran, in
            the order chosen.
        notes: one line per reason some did not run (oracles sharing a reason share the line).
        errors: oracle name -> the original error that kept it from running.
    """

    gradients: dict[str, dict[str, np.ndarray]]
    notes: list[str]
    errors: dict[str, str]


def run_exact_oracles(
    chosen: tuple[Oracle, ...], forward: Callable[..., Any], inputs: Mapping[str, np.ndarray],
    names: tuple[str, ...], dout: np.ndarray | float, output: np.ndarray, scale: float,
) -> ExactFound:
    """Run each chosen oracle on the forward at ``inputs`` (float64) with upstream gradient
    ``dout``. An oracle whose forward output differs from the forward's own ``output`` (beyond
    ``tolerance.outputs_differ`` at the loss' ``scale``) is not used: it differentiates another
    function."""
    gradients: dict[str, dict[str, np.ndarray]] = {}
    reasons: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for oracle in chosen:
        found = _usable(oracle.gradients(forward, inputs, names, dout), oracle, output, scale)
        if isinstance(found, Estimate):
            gradients[oracle.name] = dict(found.gradients)
            continue
        reasons.setdefault(found.reason, []).append(found.oracle)
        if found.error:
            errors[found.oracle] = found.error
    notes = [f"{' and '.join(who)} oracle{'s' if len(who) > 1 else ''} not used: {reason}"
             for reason, who in reasons.items()]
    return ExactFound(gradients, notes, errors)


def _usable(found: Estimate | Unavailable, oracle: Oracle, output: np.ndarray, scale: float) -> Estimate | Unavailable:
    """``found``, or why it cannot serve: the forward's output on the oracle's arrays differs from
    its own ``output`` (beyond ``tolerance.outputs_differ`` at ``scale``)."""
    if not isinstance(found, Estimate):
        return found
    gap = np.max(np.abs(found.output - output), initial=0.0) if found.output.shape == output.shape else np.inf
    if not outputs_differ(gap, scale):
        return found
    return Unavailable(oracle.name, f"the forward gives different values on {oracle.arrays} and "
                       f"numpy arrays (largest difference {gap:.3g})")


def run_exact_jvps(
    chosen: tuple[Oracle, ...], forward: Callable[..., Any], inputs: Mapping[str, np.ndarray],
    tangents: Mapping[str, np.ndarray], output: np.ndarray, scale: float,
) -> tuple[dict[str, np.ndarray], dict[str, Unavailable]]:
    """Each chosen oracle's Jacobian-vector product along ``tangents`` (name -> float64 array),
    flat, by oracle name; and why the others did not run."""
    found: dict[str, np.ndarray] = {}
    missing: dict[str, Unavailable] = {}
    for oracle in chosen:
        estimate = _usable(oracle.jvp(forward, inputs, tangents), oracle, output, scale)
        if isinstance(estimate, Estimate):
            found[oracle.name] = np.asarray(estimate.gradients["jvp"], dtype=np.float64).reshape(-1)
        else:
            missing[oracle.name] = estimate
    return found, missing
