"""Torch code under test whose backward is whatever autograd runs.

``check_gradients(fn, None, inputs)`` already checks a function of tensors, a custom
``torch.autograd.Function``'s ``apply`` or a module called on its inputs: autograd's gradient is
compared with the numeric oracle in float64. This module adds a module's *parameters* to the
checked inputs::

    forward, inputs = module_forward(layer, {"x": x})   # inputs: x, weight, bias
    gradcheck.assert_gradients(forward, None, inputs)

Parameters become inputs named after the parameter with dots as underscores (``"0.weight"`` ->
``"_0_weight"``, ``"block.proj.bias"`` -> ``"block_proj_bias"``); ``parameter_inputs`` lists
the mapping. Parameters and inputs are copies in their own dtypes (a float32 module is checked in
float32: its forward at the point and autograd's gradient run in float32), so the module and the
caller's tensors are never changed. The module runs in the dtype its floating inputs promote to,
its other floating state (frozen parameters, buffers) included, so the numeric oracle and the
float64 references run the whole module in float64. The module runs in the mode
it is in: dropout in training mode makes the forward nondeterministic, which the check reports
as a fault; call ``module.eval()`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gradcheck.case import Case
from gradcheck.errors import GradcheckError

__all__ = ["module_case", "module_forward", "parameter_inputs"]


def _input_name(parameter: str) -> str:
    name = parameter.replace(".", "_")
    return "_" + name if name[:1].isdigit() else name


def _require_module(module: Any) -> None:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise GradcheckError(f"module must be a torch.nn.Module, got module={module!r:.80}")


def parameter_inputs(module: Any) -> dict[str, str]:
    """Input name -> parameter name, for the module's parameters that require gradients.

    Raises:
        GradcheckError: ``module`` is not a ``torch.nn.Module``, or two parameters map to the
            same input name.
    """
    _require_module(module)
    names: dict[str, str] = {}
    for parameter, value in module.named_parameters():
        if not value.requires_grad:
            continue  # frozen: held constant like a buffer
        name = _input_name(parameter)
        if name in names:
            raise GradcheckError(
                f"parameters {names[name]!r} and {parameter!r} both become input {name!r}"
            )
        names[name] = parameter
    return names


def _copy(value: Any) -> Any:
    """Floating tensors and arrays as tensor copies in their own dtype; anything else unchanged."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(device="cpu", copy=True)
    if isinstance(value, np.ndarray | np.generic) and np.asarray(value).dtype.kind == "f":
        return torch.tensor(np.asarray(value))
    return value


def _working_dtype(inputs: Mapping[str, Any]) -> Any:
    """The dtype the floating tensors among ``inputs`` promote to (None without any)."""
    import torch

    floating = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not floating:
        return None
    dtype = floating[0].dtype
    for v in floating[1:]:
        dtype = torch.promote_types(dtype, v.dtype)
    return dtype


def _functional(module: Any, parameters: bool) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The module as ``forward(**inputs, **parameters)`` and its parameters as inputs (copies in
    their own dtypes)."""
    import torch

    _require_module(module)
    renamed = parameter_inputs(module) if parameters else {}
    held = dict(module.named_parameters()) | dict(module.named_buffers())
    held = {k: _copy(v) for k, v in held.items() if k not in renamed.values()}

    def forward(**inputs: Any) -> Any:
        # The module runs in the dtype its floating inputs promote to (float64 for the oracles),
        # held state included.
        dtype = _working_dtype(inputs)

        def cast(v: Any) -> Any:
            floating = dtype is not None and isinstance(v, torch.Tensor) and v.is_floating_point()
            return v.to(dtype) if floating else v

        state = {k: cast(v) for k, v in held.items()}
        state.update({renamed[n]: cast(inputs[n]) for n in renamed})
        kwargs = {n: cast(v) for n, v in inputs.items() if n not in renamed}
        return torch.func.functional_call(module, state, args=(), kwargs=kwargs)

    forward.__name__ = "forward"
    forward.__qualname__ = f"{type(module).__name__}.forward"
    values = dict(module.named_parameters())
    return forward, {n: _copy(values[p]) for n, p in renamed.items()}


def _merge(inputs: Any, parameters: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(inputs, Mapping):
        raise GradcheckError(
            "inputs must be a mapping of the module's keyword arguments, got "
            f"{type(inputs).__name__}: {inputs!r:.80}"
        )
    clash = sorted(set(inputs) & set(parameters))
    if clash:
        raise GradcheckError(
            f"inputs {clash} have the names of parameters; rename the module's arguments or "
            f"pass parameters=False (parameter inputs: {sorted(parameters)})"
        )
    return {n: _copy(v) for n, v in inputs.items()} | dict(parameters)


def module_forward(
    module: Any, inputs: Mapping[str, Any], *, parameters: bool = True
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A module as a forward of its inputs and parameters, for ``check_gradients(..., None, ...)``.

    Args:
        module: a ``torch.nn.Module``; called through ``torch.func.functional_call``, so its
            own parameters and buffers are neither used nor changed.
        inputs: name -> tensor, array or number, passed to ``module.forward`` as keyword
            arguments (``{"input": x}`` for ``nn.Linear``).
        parameters: add the parameters that require gradients as checked inputs; False holds
            them constant.
    Returns:
        ``(forward, all_inputs)``: ``all_inputs`` holds copies of the floating inputs and
        parameters in their own dtypes (see ``parameter_inputs`` for the names).
    Raises:
        GradcheckError: ``module`` is not a module, ``inputs`` is not a mapping, or an input
            has the name a parameter takes.
    """
    forward, params = _functional(module, parameters)
    return forward, _merge(inputs, params)


def module_case(
    name: str,
    module: Any,
    inputs: Any,
    *,
    wrt: Sequence[str] | None = None,
    description: str = "",
) -> Case:
    """A ``Case`` checking a module with autograd (``backward=None``) on drawn inputs, its
    parameters included at their current values.

    Args:
        name: the case name.
        module: a ``torch.nn.Module``.
        inputs: a Hypothesis strategy drawing the module's keyword arguments.
        wrt: names to check (inputs and parameter input names); None checks all floating ones.
    Raises:
        GradcheckError: as ``module_forward`` and ``Case`` do.
    """
    forward, params = _functional(module, True)
    from hypothesis.strategies import SearchStrategy

    if not isinstance(inputs, SearchStrategy):
        raise GradcheckError(
            f"module_case {name!r}: inputs must be a Hypothesis strategy of the module's "
            f"keyword arguments, got inputs={inputs!r:.80}"
        )
    return Case(
        name=name,
        forward=forward,
        backward=None,
        inputs=inputs.map(lambda drawn: _merge(drawn, params)),
        wrt=None if wrt is None else tuple(wrt),
        description=description or f"{type(module).__name__} by autograd, parameters included",
    )
