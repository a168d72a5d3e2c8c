"""Benchmarks of checking custom torch ops.

Run ``python benchmarks/custom_ops.py``; each section prints a markdown table.

Sections:

1. Cost of the custom-op checks: a check of a torch callable (``backward=None``) at the default
   example count, with the custom-op checks (repeats, layouts, structured upstream gradients) and
   without them (a plain check), per op; the goal is at most 2x. Hypothesis draws one layout per
   example; a single ``check_gradients`` call runs them all, which the last table shows.
2. Which checker catches which bug, at its defaults: a corpus of custom
   ``torch.autograd.Function`` ops, correct ones and ones with a bug planted the way fused kernels
   get them wrong, each run through gradcheck at its defaults (``check_gradients(op, None,
   inputs)`` on float64 copies: numeric oracle, layouts, structured upstream gradients, repeats),
   gradcheck with the reference implementation on the inputs as the caller holds them
   (``reference=ref``: their dtype and strides; and, apart, what its low-dtype budget alone
   flags), ``torch.autograd.gradcheck(op, inputs)`` and
   ``torch.library.opcheck`` (on the op registered as a ``torch.library`` custom op with the
   Function's ``setup_context`` and ``backward`` as its autograd; so it checks the op itself, not
   the model's use of it), tabulated: a bug caught or missed, a correct op passed or falsely
   flagged, and the seconds each took (one run each; first calls include torch's warm-up). The
   bugs: the backward reads ``grad_output``'s memory as row-major (layout, upstream), or a saved
   transposed input's (layout, input); reads one element of ``grad_output`` for every token
   (scalar dout); scales ``grad_output`` in place, which fails for the stride-0 upstream gradient
   ``loss.sum().backward()`` hands it (stride-0 dout); sums ``dw`` row by row in bfloat16 where
   the reference accumulates in float32 (narrow accumulator), once with the outputs summed to a
   loss (positive terms: the accumulator drifts once it passes 256) and once per token (terms of
   both signs, whose drift stays within a few roundoff units of their summed magnitudes). The
   correct ops include one whose backward sums in a random order each call, as atomics do.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's gradcheck, and the tests' corpus

import custom_functions as cf  # noqa: E402  (the tests' corpus of autograd Functions)

import gradcheck  # noqa: E402
import gradcheck.check  # noqa: E402
from gradcheck.options import DEFAULT_EXAMPLES, CheckOptions  # noqa: E402
from gradcheck.repeats import Repeated  # noqa: E402
from gradcheck.reruns import Findings  # noqa: E402
from gradcheck.runner import drive  # noqa: E402

REPEATS = 3  # timed runs per configuration; the best is kept


# =============================================================================================
# Section 1: cost of the custom-op checks (layouts, structured dout, repeats)
# =============================================================================================

@contextlib.contextmanager
def plain() -> Iterator[None]:
    """The check without the custom-op checks: repeats, layouts and structured upstream
    gradients stubbed out (what a check cost before them)."""
    check = gradcheck.check
    saved = (check.repeats.forward_repeats, check.repeats.backward_repeats, check._custom_ops)
    check.repeats.forward_repeats = lambda point, deterministic: ([], [])  # type: ignore[assignment]
    check.repeats.backward_repeats = lambda *a, **k: Repeated()  # type: ignore[assignment]
    check._custom_ops = lambda *a, **k: Findings()  # type: ignore[assignment]
    try:
        yield
    finally:
        check.repeats.forward_repeats, check.repeats.backward_repeats, check._custom_ops = saved


def tensors(*shape: int) -> st.SearchStrategy[torch.Tensor]:
    """Tensors of ``shape`` with values in [-2, 2] away from 0, drawn by Hypothesis."""
    values = st.floats(0.1, 2.0).flatmap(lambda m: st.sampled_from([m, -m]))
    return st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda v: torch.tensor(v, dtype=torch.float64).reshape(shape))


def elementwise_4d(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * x


CASES: list[tuple[str, Callable[..., torch.Tensor], dict[str, st.SearchStrategy[torch.Tensor]]]] = [
    ("Linear (4x3 @ 3x5)", cf.linear, {"x": tensors(4, 3), "W": tensors(3, 5)}),
    ("ShuffledLinear (8x3 @ 3x4)", cf.shuffled_linear, {"x": tensors(8, 3), "W": tensors(3, 4)}),
    ("tanh(x) * x (2x3x4x4)", elementwise_4d, {"x": tensors(2, 3, 4, 4)}),
    ("sin, scalar loss (16)", lambda x: torch.sin(x).sum(), {"x": tensors(16)}),
]


def timed(case: gradcheck.Case, examples: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        drive(case, CheckOptions(seed=0, progress=False), examples=examples)
        best = min(best, time.perf_counter() - start)
    return best


def cost_table(examples: int = DEFAULT_EXAMPLES) -> list[str]:
    lines = [f"#### Cost of the custom-op checks ({examples} examples per op; seconds, best of {REPEATS})",
             "| op | plain check | with layouts, structured dout, repeats | ratio |", "|---|---|---|---|"]
    for name, forward, inputs in CASES:
        case = gradcheck.Case(name=name, forward=forward, backward=None, inputs=inputs)
        timed(case, 2)  # warm-up: imports, first autograd calls
        with plain():
            before = timed(case, examples)
        after = timed(case, examples)
        lines.append(f"| {name} | {before:.3g} | {after:.3g} | {after / before:.2f} |")
    return lines


def single_call_table(runs: int = 20) -> list[str]:
    """One ``check_gradients`` call (every layout) of ``Linear``, with and without the checks."""
    rng = np.random.default_rng(0)
    inputs = {"x": torch.tensor(rng.normal(size=(4, 3))), "W": torch.tensor(rng.normal(size=(3, 5)))}

    def best() -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            gradcheck.check_gradients(cf.linear, None, inputs, progress=False)
            times.append(time.perf_counter() - start)
        return min(times)

    best()
    with plain():
        before = best()
    after = best()
    return [f"#### One check_gradients call of Linear (4x3 @ 3x5), every layout (seconds, best of {runs})",
            "| plain check | with layouts, structured dout, repeats | ratio |", "|---|---|---|",
            f"| {before:.3g} | {after:.3g} | {after / before:.1f} |"]


# =============================================================================================
# Section 2: which checker catches which bug, at its defaults
# =============================================================================================

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


def reference_budget(entry: Entry) -> bool:
    """The same check, counting only the reference's low-dtype budget (its faults), to tell its
    findings from the check's own in the caller's dtype."""
    result = gradcheck.check_gradients(entry.checked(), None, entry.inputs(), reference=entry.checked_reference())
    return not any("x the reference's error in" in f for f in result.faults)


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
    "(its reference budget alone)": reference_budget,
    "torch.autograd.gradcheck": torch_gradcheck,
    "torch.library.opcheck": opcheck,
}


def corpus_results() -> dict[tuple[str, str], tuple[bool, float]]:
    """(entry, checker) -> (passed, seconds)."""
    found = {}
    for entry in CORPUS:
        for label, checker in CHECKERS.items():
            start = time.perf_counter()
            passed = checker(entry)
            found[entry.name, label] = passed, time.perf_counter() - start
    return found


def corpus_table(found: dict[tuple[str, str], tuple[bool, float]]) -> list[str]:
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
    torch.set_num_threads(1)
    print("\n".join([*cost_table(), "", *single_call_table(), "", "#### Which checker catches which bug",
                      *corpus_table(corpus_results())]))


if __name__ == "__main__":
    main()
