"""Benchmarks of checking custom torch ops.

Run ``python benchmarks/custom_ops.py``; each section prints a markdown table.

Sections:

1. Cost of the custom-op checks: a check of a torch callable (``backward=None``) at the default
   example count, with the custom-op checks (repeats, layouts, structured upstream gradients) and
   without them (a plain check), per op; the goal is at most 2x. Hypothesis draws one layout per
   example; a single ``check_gradients`` call runs them all, which the last table shows.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
# Section 2: (reserved for the corpus table)
# =============================================================================================


def main() -> None:
    torch.set_num_threads(1)
    print("\n".join([*cost_table(), "", *single_call_table()]))


if __name__ == "__main__":
    main()
