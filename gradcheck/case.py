"""Case: one forward pass with its hand-written backward, as data the harness can run.

A case bundles everything needed to check a backward pass on many inputs:

* ``forward(**inputs)`` returns a float, a 0-d array or an array. Written against the array API
  (``xp = array_api_compat.array_namespace(...)``) it also runs on torch tensors, which gives the
  torch oracle; numpy-only forwards are checked against the numeric oracle alone.
* ``backward(dout, **inputs)`` returns a dict mapping each checked input name to its gradient,
  with that input's shape. ``dout`` has the forward's output shape (``1.0`` for a scalar loss).
  ``None`` means "the gradient is whatever torch autograd computes for ``forward``" (for custom
  ``torch.autograd.Function``\\ s and modules).
* ``inputs`` is a Hypothesis strategy drawing a dict ``name -> array or number``, or a dict
  ``name -> strategy`` (drawn as ``st.fixed_dictionaries``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
        wrt: names of the inputs to check; ``None`` checks every floating input.
        description: one line for reports.
        family: the group the case belongs to (e.g. ``"gates"``), for reports.
        bug: for a known-buggy gallery variant, a one-line description of the mistake;
            ``None`` for a correct case.
        expected_diagnosis: for gallery variants, the diagnosis kind the harness should name
            (see ``gradcheck.diagnose``), or ``None`` when no simple pattern is expected.
        points: fixed inputs (e.g. published worked examples) checked before drawn ones.
        layers: input names ordered from the first layer to the last, for cases whose
            gradient size per layer is worth plotting (vanishing/exploding gradients).
        tags: free-form labels.
    """

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Mapping[str, Any]] | None
    inputs: Any
    wrt: tuple[str, ...] | None = None
    description: str = ""
    family: str = ""
    bug: str | None = None
    expected_diagnosis: str | None = None
    points: tuple[Mapping[str, Any], ...] = ()
    layers: tuple[str, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise GradcheckError(f"Case name must be a non-empty string, got name={self.name!r}")
        if not callable(self.forward):
            raise GradcheckError(
                f"Case {self.name!r}: forward must be callable, got forward={self.forward!r}"
            )
        if self.backward is not None and not callable(self.backward):
            raise GradcheckError(
                f"Case {self.name!r}: backward must be callable or None, "
                f"got backward={self.backward!r}"
            )
        object.__setattr__(self, "inputs", _input_strategy(self.name, self.inputs))
        if self.wrt is not None:
            if isinstance(self.wrt, str) or not isinstance(self.wrt, tuple | list) or not all(
                isinstance(w, str) for w in self.wrt
            ):
                raise GradcheckError(
                    f"Case {self.name!r}: wrt must be a tuple of input names, got wrt={self.wrt!r}"
                )
            object.__setattr__(self, "wrt", tuple(self.wrt))
        for i, point in enumerate(self.points):
            if not isinstance(point, Mapping):
                raise GradcheckError(
                    f"Case {self.name!r}: points[{i}] must be a mapping of inputs, got {point!r}"
                )
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "tags", frozenset(self.tags))

    @property
    def is_gallery(self) -> bool:
        """True for a known-buggy variant, which the harness is expected to flag."""
        return self.bug is not None


def _input_strategy(name: str, inputs: Any) -> Any:
    """``inputs`` as a strategy: itself, or ``st.fixed_dictionaries`` of a dict of strategies.

    Raises:
        GradcheckError: ``inputs`` is neither (the message names the entries that are not
            strategies).
    """
    from hypothesis import strategies as st

    if isinstance(inputs, st.SearchStrategy):
        return inputs
    expected = (f"Case {name!r}: inputs must be a Hypothesis strategy drawing a dict of inputs, "
                f"or a dict of strategies {{name: strategy}}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise GradcheckError(f"{expected}; got inputs={inputs!r}")
    keys = [k for k in inputs if not isinstance(k, str)]
    if keys:
        raise GradcheckError(f"{expected}; got inputs with non-string names {keys!r}")
    fixed = [k for k, v in inputs.items() if not isinstance(v, st.SearchStrategy)]
    if fixed:
        raise GradcheckError(
            f"{expected}; got inputs={inputs!r}, where {', '.join(map(repr, fixed))} "
            f"{'is' if len(fixed) == 1 else 'are'} not a strategy (st.just(value) holds a "
            f"value fixed)"
        )
    return st.fixed_dictionaries(dict(inputs))
