"""Second order (``order=2``): the first-order gradient checked as a forward of its own.

With ``G(x) = grad sum(dout * f(x))``, the first-order gradient, second derivatives are the
first derivatives of ``G``. So the engine that checks a backward is run again, on ``G`` as the
forward: its vector-Jacobian product with a random upstream ``u`` (the engine draws it, as it
draws ``dout`` for any array output) is compared with central differences of ``G``, with their
error estimates and kinks, element by element or along random directions.

* **A torch callable** (``backward=None``): ``G(x, dout)`` is autograd's gradient of the forward
  and its VJP autograd's double backward (``create_graph=True``), the job of
  ``torch.autograd.gradgradcheck``. ``dout`` is an input of ``G`` too: the derivative with
  respect to the upstream gradient (``J u``, the forward's JVP) is checked with the others.
  Before that, a backward that cannot be differentiated is named (``double_backward_faults``):
  a gradient without a graph (a ``.detach()`` or numpy in a custom ``Function``'s backward,
  whose second derivative would silently be zero), one whose graph reaches neither the inputs
  nor ``dout`` (a backward marked ``once_differentiable``), or a backward that raises when its
  graph is kept or differentiated (numpy on a tensor that requires grad, a tensor changed in
  place).
* **A hand-written Hessian-vector product** (``hvp``, for a scalar forward): ``G`` is the
  (checked) backward and the VJP is ``hvp(u)``; it is compared with central differences of the
  backward and, for a forward written against the array API, torch's double backward (``G`` on
  torch tensors is autograd's gradient of the forward). The backward's Jacobian must be
  symmetric, as a Hessian is: ``u^T J v`` and ``v^T J u``, each measured by central differences
  of the backward along a random direction, are compared (``symmetry_fault``); a backward that
  fails is not the gradient of anything. Where the point sits at a kink of the gradient, torch
  may land on its other side than numpy: an hvp that agrees with the differences but not with
  torch there is an oracle disagreement (``_sides_of_a_kink``).

In mode "auto" the second order checks every element up to ``SECOND_ORDER_FULL_LIMIT``, random
directions beyond; the custom-op checks (repeats, layouts, structured upstream gradients) are
the first order's and are not run on ``G``. The first order is checked first, as always
(``modes`` gains ``"second order"``); the second-order check is the result's ``second_order``, and the result is
ok only when both are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.evaluate import Evaluator, ForwardFailure, describe_exception
from gradcheck.inputs import PreparedInputs, require_signature
from gradcheck.numeric import element_scale, estimate_noise, machine_eps, richardson
from gradcheck.options import CheckOptions
from gradcheck.oracles import DEFAULT_ORACLES
from gradcheck.result import CheckResult, Disagreement
from gradcheck.tolerance import symmetry_limit, symmetry_resolved

__all__ = [
    "NOT_DIFFERENTIABLE",
    "SECOND_ORDER",
    "SECOND_ORDER_FULL_LIMIT",
    "SECOND_ORDER_ORACLES",
    "SYMMETRY_PAIRS",
    "autograd_gradient",
    "backward_gradient",
    "check_second_order",
    "double_backward_faults",
    "hvp_faults",
    "require_second_order",
    "symmetry_fault",
]

Engine = Callable[[Callable[..., Any], Callable[..., Any] | None, Mapping[str, Any], CheckOptions], CheckResult]

NOT_DIFFERENTIABLE = "backward is not differentiable"
SECOND_ORDER = "second order"  # its name among a result's ``modes``
SECOND_ORDER_ORACLES = ("torch",)  # exact oracles of a double backward (jax's would differentiate numpy)
AUTOGRAD_NOTE = "analytic gradients are torch autograd's"  # the first order's note, said by ``checked`` here
SYMMETRY_PAIRS = 2  # random pairs (u, v) along which the backward's Jacobian is held symmetric
# In mode "auto", the second order checks every element up to this many, random directions
# beyond: each element costs two evaluations of the gradient (a forward, a backward and an
# n-sized contraction), so checking every one grows with the square of the size.
SECOND_ORDER_FULL_LIMIT = 2_000


def require_second_order(backward: Callable[..., Any] | None, hvp: Callable[..., Any] | None,
                         prepared: PreparedInputs) -> None:
    """Raise unless the second order can be checked: a hand-written backward needs its ``hvp``,
    and an ``hvp`` must take the inputs (``vectors`` first).

    Raises:
        GradcheckError: either is not so.
    """
    if hvp is None and backward is not None:
        raise GradcheckError(
            "order=2 with a hand-written backward needs hvp=, its Hessian-vector product "
            "(hvp(vectors, **inputs) -> {name: H v}); or pass backward=None to check a torch "
            "forward's double backward"
        )
    if hvp is not None:
        require_signature(hvp, "hvp", tuple(prepared.values), leading=("vectors",))


def check_second_order(
    forward: Callable[..., Any], backward: Callable[..., Any] | None, prepared: PreparedInputs,
    names: tuple[str, ...], options: CheckOptions, first: CheckResult, engine: Engine,
) -> CheckResult:
    """The second order after the first (see the module docstring), as one result.

    Args:
        forward, backward: as for ``check_gradients`` (``forward`` a function: a module was
            made one already).
        prepared: the validated inputs; names: the checked ones.
        options: the check's options, ``order=2`` (``hvp`` is the hand-written product or None).
        first: the first-order check (``require_second_order`` passed before it ran).
        engine: the first-order check that is run on ``G`` (``check._gradient_check``).
    Raises:
        GradcheckError: misuse: an ``hvp`` for a forward that is not scalar, or a forward with
            several outputs (not supported yet).
    """
    hvp = options.hvp
    if first.faults:
        note = "second order not checked: the first order has faults"
        return replace(first, notes=(*first.notes, note))
    if first.outputs:
        raise GradcheckError(
            f"order=2 with several outputs is not supported yet (forward returns {len(first.outputs)}); "
            "check the second order of each output with its own forward"
        )
    if hvp is not None and first.output_shape != ():
        raise GradcheckError(
            f"hvp needs a scalar forward (its Hessian), but forward returns shape {first.output_shape}"
        )
    oracles = tuple(o for o in (DEFAULT_ORACLES if options.oracles is None else options.oracles)
                    if o in SECOND_ORDER_ORACLES)
    size = sum(prepared.values[n].size for n in names) + (math.prod(first.output_shape) if hvp is None else 0)
    mode = options.mode if options.mode != "auto" else ("full" if size <= SECOND_ORDER_FULL_LIMIT else "directional")
    # The jvp is the forward's, checked at the first order: G has none.
    second_options = replace(options, order=1, hvp=None, oracles=oracles, mode=mode, jvp=None)
    if hvp is None:
        second = _double_backward(forward, prepared, names, second_options, engine, first.output_shape)
    else:
        second = _hand_written(forward, backward, hvp, prepared, names, second_options, engine)
    return replace(first, ok=first.ok and second.ok, modes=(*first.modes, SECOND_ORDER), second_order=second)


# --- a torch callable: autograd's double backward ----------------------------------------------


def _dout_name(inputs: Mapping[str, Any]) -> str:
    """``dout``, or ``dout_``, ... where an input has that name."""
    name = "dout"
    while name in inputs:
        name += "_"
    return name


def _double_backward(forward: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...],
                     options: CheckOptions, engine: Engine, shape: tuple[int, ...]) -> CheckResult:
    dout = np.random.default_rng([options.seed, 4]).standard_normal(shape) if shape else np.asarray(1.0)
    # In the narrowest float dtype of the checked inputs, as the forward's output is: its
    # derivatives are computed at that precision and are held to that dtype's rule.
    narrowest = min((prepared.values[n].dtype for n in names if prepared.values[n].dtype.kind == "f"),
                    key=lambda d: d.itemsize, default=np.dtype(np.float64))
    dout = dout.astype(narrowest)
    faults, live = double_backward_faults(forward, prepared.widened, names, dout)
    if faults:
        return CheckResult(ok=False, faults=tuple(faults), seed=options.seed)
    if not live:
        return CheckResult(ok=True, seed=options.seed, notes=(
            "the gradient is identically zero (no checked input moves the output): no second derivative to check",))
    dout_name = _dout_name(prepared.values)
    gradient = autograd_gradient(forward, names, dout_name)
    second = engine(gradient, None, {**prepared.values, dout_name: dout},
                    replace(options, wrt=(*names, dout_name)))
    what = (f"checked: autograd's double backward against central differences of autograd's gradient, "
            f"with respect to {', '.join(names)} and {dout_name} (the upstream gradient)")
    return replace(second, notes=(what, *(n for n in second.notes if not n.startswith(AUTOGRAD_NOTE))))


def _to_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value))


def autograd_gradient(forward: Callable[..., Any], names: tuple[str, ...], dout_name: str | None) -> Callable[..., Any]:
    """``G(**inputs[, dout]) = grad sum(dout * forward(**inputs))`` w.r.t. ``names``, by autograd,
    flattened and concatenated in ``names``' order (``dout`` is 1 when ``dout_name`` is None).

    Called with torch tensors it returns a float64 tensor, differentiable (``create_graph``)
    wherever an input requires a gradient; called with numpy arrays, a numpy array. It refuses
    ``torch.func.vmap`` batches (``evaluate.Vmap``), so its evaluations run one by one."""
    def gradient(**inputs: Any) -> Any:
        import torch

        on_numpy = not any(isinstance(v, torch.Tensor) for v in inputs.values())
        args = {n: _to_tensor(v) for n, v in inputs.items()}
        dout = args.pop(dout_name) if dout_name is not None else 1.0
        outer = any(isinstance(v, torch.Tensor) and v.requires_grad for v in (*args.values(), dout))
        if any(_batched(v) for v in args.values()):
            # torch.func.grad could batch it, but its first call imports torch._dynamo (seconds)
            raise TypeError("autograd's gradient is evaluated one call at a time")
        grads = _autograd_grads(forward, args, names, dout, create_graph=outer)
        flat = torch.cat([
            torch.zeros(args[n].numel(), dtype=torch.float64) if g is None else g.reshape(-1).to(torch.float64)
            for n, g in zip(names, grads, strict=True)
        ])
        return flat.detach().numpy() if on_numpy else flat

    gradient.__name__ = gradient.__qualname__ = "gradient"
    return gradient


def _batched(tensor: Any) -> bool:
    """Whether ``tensor`` is a slice of a ``torch.func.vmap`` batch."""
    import torch

    return bool(torch._C._functorch.is_batchedtensor(tensor))


def _autograd_grads(forward: Callable[..., Any], args: dict[str, Any], names: tuple[str, ...], dout: Any, *,
                    create_graph: bool) -> tuple[Any, ...]:
    import torch

    with torch.enable_grad():
        leaves = {n: args[n] if args[n].requires_grad else args[n].detach().requires_grad_(True) for n in names}
        total = (forward(**{**args, **leaves}).to(torch.float64) * dout).sum()
        return torch.autograd.grad(total, [leaves[n] for n in names], create_graph=create_graph, allow_unused=True)


def double_backward_faults(forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], names: tuple[str, ...],
                           dout: np.ndarray) -> tuple[list[str], list[str]]:
    """Whether autograd can differentiate the forward's gradient: ``(faults, live)``, ``live``
    the names whose gradient has a graph (a gradient that is None or all zeros has none, and
    needs none).

    A gradient that is not zero but has no graph, although it depends on ``dout`` at least,
    comes from a backward that left autograd (a ``.detach()``, a numpy call); one whose double
    backward raises, from a backward marked ``once_differentiable`` or one changing a tensor in
    place. Each is a fault: its second derivative would otherwise read as zero.
    """
    import torch

    from gradcheck.torch_oracle import to_torch

    tensors = {n: to_torch(a, requires_grad=n in names) for n, a in inputs.items()}
    weight = torch.tensor(np.asarray(dout, dtype=np.float64), requires_grad=True)
    try:
        grads = _autograd_grads(forward, tensors, names, weight, create_graph=True)
    except Exception as exc:  # the backward under test fails when its graph is kept
        return [f"{NOT_DIFFERENTIABLE}: autograd's gradient with create_graph=True raised "
                f"{describe_exception(exc)} (a numpy call in the backward?)"], []
    faults, live = [], []
    for name, g in zip(names, grads, strict=True):
        if g is None:
            continue
        if not g.requires_grad:
            if bool(torch.any(g != 0)):
                faults.append(f"{NOT_DIFFERENTIABLE}: the gradient of {name}'s gradient has no graph "
                              "(a .detach() or a numpy call in the backward?)")
            continue
        live.append(name)
    if faults or not live:
        return faults, live
    rng = np.random.default_rng(5)
    wrt = [*(tensors[n] for n in names), weight]
    for name, g in zip(names, grads, strict=True):
        if name not in live:
            continue
        probe = (torch.from_numpy(rng.standard_normal(tuple(g.shape))) * g).sum()
        try:
            found = torch.autograd.grad(probe, wrt, allow_unused=True, retain_graph=True)
        except Exception as exc:  # the double backward under test fails
            faults.append(f"{NOT_DIFFERENTIABLE}: autograd cannot differentiate {name}'s gradient "
                          f"({describe_exception(exc)}; a backward that changes a tensor in place?)")
            continue
        if all(d is None for d in found):  # it depends on dout at least, where autograd sees it
            faults.append(f"{NOT_DIFFERENTIABLE}: {name}'s gradient has a graph that reaches neither the inputs "
                          "nor dout (a backward marked once_differentiable?)")
    return faults, live


# --- a hand-written Hessian-vector product -----------------------------------------------------


def backward_gradient(forward: Callable[..., Any], backward: Callable[..., Any], names: tuple[str, ...]
                      ) -> Callable[..., Any]:
    """``G(**inputs)``: the backward's gradients of a scalar forward (``dout = 1``) flattened and
    concatenated in ``names``' order; on torch tensors, autograd's gradient of the forward (so
    that the torch oracle's VJP of ``G`` is its double backward)."""
    on_torch = autograd_gradient(forward, names, None)

    def gradient(**inputs: Any) -> Any:
        if any(type(v).__module__.startswith("torch") for v in inputs.values()):
            if any(_batched(v) for v in inputs.values()):
                # vmap would difference autograd's gradient: the backward is differenced as written
                raise TypeError("a hand-written backward is evaluated one call at a time")
            return on_torch(**inputs)
        grads = backward(1.0, **inputs)
        return np.concatenate([np.asarray(grads[n], dtype=np.float64).reshape(-1) for n in names])

    gradient.__name__ = gradient.__qualname__ = "backward"
    return gradient


def _split(flat: Any, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A flat vector as one array per input, in ``shapes``' order."""
    flat = np.asarray(flat, dtype=np.float64).reshape(-1)
    out, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = flat[start:start + size].reshape(shape).copy()
        start += size
    return out


def hvp_faults(hvp: Callable[..., Any], prepared: PreparedInputs, names: tuple[str, ...],
               vectors: Mapping[str, np.ndarray]) -> list[str]:
    """What is wrong with what ``hvp(vectors, **inputs)`` returns: not a dict, a product missing,
    of the wrong shape or dtype (it must be floating), or not finite; or hvp raised."""
    args = {n: np.array(a, copy=True) for n, a in prepared.values.items()}
    try:
        returned = hvp({n: v.copy() for n, v in vectors.items()}, **args)
    except Exception as exc:  # a bug in the hvp under test
        return [f"hvp raised {describe_exception(exc)}"]
    if not isinstance(returned, Mapping):
        return [f"hvp returned {type(returned).__name__}, not a dict mapping input names to Hessian-vector products"]
    faults = []
    for name in names:
        if name not in returned or returned[name] is None:
            faults.append(f"hvp returned no product for {name!r} (keys: {list(returned)})")
            continue
        value = returned[name]
        if type(value).__module__.startswith("torch"):
            value = value.detach().cpu().numpy()
        product = np.asarray(value)
        want = prepared.values[name].shape
        if product.dtype.kind != "f":
            faults.append(f"hvp's product for {name!r} has dtype {product.dtype}; a Hessian-vector product is "
                          "real floating")
        elif product.shape != want:
            faults.append(f"hvp's product for {name!r} has shape {product.shape}, but {name!r} has shape {want}")
        elif not np.all(np.isfinite(product)):
            faults.append(f"hvp's product for {name!r} has {int(np.sum(~np.isfinite(product)))} non-finite value(s)")
    return faults


def _hvp_as_backward(hvp: Callable[..., Any], shapes: Mapping[str, tuple[int, ...]]) -> Callable[..., Any]:
    """The hvp as the backward of ``G``: the upstream gradient of ``G`` split into the vectors."""

    def backward(dout: Any, **inputs: Any) -> Any:
        return hvp(_split(dout, shapes), **inputs)

    backward.__name__ = backward.__qualname__ = "hvp"
    return backward


def _hand_written(forward: Callable[..., Any], backward: Callable[..., Any] | None, hvp: Callable[..., Any],
                  prepared: PreparedInputs, names: tuple[str, ...], options: CheckOptions,
                  engine: Engine) -> CheckResult:
    shapes = {n: tuple(prepared.values[n].shape) for n in names}
    rng = np.random.default_rng([options.seed, 4])
    faults = hvp_faults(hvp, prepared, names, {n: rng.standard_normal(s) for n, s in shapes.items()})
    if faults:
        return CheckResult(ok=False, faults=tuple(faults), seed=options.seed)
    if backward is None:
        gradient, source = autograd_gradient(forward, names, None), "autograd's gradient"
    else:
        gradient, source = backward_gradient(forward, backward, names), "the backward"
    second = _sides_of_a_kink(engine(gradient, _hvp_as_backward(hvp, shapes), prepared.values,
                                     replace(options, wrt=names)))
    what = f"checked: hvp against central differences of {source}" + (
        " and torch's double backward" if "torch" in second.oracles else "")
    extra: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # Where central differences of the backward resolve no second derivative (all below their
    # error: a saturated softmax, whose backward rounds 1 - 1e-87 to 1), neither can the test.
    resolved = any(s.worst.get("numeric") is not None for s in second.inputs)
    if backward is not None and not second.faults and resolved:
        found = symmetry_fault(forward, gradient, prepared, names, options.seed)
        extra = () if found is None else (found,)
    elif backward is not None and not second.faults:
        notes = ("symmetry not tested: central differences of the backward resolve no second derivative here",)
    return replace(second, ok=second.ok and not extra, faults=(*second.faults, *extra),
                   notes=(what, *second.notes, *notes))


def _sides_of_a_kink(second: CheckResult) -> CheckResult:
    """Where the gradient has kinks at the point, an hvp that agrees with the backward's central
    differences but not with torch's double backward is an oracle disagreement, not a mismatch:
    numpy and torch may put the point on different sides of a kink (a ReLU input that sums to
    6e-22 with fused multiply-adds and to 0 without), and the second derivatives differ there
    across inputs the differences do not cross (the mixed block of W2 and a unit at its kink)."""
    torch_only = [m for m in second.mismatches if m.against == ("torch",) and not m.tied]
    if not second.kinks or not torch_only or len(torch_only) < len(second.mismatches):
        return second
    apart = tuple(Disagreement(m.input, m.index, dict(m.references), dict(m.errors), m.part) for m in torch_only)
    note = (f"torch's double backward disagrees with the backward's differences at {len(apart)} element(s); the "
            "gradient has kinks at this point, on whose sides numpy and torch may differ")
    inputs = tuple(replace(i, mismatches=0, diagnosis=None) for i in second.inputs)
    return replace(second, ok=not second.faults, mismatches=(), inputs=inputs,
                   disagreements=(*second.disagreements, *apart), notes=(*second.notes, note))


@dataclass(frozen=True)
class _Along:
    """``u^T G`` evaluated at the point and along ``v`` at the steps ``t``, ``2t`` both ways."""

    along: Evaluator
    f0: float
    values: np.ndarray
    step: float
    v: Mapping[str, np.ndarray]
    size: float  # sum |u * G|: the scale of the noise model

    def estimate(self, sigma: float) -> tuple[float, float]:
        """``u^T J v`` (Richardson) and its error with noise ``sigma`` in ``u^T G``."""
        t, values = np.array([self.step]), self.values
        estimate, error, *_ = richardson(self.f0, values[:1], values[1:2], values[2:3], values[3:], t, sigma)
        return float(estimate[0]), float(error[0])

    def noise(self, eps: float, rng: np.random.Generator) -> float:
        """The noise of ``u^T G``, measured as the numeric oracle measures a forward's."""
        return estimate_noise(self.along, tuple(self.v), self.f0, self.size, eps, rng, 1)


def _along(ev: Evaluator, g0: np.ndarray, u: np.ndarray, v: Mapping[str, np.ndarray], eps: float) -> _Along:
    """``u^T G`` along ``v``, for central differences of ``G`` (``_Along.estimate``)."""
    along = ev.derived(dout=u)
    t = eps ** (1.0 / 3.0)
    values = along.direction_values(dict(v), np.array([t, -t, 2 * t, -2 * t]))
    return _Along(along, along.contract(g0), values, t, v, float(np.sum(np.abs(u * g0))))


def symmetry_fault(forward: Callable[..., Any], gradient: Callable[..., Any], prepared: PreparedInputs,
                   names: tuple[str, ...], seed: int) -> str | None:
    """A fault when the Jacobian ``J`` of ``gradient`` (a backward as ``G``) is not symmetric:
    ``u^T J v`` against ``v^T J u`` for ``SYMMETRY_PAIRS`` random pairs of directions scaled to
    the inputs, each measured along its direction with Richardson's error, held to
    ``tolerance.symmetry_limit``; a pair whose measurements are not resolved (a kink crossed:
    ``tolerance.symmetry_resolved``) is passed over. None when it is symmetric, or cannot be
    measured (the forward or the backward fails)."""
    ev = Evaluator(gradient, prepared.widened)
    try:
        loss = Evaluator(forward, prepared.widened).value()
        g0 = ev.output().astype(np.float64).reshape(-1)
    except ForwardFailure:
        return None
    eps = machine_eps(np.dtype(np.float64))
    rng = np.random.default_rng([seed, 5])
    noise_rng = np.random.default_rng([seed, 6])
    for _ in range(SYMMETRY_PAIRS):
        u, v = ({n: rng.standard_normal(prepared.values[n].shape) * element_scale(prepared.widened[n]) for n in names}
                for _ in range(2))
        flat_u = np.concatenate([u[n].reshape(-1) for n in names])
        flat_v = np.concatenate([v[n].reshape(-1) for n in names])
        pair = (_along(ev, g0, flat_u, v, eps), _along(ev, g0, flat_v, u, eps))
        # Judged first without the noise (a tighter limit, an easier resolution: a pass there is
        # a pass with it); the noise is measured, 16 evaluations each, only to confirm a failure.
        for measured in (False, True):
            sigmas = (pair[0].noise(eps, noise_rng), pair[1].noise(eps, noise_rng)) if measured else (0.0, 0.0)
            (ujv, error_ujv), (vju, error_vju) = (p.estimate(sigma) for p, sigma in zip(pair, sigmas, strict=True))
            resolved = symmetry_resolved(ujv, error_ujv) and symmetry_resolved(vju, error_vju)
            limit = symmetry_limit(ujv, vju, error_ujv + error_vju, loss, eps)
            if not resolved or abs(ujv - vju) <= limit:
                break  # a kink crossed or values at the noise (this pair tells nothing), or symmetric
        else:
            return (f"the backward is not the gradient of anything: its Jacobian is not symmetric, as a Hessian "
                    f"is (u^T J v = {ujv:.6g} but v^T J u = {vju:.6g} along random u, v; allowed {limit:.2g})")
    return None
