"""Custom torch ops: which checker catches which bug, at its defaults.

A corpus of custom ``torch.autograd.Function`` ops, correct ones and ones with a bug planted the
way fused kernels get them wrong, each run through

* gradcheck at its defaults: ``check_gradients(op, None, inputs)`` (float64 copies of the inputs,
  numeric oracle, random upstream gradient);
* gradcheck with the reference implementation, on the inputs as the caller holds them (their
  dtype and strides): ``check_gradients(op, None, inputs, reference=ref)``;
* ``torch.autograd.gradcheck(op, inputs)`` at its defaults (float64 inputs as given);
* ``torch.library.opcheck`` at its defaults, on the same op registered as a ``torch.library``
  custom op with the Function's ``setup_context`` and ``backward`` as its autograd.

and tabulated: a bug caught or missed, a correct op passed or falsely flagged, and the seconds
each took. The bugs:

* layout, upstream: the backward reads ``grad_output``'s memory as row-major (right for a
  contiguous upstream gradient, scrambled for a transposed one);
* layout, input: the backward reads a saved input's memory as row-major, given a transposed input;
* scalar ``dout``: the backward reads one element of ``grad_output`` for every token;
* stride-0 ``dout``: the backward scales ``grad_output`` in place, which fails for the expanded
  (stride-0) upstream gradient ``loss.sum().backward()`` hands it;
* a bfloat16 accumulator: ``dw`` summed row by row in bfloat16 where the reference accumulates in
  float32 (torch's CPU matmul does); once with the outputs summed to a loss (``dw`` then sums
  positive terms, and the accumulator drifts once it passes 256), once per token (terms of both
  signs, whose drift stays within a few units of roundoff of their summed magnitudes).

opcheck needs a ``torch.library`` op, so it checks the op itself, not the model's use of it (the
sum of the first bfloat16 accumulator row).

The correct ops include one whose backward sums in a random order each call, as atomics do:
correct, but not bitwise reproducible.

Run: ``python benchmarks/custom_ops.py``. Times are wall-clock seconds on this machine, one run
each (first calls include torch's warm-up).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import gradcheck

# -- the ops -----------------------------------------------------------------------------------


def xent_reference(logits, targets, weights):
    """(B, T, V), (B, T) int, (B, T) -> (B, T): per-token weighted softmax cross-entropy."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return weights * (torch.logsumexp(logits, dim=-1) - picked)


def _row_major(t):
    """``t``'s memory read as if ``t`` were row-major (what a kernel given a bare pointer reads)."""
    strides, step = [], 1
    for size in reversed(t.shape):
        strides.append(step)
        step *= size
    return torch.as_strided(t, t.shape, tuple(reversed(strides)))


class Xent(torch.autograd.Function):
    """The fused op; subclasses change how the backward reads its upstream gradient."""

    @staticmethod
    def forward(logits, targets, weights):
        return xent_reference(logits, targets, weights)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, targets, weights = inputs
        ctx.save_for_backward(logits, targets, weights)

    @classmethod
    def backward(cls, ctx, grad_output):
        logits, targets, weights = ctx.saved_tensors
        g = cls.upstream(grad_output, weights)
        lse = torch.logsumexp(logits, dim=-1)
        p = torch.exp(logits - lse.unsqueeze(-1))
        onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).to(logits.dtype)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (g * weights).unsqueeze(-1) * (p - onehot), None, g * (lse - picked)

    @staticmethod
    def upstream(grad_output, weights):
        return grad_output


class XentRowMajorUpstream(Xent):
    @staticmethod
    def upstream(grad_output, weights):
        return _row_major(grad_output)


class XentScalarUpstream(Xent):
    @staticmethod
    def upstream(grad_output, weights):
        return grad_output.reshape(-1)[0].expand(grad_output.shape)


class XentInPlaceUpstream(Xent):
    """Scales ``grad_output`` in place (saving a buffer), then divides the weights back out."""

    @staticmethod
    def upstream(grad_output, weights):
        grad_output.mul_(weights)
        return grad_output / weights


def matvec_reference(x, w):
    """(N, D), (D,) -> (N,)."""
    return x @ w


class MatVec(torch.autograd.Function):
    """``x @ w``; subclasses change how ``dw = x^T dout`` is summed or ``x`` is read."""

    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @classmethod
    def backward(cls, ctx, dout):
        x, w = ctx.saved_tensors
        return dout.unsqueeze(-1) * w, cls.dw(x, dout)

    @staticmethod
    def dw(x, dout):
        return x.T @ dout


class MatVecAtomicOrder(MatVec):
    """Rows summed in a new random order each call, as atomic adds land: correct, but not
    bitwise reproducible."""

    @staticmethod
    def dw(x, dout):
        order = torch.randperm(x.shape[0])
        return x[order].T @ dout[order]


class MatVecNarrow(MatVec):
    """``dw`` accumulated row by row in the inputs' dtype (a bfloat16 accumulator)."""

    @staticmethod
    def dw(x, dout):
        acc = torch.zeros(x.shape[1], dtype=x.dtype)
        for i in range(x.shape[0]):
            acc = acc + dout[i] * x[i]
        return acc


class MatVecRowMajorInput(MatVec):
    """Reads the saved ``x``'s memory as row-major."""

    @staticmethod
    def dw(x, dout):
        return _row_major(x).T @ dout


# -- the corpus --------------------------------------------------------------------------------

def xent_inputs(dtype=torch.float64, seed=0, batch=2, steps=3, vocab=5):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(batch, steps, vocab, generator=g, dtype=torch.float64).to(dtype),
        "targets": torch.randint(0, vocab, (batch, steps), generator=g),
        "weights": (torch.rand(batch, steps, generator=g, dtype=torch.float64) + 0.5).to(dtype),
    }


def matvec_inputs(dtype=torch.float64, seed=0, rows=256, cols=4, transposed=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, cols, generator=g, dtype=torch.float64) + 1
    if transposed:  # held column-major, as a transposed activation is
        x = x.T.contiguous().T
    return {"x": x.to(dtype), "w": torch.randn(cols, generator=g, dtype=torch.float64).to(dtype)}


def _as_given(output):
    return output


def _summed(output):
    return output.sum()


@dataclass(frozen=True)
class Entry:
    name: str
    bug: str  # "" for a correct op
    op: type[torch.autograd.Function]
    reference: Callable[..., Any]
    inputs: Callable[[], dict[str, Any]]  # as the caller holds them (dtype, strides)
    consumer: Callable[[Any], Any] = _as_given  # what the model does with the op's output

    def checked(self) -> Callable[..., Any]:
        """The op as the model uses it, called with the inputs by name."""
        return lambda **given: self.consumer(self.op.apply(*given.values()))

    def checked_reference(self) -> Callable[..., Any]:
        return lambda **given: self.consumer(self.reference(*given.values()))


CORPUS = [
    Entry("xent", "", Xent, xent_reference, lambda: xent_inputs(torch.float32)),
    Entry("xent bfloat16", "", Xent, xent_reference, lambda: xent_inputs(torch.bfloat16)),
    Entry("matvec", "", MatVec, matvec_reference, lambda: matvec_inputs(torch.float32, rows=16)),
    Entry("matvec, atomic order", "", MatVecAtomicOrder, matvec_reference, lambda: matvec_inputs(torch.float32)),
    Entry("matvec bfloat16", "", MatVec, matvec_reference, lambda: matvec_inputs(torch.bfloat16)),
    Entry("xent, upstream read row-major", "layout (grad_output)", XentRowMajorUpstream, xent_reference,
          lambda: xent_inputs(torch.float32)),
    Entry("matvec, input read row-major", "layout (input)", MatVecRowMajorInput, matvec_reference,
          lambda: matvec_inputs(torch.float32, rows=16, transposed=True)),
    Entry("xent, one upstream element", "scalar dout", XentScalarUpstream, xent_reference,
          lambda: xent_inputs(torch.float32)),
    Entry("xent, upstream scaled in place", "stride-0 dout", XentInPlaceUpstream, xent_reference,
          lambda: xent_inputs(torch.float32)),
    Entry("matvec summed, bfloat16 accumulator", "narrow accumulator", MatVecNarrow, matvec_reference,
          lambda: matvec_inputs(torch.bfloat16), _summed),
    Entry("matvec, bfloat16 accumulator", "narrow accumulator", MatVecNarrow, matvec_reference,
          lambda: matvec_inputs(torch.bfloat16)),
]


# -- the checkers ------------------------------------------------------------------------------

def _float64(inputs):
    return {k: v.detach().to(torch.float64) if v.is_floating_point() else v for k, v in inputs.items()}


def ours(entry: Entry) -> bool:
    return gradcheck.check_gradients(entry.checked(), None, _float64(entry.inputs())).ok


def ours_with_reference(entry: Entry) -> bool:
    return gradcheck.check_gradients(entry.checked(), None, entry.inputs(), reference=entry.checked_reference()).ok


def torch_gradcheck(entry: Entry) -> bool:
    given = _float64(entry.inputs())
    args = [v.requires_grad_() if v.is_floating_point() else v for v in given.values()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(torch.autograd.gradcheck(lambda *a: entry.consumer(entry.op.apply(*a)), args))
    except Exception:  # a mismatch (torch's GradcheckError), or the backward failing
        return False


_REGISTERED: dict[str, Any] = {}


def _custom_op(entry: Entry) -> Any:
    """The entry's op as a ``torch.library`` custom op whose autograd is the Function's."""
    name = entry.op.__name__
    if name not in _REGISTERED:
        arity = len(entry.inputs())
        schema = "(" + ", ".join(f"Tensor a{i}" for i in range(arity)) + ") -> Tensor"
        op = torch.library.custom_op(f"gradcheck_bench::{name.lower()}", lambda *a: entry.op.forward(*a).clone(),
                                     mutates_args=(), schema=schema)
        op.register_fake(lambda *a: entry.op.forward(*a))
        op.register_autograd(entry.op.backward, setup_context=entry.op.setup_context)
        _REGISTERED[name] = op
    return _REGISTERED[name]


def opcheck(entry: Entry) -> bool:
    given = _float64(entry.inputs())
    args = [v.requires_grad_() if v.is_floating_point() else v for v in given.values()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = torch.library.opcheck(_custom_op(entry), args)
    except Exception:
        return False
    return all(v == "SUCCESS" for v in report.values())


CHECKERS = {
    "gradcheck (float64)": ours,
    "gradcheck + reference": ours_with_reference,
    "torch.autograd.gradcheck": torch_gradcheck,
    "torch.library.opcheck": opcheck,
}


def run() -> dict[tuple[str, str], tuple[bool, float]]:
    """(entry, checker) -> (passed, seconds)."""
    found = {}
    for entry in CORPUS:
        for label, checker in CHECKERS.items():
            start = time.perf_counter()
            passed = checker(entry)
            found[entry.name, label] = passed, time.perf_counter() - start
    return found


def table(found: dict[tuple[str, str], tuple[bool, float]]) -> list[str]:
    """The markdown table: a cell per entry and checker, then the totals."""
    labels = list(CHECKERS)
    lines = ["| op | planted bug | " + " | ".join(labels) + " |", "| --- | --- |" + " --- |" * len(labels)]
    for entry in CORPUS:
        cells = []
        for label in labels:
            passed, seconds = found[entry.name, label]
            verdict = ("passed" if passed else "**false alarm**") if not entry.bug else (
                "missed" if passed else "**caught**")
            cells.append(f"{verdict} ({seconds:.2f} s)")
        lines.append(f"| {entry.name} | {entry.bug or '(correct)'} | " + " | ".join(cells) + " |")
    bugs = [e for e in CORPUS if e.bug]
    correct = [e for e in CORPUS if not e.bug]
    caught = [sum(not found[e.name, lb][0] for e in bugs) for lb in labels]
    alarms = [sum(not found[e.name, lb][0] for e in correct) for lb in labels]
    seconds = [sum(found[e.name, lb][1] for e in CORPUS) for lb in labels]
    lines.append("| **bugs caught** | | " + " | ".join(f"{c}/{len(bugs)}" for c in caught) + " |")
    lines.append("| **false alarms** | | " + " | ".join(f"{a}/{len(correct)}" for a in alarms) + " |")
    lines.append("| **time** | | " + " | ".join(f"{s:.1f} s" for s in seconds) + " |")
    return lines


def main() -> None:
    print("\n".join(table(run())))


if __name__ == "__main__":
    main()
