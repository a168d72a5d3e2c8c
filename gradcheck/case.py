"""Case: one forward pass with its hand-written backward, as data the harness can run.

A case bundles everything needed to check a backward pass on many inputs:

* ``forward(**inputs)`` returns a float, a 0-d array or an array, or several of them (a tuple,
  list or dict; see ``gradcheck.outputs``). Written against the array API
  (``xp = array_api_compat.array_namespace(...)``) it also runs on torch tensors, which gives the
  torch oracle; numpy-only forwards are checked against the numeric oracle alone.
* ``backward(dout, **inputs)`` returns a dict mapping each checked input name to its gradient,
  with that input's shape. ``dout`` has the forward's output shape (``1.0`` for a scalar loss).
  ``None`` means "the gradient is whatever torch autograd computes for ``forward``" (for custom
  ``torch.autograd.Function``\\ s and modules).
* ``jvp(tangents, **inputs)`` (optional) returns the output's tangent along ``tangents`` (name ->
  array shaped like each checked input): the case's forward mode, checked beside the backward
  (``True`` with ``backward=None``: torch's forward-mode AD).
* ``inputs`` is a Hypothesis strategy drawing a dict ``name -> array or number``, or a dict
  ``name -> strategy`` (drawn as ``st.fixed_dictionaries``).
* ``hvp(vectors, **inputs)`` (optional, with ``order=2``) returns the Hessian-vector product of
  a scalar forward: ``vectors`` maps each checked input to an array shaped like it, and the
  result maps each checked input to ``(H v)`` for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcheck import validation
from gradcheck.errors import GradcheckError

__all__ = ["Case"]


@dataclass(frozen=True)
class Case:
    """A named forward/backward pair and the inputs to check it on.

    Attributes:
        name: unique, e.g. ``"twolayer.softmax_net"``; used by ``--case`` patterns.
        forward: ``forward(**inputs) -> float | array``.
        backward: ``backward(dout, **inputs) -> {name: gradient}``, or ``None`` for autograd.
        inputs: Hypothesis strategy of ``dict[str, array | number]``; a dict of strategies
            ``{name: strategy}`` is taken as ``st.fixed_dictionaries`` of it.
        wrt: names of the inputs to check (one name, or a sequence of them; kept as a tuple);
            ``None`` checks every floating input.
        description: one line for reports.
        family: the group the case belongs to (e.g. ``"gates"``), for reports.
        bug: for a known-buggy gallery variant, a one-line description of the mistake;
            ``None`` for a correct case.
        expected_diagnosis: for gallery variants, the diagnosis kind the harness should name
            (see ``gradcheck.diagnose``), or ``None`` when no simple pattern is expected.
        points: fixed inputs (e.g. published worked examples) checked before drawn ones.
        layers: input names ordered from the first layer to the last, for cases whose
            gradient size per layer is worth plotting (vanishing/exploding gradients).
        jvp: the forward mode to check beside the backward (see ``check_gradients``'s
            ``jvp``): a hand-written ``jvp(tangents, **inputs)``, ``True`` or None.
        order: the derivative order the case is checked at (1 or 2; a run with a higher
            ``--order`` checks the second order too where it can, see ``options.order_of``).
        hvp: ``hvp(vectors, **inputs) -> {name: H v}``, the Hessian-vector product of a scalar
            forward, checked at ``order=2`` (which it needs), or None.

    Raises:
        GradcheckError: a field that breaks its rule in ``gradcheck.validation``; the message
            starts with the case's name.
    """

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Mapping[str, Any]] | None
    inputs: Any
    wrt: str | Sequence[str] | None = None
    description: str = ""
    family: str = ""
    bug: str | None = None
    expected_diagnosis: str | None = None
    points: tuple[Mapping[str, Any], ...] = ()
    layers: tuple[str, ...] = ()
    jvp: Callable[..., Any] | bool | None = None
    order: int = 1
    hvp: Callable[..., Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise GradcheckError(f"Case name must be a non-empty string, got name={self.name!r}")
        try:
            validation.function("forward", self.forward)
            validation.function("backward", self.backward, none_ok=True)
            object.__setattr__(self, "inputs", validation.input_strategy(self.inputs))
            object.__setattr__(self, "wrt", validation.wrt(self.wrt))
            object.__setattr__(self, "points", validation.points(self.points))
            validation.jvp(self.jvp)
            object.__setattr__(self, "order", validation.order(self.order))
            validation.function("hvp", self.hvp, none_ok=True)
            validation.second_order_needs(self.order, self.hvp)
        except GradcheckError as exc:
            raise GradcheckError(f"Case {self.name!r}: {exc}") from None
        object.__setattr__(self, "layers", tuple(self.layers))

    @property
    def is_gallery(self) -> bool:
        """True for a known-buggy variant, which the harness is expected to flag."""
        return self.bug is not None

