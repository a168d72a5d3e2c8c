"""The analytic gradient computed again at the point, and what such reruns found.

The checks of custom ops (``repeats``, ``layouts``, ``upstream``) call the backward again: at
the same upstream gradient (is it deterministic?), on tensors of other strides (does it assume
a layout?) and at structured upstream gradients (does it read ``dout`` whole?). ``Backprop`` is
that call, for a numpy-API backward or (``backward=None``) torch autograd; ``Findings`` is
what a rerun check adds to the result; ``reordering`` is the rounding two computations of the
same gradient may differ by (``tolerance.reorder_limit``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck.analytic import call_backward
from gradcheck.estimates import Unavailable
from gradcheck.inputs import PreparedInputs
from gradcheck.numeric import element_scale
from gradcheck.point import Fault, Point, reference_scales
from gradcheck.precision import gradient_dtype
from gradcheck.result import Diagnosis, Mismatch
from gradcheck.tolerance import dtype_eps, reorder_limit, torch_rounding
from gradcheck.torch_oracle import TORCH

__all__ = ["Backprop", "Findings", "gradient_eps", "reordering", "torch_given"]


@dataclass(frozen=True)
class Backprop:
    """The analytic gradient of a check, computable at any upstream gradient.

    ``backward`` is the numpy-API backward (called as the check calls it), or None for torch
    autograd of ``forward`` on tensors in the caller's dtypes (as the check's own gradient)."""

    forward: Callable[..., Any]
    backward: Callable[..., Any] | None
    prepared: PreparedInputs
    names: tuple[str, ...]
    known: tuple[str, ...] = ()  # the faults the check's own call found: not found again

    def at(self, dout: np.ndarray | float) -> dict[str, np.ndarray]:
        """The gradients at upstream gradient ``dout``; raises ``Fault`` where the backward
        raises or returns something unusable (beyond the ``known`` faults)."""
        if self.backward is not None:
            gradients, faults = call_backward(self.backward, self.prepared, self.names, dout)
            new = [f for f in faults if f not in self.known]
            if new:
                raise Fault(new[0])
            return gradients
        found = TORCH.gradients(self.forward, self.prepared.values, self.names, dout,
                                dtypes=self.prepared.dtype_names)
        if isinstance(found, Unavailable):
            raise Fault(f"autograd failed: {found.error or found.reason}")
        return {n: np.asarray(g, dtype=np.float64) for n, g in found.gradients.items()}


@dataclass
class Findings:
    """What a rerun check found: mismatches (with the inputs they belong to), the likely bug per
    input, faults and notes."""

    mismatches: list[Mismatch] = field(default_factory=list)
    diagnoses: dict[str, Diagnosis] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: Findings) -> None:
        self.mismatches += other.mismatches
        self.diagnoses.update(other.diagnoses)
        self.faults += [f for f in other.faults if f not in self.faults]
        self.notes += [n for n in other.notes if n not in self.notes]


def gradient_eps(prepared: PreparedInputs, name: str, gradient: np.ndarray, *, on_torch: bool) -> float:
    """The roundoff of a gradient's computation: autograd's (``on_torch``) in the input's dtype,
    else the lower precision of the input and the gradient the backward returned."""
    return dtype_eps(gradient_dtype(prepared, name, gradient, autograd=on_torch))


def reordering(
    point: Point, prepared: PreparedInputs, names: tuple[str, ...], gradients: Mapping[str, np.ndarray],
    sigma: float, *, on_torch: bool, spread: Mapping[str, float] | None = None,
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Per input, the limit (``tolerance.reorder_limit``) a recomputation of its gradient is held
    to, as a function of the reference gradient (flat): a reordered sum of the same terms, at
    the point's rounding (the forward's noise ``sigma``, the terms' sizes), plus the ``spread``
    its repeated runs showed (a nondeterministic backward's)."""
    # Computed when first asked for: most checks never ask (their runs agree bit for bit).
    scales: list[float] = []

    def sensitivity() -> float:
        if not scales:
            scales.append(reference_scales(gradients, names, prepared.widened, point.value)[1])
        return scales[0]

    limits = {}
    for name in names:
        if name not in gradients:
            continue
        eps = gradient_eps(prepared, name, gradients[name], on_torch=on_torch)
        limits[name] = _limit(point, sensitivity, sigma, prepared.widened[name], (spread or {}).get(name, 0.0), eps)
    return limits


def _limit(point: Point, sensitivity: Callable[[], float], sigma: float, x: np.ndarray, spread: float,
           eps: float) -> Callable[[np.ndarray], np.ndarray]:
    def limit(reference: np.ndarray) -> np.ndarray:
        # The rounding of the terms summed, at the gradient's own roundoff (float32 sums of many
        # terms that cancel move by far more than ulps of their result).
        dout_size = float(np.max(np.abs(point.dout), initial=0.0))
        rounding = torch_rounding(sigma, eps=max(point.eps, eps), sensitivity=sensitivity(), dout_size=dout_size,
                                  xscale=element_scale(x.reshape(-1)))
        return np.asarray(reorder_limit(reference, rounding + spread, eps=eps))

    return limit


def torch_given(inputs: Any) -> bool:
    """Whether the caller passed any input as a torch tensor."""
    return isinstance(inputs, Mapping) and any(type(v).__module__.startswith("torch") for v in inputs.values())
