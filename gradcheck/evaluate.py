"""Evaluate the forward pass: the one place that calls it and the one perturbation loop.

The checked quantity is the scalar ``L(x) = sum(dout * forward(x))``: for a scalar loss
``dout = 1`` and ``L`` is the loss; for an array output, ``dout`` is a fixed random upstream
gradient and ``grad L`` is the vector-Jacobian product the backward pass computes.

``Evaluator`` keeps one private working copy of every input and perturbs it in place, one
element at a time, restoring it after each call: no whole array is allocated per element. Long
runs of such perturbations of a numpy forward go to worker processes (``parallel``), and every
evaluation is reported to the check's progress tracker (``progress``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gradcheck.parallel import MIN_EVALUATIONS, WorkersFailed, forked_values
from gradcheck.progress import NULL_TRACKER, Tracker

__all__ = [
    "SERIAL",
    "Backend",
    "Evaluator",
    "Forked",
    "ForwardFailure",
    "MultipleOutputs",
    "Serial",
    "Vmap",
    "as_float_array",
    "describe_exception",
    "vmap_evaluator",
    "without_graph",
]


class Backend(Protocol):
    """How an evaluator evaluates a run of single-element perturbations of one input."""

    def values(self, ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray) -> np.ndarray: ...


class ForwardFailure(Exception):
    """The forward under test raised or returned something unusable (a bug, not misuse)."""


class MultipleOutputs(ForwardFailure):
    """The forward returned several outputs (a tuple, list or dict): ``value`` is what it
    returned, ``again`` what a second call at the same point returned (set by the caller that
    makes it); the check goes on with ``gradcheck.outputs``."""

    def __init__(self, value: Any) -> None:
        super().__init__(f"returns a {type(value).__name__} of {len(value)} outputs")
        self.value = value
        self.again: Any = None


def describe_exception(exc: BaseException) -> str:
    """``TypeError: message (file.py:12 in fn)``: the innermost frame of the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return f"{type(exc).__name__}: {exc}{where}"


def as_float_array(value: Any) -> np.ndarray:
    """A forward's output (number, numpy or torch array) as a float64 numpy array.

    Raises:
        ForwardFailure: the value is not numeric.
    """
    if type(value).__module__.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16: float32 holds it exactly
                value = value.to(torch.float32)
            value = value.numpy(force=True)
    try:
        array = np.asarray(value)
    except Exception as exc:  # an exotic object the forward returned
        raise ForwardFailure(f"returned {type(value).__name__}, not an array or number") from exc
    if array.dtype.kind not in "fiu":
        raise ForwardFailure(
            f"returned {type(value).__name__} of dtype {array.dtype}, not a real array or number"
        )
    return array


@dataclass(frozen=True)
class Serial:
    """Backend: perturbations evaluated in this process, one after the other."""

    def values(self, ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        return ev.serial_values(name, flat_index, deltas)


@dataclass(frozen=True)
class Forked:
    """Backend: long runs of perturbations of a numpy forward in ``workers`` forked processes
    (``parallel``), each evaluation taking about ``seconds``; short runs stay in this process."""

    workers: int
    seconds: float

    def values(self, ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        if self.workers > 1 and len(flat_index) >= MIN_EVALUATIONS:
            return forked_values(ev, name, flat_index, deltas, self.workers, self.seconds)
        return ev.serial_values(name, flat_index, deltas)


SERIAL = Serial()


class Evaluator:
    """Calls ``forward`` on private copies of the inputs and contracts the output with ``dout``.

    Args:
        forward: the function under test, called as ``forward(**inputs)``.
        inputs: name -> numpy array; copied into the working set.
        convert: turns the working numpy arrays into what ``forward`` takes (identity for
            numpy forwards; ``torch.from_numpy`` views for torch callables).
        dout: the upstream gradient ``L`` contracts the output with (1.0: the output's sum).
        backend: how runs of single-element perturbations are evaluated (``Serial``,
            ``Forked``, ``Vmap``).
        tracker: told of every evaluation (progress).

    The configuration is fixed at construction; ``derived`` makes an evaluator of the same
    forward at the current working point with some of it changed. Only the working copy moves
    (perturbed and restored), and a backend that fails (a worker process that dies) falls back
    to ``Serial`` with a note.
    """

    def __init__(
        self,
        forward: Callable[..., Any],
        inputs: dict[str, np.ndarray],
        *,
        convert: Callable[[np.ndarray], Any] | None = None,
        dout: np.ndarray | float = 1.0,
        backend: Backend | None = None,
        tracker: Tracker = NULL_TRACKER,
    ) -> None:
        # Row-major copies: ``flat`` views of them are what perturbations write through.
        work = {name: np.array(a, copy=True, order="C") for name, a in inputs.items()}
        self._setup(forward, work, convert=convert, dout=dout, backend=backend, tracker=tracker)

    def _setup(
        self, forward: Callable[..., Any], work: dict[str, np.ndarray], *, convert: Callable[[np.ndarray], Any] | None,
        dout: np.ndarray | float, backend: Backend | None, tracker: Tracker,
    ) -> None:
        self.forward = forward
        self.work = work
        self.convert = convert
        self.dout = dout
        self.backend: Backend = SERIAL if backend is None else backend
        self.tracker = tracker
        self.evaluations = 0
        self.notes: list[str] = []  # what the caller should know of how values were computed
        self._args = self._make_args()

    def derived(self, **changes: Any) -> Evaluator:
        """An evaluator of the same forward at the same working point, with ``changes`` to
        ``dout``, ``backend`` or ``tracker``, and a count of evaluations of its own. It takes
        over this one's working copy (no copy of large inputs is made): use one at a time."""
        settings = {"convert": self.convert, "dout": self.dout, "backend": self.backend, "tracker": self.tracker}
        unknown = set(changes) - set(settings)
        if unknown:
            raise TypeError(f"derived() takes dout, backend and tracker, not {sorted(unknown)}")
        twin = Evaluator.__new__(Evaluator)
        twin._setup(self.forward, self.work, **{**settings, **changes})
        return twin

    def clone(self) -> Evaluator:
        """An evaluator of the same forward and ``dout`` on its own copy of the current working
        point, evaluating in this process (what a worker process runs)."""
        return Evaluator(self.forward, self.work, convert=self.convert, dout=self.dout)

    def _make_args(self) -> dict[str, Any]:
        if self.convert is None:
            return self.work
        return {name: self.convert(a) for name, a in self.work.items()}

    def output(self, args: dict[str, Any] | None = None) -> np.ndarray:
        """``forward(**inputs)`` at the current working point (or at ``args``, the forward's
        arguments), as a float64-compatible array.

        Raises:
            ForwardFailure: the forward raised or returned a non-numeric value.
        """
        try:
            return self._output(self._args if args is None else args)
        finally:
            self.tracker.tick()  # outside the forward's try: a progress callback may abort

    def _output(self, args: dict[str, Any]) -> np.ndarray:
        out = self.call(args)
        if isinstance(out, tuple | list | dict):
            raise MultipleOutputs(out)
        return as_float_array(out)

    def call(self, args: dict[str, Any] | None = None) -> Any:
        """``forward(**inputs)`` at the current working point (or at ``args``, the forward's
        arguments), as the forward returns it.

        Raises:
            ForwardFailure: the forward raised (a ``ForwardFailure`` it raised goes on as it is).
        """
        self.evaluations += 1
        try:
            return self.forward(**(self._args if args is None else args))
        except ForwardFailure:  # a wrapper of the forward found its value unusable (``outputs``)
            raise
        except Exception as exc:  # the code under test failed: a finding, not a harness error
            raise ForwardFailure(f"raised {describe_exception(exc)}") from exc

    def contract(self, out: np.ndarray) -> float:
        """``sum(dout * out)`` for an output ``out`` of the forward, in float64."""
        if np.ndim(self.dout) == 0:
            return float(np.sum(out, dtype=np.float64)) * float(self.dout)
        return float(np.dot(np.ravel(self.dout), np.ravel(out).astype(np.float64, copy=False)))

    def value(self) -> float:
        """``L = sum(dout * forward(x))`` at the current working point."""
        return self.contract(self.output())

    def perturbed_values(
        self, name: str, flat_index: np.ndarray, deltas: np.ndarray
    ) -> np.ndarray:
        """``L(x + deltas[k] * e_{flat_index[k]})`` for each k, perturbing input ``name``.

        Returns NaN where the forward failed or gave a non-finite value at that point.
        """
        try:
            return self.backend.values(self, name, flat_index, deltas)
        except WorkersFailed as failure:
            self.backend = SERIAL
            self.notes.append(f"{failure}; perturbations were evaluated in this process")
        return self.serial_values(name, flat_index, deltas)

    def flat(self, name: str) -> np.ndarray:
        """A flat view of input ``name``'s working copy: writing to it moves the forward's input."""
        view = self.work[name].reshape(-1)
        if view.size and not np.shares_memory(view, self.work[name]):  # pragma: no cover - invariant
            raise RuntimeError(f"working copy of {name!r} is not contiguous; a perturbation would be lost")
        return view

    def serial_values(self, name: str, flat_index: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """``perturbed_values`` in this process, one evaluation after the other."""
        flat = self.flat(name)
        values = np.empty(len(flat_index), dtype=np.float64)
        forward, args, tick = self.forward, self._args, self.tracker.tick
        scalar = np.ndim(self.dout) == 0
        weight = float(self.dout) if scalar else 0.0
        for k, (i, d) in enumerate(zip(flat_index.tolist(), deltas.tolist(), strict=True)):
            original = flat[i]
            flat[i] = original + d
            try:
                if scalar:
                    # Hot path: a scalar loss needs no contraction.
                    out = forward(**args)
                    values[k] = (
                        float(out) * weight
                        if isinstance(out, float | np.floating)
                        else float(np.sum(as_float_array(out), dtype=np.float64)) * weight
                    )
                else:
                    values[k] = self.contract(as_float_array(forward(**args)))
            except Exception:  # a failing forward at a perturbed point is a finding: NaN
                values[k] = np.nan
            finally:
                flat[i] = original
            tick()
        self.evaluations += len(values)
        return values

    def direction_values(self, direction: dict[str, np.ndarray], steps: np.ndarray) -> np.ndarray:
        """``L(x + t * direction)`` for each t in ``steps``; NaN where the forward failed."""
        outputs = self.direction_outputs(direction, steps)
        return np.array([np.nan if out is None else self.contract(out) for out in outputs], dtype=np.float64)

    def direction_outputs(self, direction: dict[str, np.ndarray], steps: np.ndarray) -> list[np.ndarray | None]:
        """``forward(x + t * direction)`` for each t in ``steps`` (one evaluation each); None
        where the forward failed.

        The moved inputs are formed in a scratch array per input, in place (``t v``, then ``x``
        added), and handed to the forward instead of the working copy, which is never touched:
        nothing to copy or restore, one allocation per input whatever the number of steps."""
        scratch = {name: np.empty_like(self.work[name]) for name in direction}
        # ``t v`` is rounded to float64 before x is added, whatever the working dtype.
        moved = {name: buf if buf.dtype == np.float64 else np.empty(buf.shape) for name, buf in scratch.items()}
        args = dict(self._args)
        for name, buf in scratch.items():
            args[name] = buf if self.convert is None else self.convert(buf)
        outputs: list[np.ndarray | None] = []
        for t in np.asarray(steps).tolist():
            for name, v in direction.items():
                np.multiply(v, t, out=moved[name])
                np.add(moved[name], self.work[name], out=scratch[name], casting="same_kind")
            try:
                out = self.output(args)
            except ForwardFailure:
                outputs.append(None)
                continue
            # The next step overwrites the scratch arrays: an output that is a view of one is copied.
            outputs.append(out.copy() if any(np.may_share_memory(out, buf) for buf in scratch.values()) else out)
        return outputs


@dataclass(frozen=True)
class Vmap:
    """Backend: many single-element perturbations at once with ``torch.func.vmap``.

    For forwards written against the array API, evaluated on torch tensors (``vmap_evaluator``):
    the perturbed copies of one input are stacked (at most ``max_bytes`` at a time) and the
    forward is vmapped over them. A chunk that fails is evaluated one by one.
    """

    max_bytes: int = 32 * 2**20

    def _batched(self, ev: Evaluator, name: str) -> Callable[[Any], Any]:
        import torch
        from torch.func import vmap

        others = {n: a for n, a in ev._args.items() if n != name}
        weight = torch.as_tensor(np.asarray(ev.dout, dtype=np.float64))

        def contracted(v: Any) -> Any:
            out = ev.forward(**others, **{name: v})
            return (out.to(torch.float64) * weight).sum()

        return vmap(contracted)

    def values(self, ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        import torch

        base = ev._args[name]
        size = max(base.numel(), 1)
        chunk = int(max(1, min(4096, self.max_bytes // (8 * size))))
        call = self._batched(ev, name)
        values = np.empty(len(flat_index), dtype=np.float64)
        idx = torch.from_numpy(np.asarray(flat_index, dtype=np.int64))
        step = torch.from_numpy(np.asarray(deltas, dtype=np.float64))
        with torch.no_grad():
            for start in range(0, len(flat_index), chunk):
                stop = min(start + chunk, len(flat_index))
                k = stop - start
                batch = base.reshape(1, -1).repeat(k, 1)
                rows = torch.arange(k)
                batch[rows, idx[start:stop]] = batch[rows, idx[start:stop]] + step[start:stop]
                try:
                    out = call(batch.reshape(k, *base.shape))
                    values[start:stop] = out.detach().numpy()
                except Exception:  # one bad point must not spoil the chunk: evaluate one by one
                    values[start:stop] = ev.serial_values(name, flat_index[start:stop], deltas[start:stop])
                else:
                    ev.evaluations += k
                    ev.tracker.tick(k)
        return values


def vmap_evaluator(forward: Callable[..., Any], inputs: dict[str, np.ndarray], *,
                   dout: np.ndarray | float = 1.0, max_bytes: int = Vmap.max_bytes) -> Evaluator:
    """An evaluator of an array-API ``forward`` on torch tensors (views of the working copy),
    without autograd graphs, whose perturbations are batched with ``Vmap``. Everything else
    (``value``, ``direction_values``) runs the forward one call at a time, so all values come
    from the same arithmetic."""
    import torch

    return Evaluator(without_graph(forward), inputs, convert=torch.from_numpy, dout=dout, backend=Vmap(max_bytes))


def without_graph(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` called under ``torch.no_grad()``: the numeric oracle's evaluations of a torch
    forward build no autograd graphs."""
    import torch

    def call(**kwargs: Any) -> Any:
        with torch.no_grad():
            return forward(**kwargs)

    return call
