"""Sensitivity and cost per dtype: the two-layer softmax net checked in float64, float32, float16
and bfloat16, beside torch.autograd.gradcheck in float32.

The code under test is the notes' two-layer net (``loss = mean softmax_xent(ReLU(X W1) W2, y)``,
``gradcheck_reference.twolayer.softmax_net``) with the notes' backward written in torch and run
in the inputs' dtype (``backward_in``): a hand-written backward in float32, float16 or bfloat16,
each gradient rounded to that dtype. Per dtype:

1. false alarms: correct backward passes, over ``--nets`` random nets (default 50);
   (and, in float32 and float16, a numpy-only forward: no trusted computation in its dtype);
2. sensitivity: the smallest relative error flagged, found by bisection over a log grid, per
   net, for an error of the whole gradient (``dW * (1 + r)``) and of one element (W2's element
   of median magnitude, a typical one, times ``1 + r``); the table shows the largest over the
   nets (the error flagged in every net; ">1" where a net flags none up to 1) and the median;
3. cost: a float32 check against a float64 check of the same function at the same points
   (median seconds; the target is at most 1.3x);
4. torch.autograd.gradcheck in float32 on the same nets and backward (wrapped in an
   ``autograd.Function``), with its defaults and with loosened ones: its false alarms and
   sensitivity.

Run: ``python benchmarks/dtypes.py [--nets 50] [--quick]``. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

import gradcheck
from gradcheck_reference.twolayer import softmax_net

WRT = ("W1", "W2")
DTYPES = ("float64", "float32", "float16", "bfloat16")
GRID = 10.0 ** np.arange(-8.0, 0.25, 0.25)  # relative errors tried: 1e-8 .. 1


def net(seed: int, m: int = 16, n: int = 8, d: int = 16, k: int = 4) -> dict[str, np.ndarray]:
    """A random net in float64 (X, y, W1, W2), logits of order one."""
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(m, n)), "y": rng.integers(0, k, m),
            "W1": rng.normal(size=(n, d)) / np.sqrt(n), "W2": rng.normal(size=(d, k)) / np.sqrt(d)}


def inputs_in(point: dict[str, np.ndarray], dtype: str) -> dict[str, Any]:
    """The point in ``dtype``: numpy arrays for float64/float32/float16, torch tensors for bfloat16."""
    if dtype == "bfloat16":
        return {k: torch.from_numpy(v).to(torch.bfloat16) if v.dtype.kind == "f" else torch.from_numpy(v)
                for k, v in point.items()}
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in point.items()}


def backward_in(dtype: str, scale: float = 0.0, element: bool = False):
    """The notes' backward computed in torch in ``dtype``, each gradient rounded to ``dtype``;
    ``scale`` r makes it wrong: the whole gradient (or one element of W2) times ``1 + r``."""
    tdtype = getattr(torch, dtype)

    def backward(dout, X, y, W1, W2):
        X, W1, W2 = (torch.from_numpy(np.asarray(a)).to(tdtype) for a in (X, W1, W2))
        y = torch.from_numpy(np.asarray(y))
        m = X.shape[0]
        Z1 = torch.relu(X @ W1)
        G2 = torch.softmax(Z1 @ W2, dim=1) - torch.nn.functional.one_hot(y, W2.shape[1]).to(tdtype)
        G1 = (Z1 > 0).to(tdtype) * (G2 @ W2.T)
        grads = {"W1": X.T @ G1 / m * float(dout), "W2": Z1.T @ G2 / m * float(dout)}
        if scale:
            if element:
                g = grads["W2"].clone()
                flat = g.abs().double().reshape(-1)
                i = np.unravel_index(int(torch.argsort(flat)[flat.numel() // 2]), tuple(g.shape))
                g[i] = g[i] * (1 + scale)
                grads["W2"] = g
            else:
                grads = {k: v.double() * (1 + scale) for k, v in grads.items()}
        out = {k: v.to(tdtype).to(torch.float32 if dtype == "bfloat16" else tdtype) for k, v in grads.items()}
        return {k: v.numpy() for k, v in out.items()}

    return backward


def numpy_only(X, y, W1, W2):
    """The same net on numpy arrays only: no exact oracle runs it, so no trusted computation."""
    return softmax_net(*(np.asarray(a) for a in (X, y, W1, W2)))


def flagged(dtype: str, point: dict[str, np.ndarray], r: float, element: bool, forward: Any = softmax_net) -> bool:
    result = gradcheck.check_gradients(forward, backward_in(dtype, r, element), inputs_in(point, dtype), wrt=WRT)
    return not result.ok


def smallest_flagged(check: Any) -> float:
    """The smallest grid value ``r`` with ``check(r)`` True, by bisection (assumes monotone)."""
    lo, hi = -1, len(GRID) - 1
    if not check(GRID[hi]):
        return float("inf")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(GRID[mid]):
            hi = mid
        else:
            lo = mid
    return float(GRID[hi])


def timed(fns: dict[str, Any], repeat: int = 5) -> dict[str, float]:
    """The best wall-clock time of each of ``fns`` over ``repeat`` rounds, the functions interleaved
    within each round (so both see the same load on a shared machine)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# -- torch.autograd.gradcheck on the same backward ----------------------------------------------

def torch_gradcheck(point: dict[str, np.ndarray], r: float, element: bool, **options: Any) -> bool:
    """True when torch.autograd.gradcheck (float32 inputs) flags the backward with error ``r``."""
    back = backward_in("float32", r, element)
    X, y = torch.from_numpy(point["X"]).float(), torch.from_numpy(point["y"])

    class Net(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W1, W2):
            ctx.save_for_backward(W1, W2)
            return softmax_net(X, y, W1, W2)

        @staticmethod
        def backward(ctx, dout):
            W1, W2 = ctx.saved_tensors
            g = back(float(dout), X.numpy(), y.numpy(), W1.detach().numpy(), W2.detach().numpy())
            return torch.from_numpy(g["W1"]), torch.from_numpy(g["W2"])

    W1 = torch.from_numpy(point["W1"]).float().requires_grad_()
    W2 = torch.from_numpy(point["W2"]).float().requires_grad_()
    return not torch.autograd.gradcheck(Net.apply, (W1, W2), raise_exception=False, **options)


TORCH_SETTINGS = {"defaults": {}, "eps=1e-2, atol=rtol=1e-2": {"eps": 1e-2, "atol": 1e-2, "rtol": 1e-2}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", type=int, default=50, help="random correct nets per dtype (false alarms)")
    parser.add_argument("--sensitivity-nets", type=int, default=20, help="nets for the sensitivity search")
    parser.add_argument("--quick", action="store_true", help="10 nets, 5 for sensitivity")
    args = parser.parse_args(argv)
    nets, sens = (10, 5) if args.quick else (args.nets, args.sensitivity_nets)
    points = [net(seed) for seed in range(nets)]
    torch.set_num_threads(1)

    rows = []
    runs = [(d, softmax_net, "") for d in DTYPES] + [(d, numpy_only, ", numpy-only") for d in ("float32", "float16")]
    for dtype, forward, label in runs:
        alarms = sum(flagged(dtype, p, 0.0, False, forward) for p in points)
        scaled = [smallest_flagged(lambda r, p=p, d=dtype, f=forward: flagged(d, p, r, False, f))
                  for p in points[:sens]]
        one = [smallest_flagged(lambda r, p=p, d=dtype, f=forward: flagged(d, p, r, True, f)) for p in points[:sens]]
        probe = gradcheck.check_gradients(forward, backward_in(dtype), inputs_in(points[0], dtype), wrt=WRT)
        rule = probe.inputs[0].budget.split(" (")[0] if probe.inputs[0].budget else "float64 rtol 1e-7 (PRECISIONS)"
        rows.append((f"gradcheck {dtype}{label}", f"{alarms}/{nets}", max(scaled), statistics.median(scaled),
                     max(one), statistics.median(one), rule))
    for label, options in TORCH_SETTINGS.items():
        alarms = sum(torch_gradcheck(p, 0.0, False, **options) for p in points)
        scaled = [smallest_flagged(lambda r, p=p, o=options: torch_gradcheck(p, r, False, **o)) for p in points[:sens]]
        one = [smallest_flagged(lambda r, p=p, o=options: torch_gradcheck(p, r, True, **o)) for p in points[:sens]]
        rows.append((f"torch gradcheck float32, {label}", f"{alarms}/{nets}", max(scaled), statistics.median(scaled),
                     max(one), statistics.median(one), ""))

    print(f"Sensitivity on the two-layer net (m=16, n=8, d=16, k=4): {nets} correct nets for false alarms, "
          f"{sens} for the smallest relative error flagged (grid 1e-8..1, 4 per decade)")
    print(f"{'check':<44} {'false alarms':>12} {'scaled: all':>12} {'median':>9} {'one elt: all':>13} "
          f"{'median':>9}  budget")
    for label, alarms, s_all, s_med, o_all, o_med, rule in rows:
        if alarms == f"{nets}/{nets}":  # it flags correct nets: no sensitivity to speak of
            s_all = s_med = o_all = o_med = float("nan")
        s_all, s_med, o_all, o_med = (">1" if x == float("inf") else f"{x:.2g}" for x in (s_all, s_med, o_all, o_med))
        print(f"{label:<44} {alarms:>12} {s_all:>12} {s_med:>9} {o_all:>13} {o_med:>9}  {rule}")
    base = rows[0]
    print("ratios to float64 (median smallest error flagged, scaled / one element):")
    for label, alarms, _, s_med, _, o_med, _ in rows[1:]:
        if alarms == f"{nets}/{nets}":
            continue
        print(f"  {label:<44} {s_med / base[3]:>10.3g} {o_med / base[5]:>10.3g}")

    # Cost: the same function, float32 against float64 inputs (wall clock, one torch thread).
    def check(dtype: str, p: dict[str, np.ndarray]) -> Any:
        return lambda: gradcheck.check_gradients(softmax_net, backward_in(dtype), inputs_in(p, dtype), wrt=WRT)

    times = [timed({d: check(d, p) for d in ("float64", "float32")}) for p in points[:10]]
    cost = {d: statistics.median(t[d] for t in times) for d in ("float64", "float32")}
    print(f"cost per check (wall clock, median of 10 nets, best of 5): float64 {cost['float64'] * 1e3:.1f} ms, "
          f"float32 {cost['float32'] * 1e3:.1f} ms: ratio {cost['float32'] / cost['float64']:.2f}x (target <= 1.3x)")
    # The stages a float32 check adds, timed inside it (steadier than two totals on a busy machine).
    import gradcheck.check as orchestrator

    spent: dict[str, list[float]] = {"forward in float32": [], "budgets": []}

    def timing(fn: Any, key: str) -> Any:
        def timed_stage(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key].append(time.perf_counter() - start)
        return timed_stage

    originals = orchestrator.forward_precision, orchestrator.measure_budgets
    orchestrator.forward_precision = timing(originals[0], "forward in float32")
    orchestrator.measure_budgets = timing(originals[1], "budgets")
    totals = []
    try:
        for p in points[:10]:
            for _ in range(5):
                start = time.perf_counter()
                check("float32", p)()
                totals.append(time.perf_counter() - start)
    finally:
        orchestrator.forward_precision, orchestrator.measure_budgets = originals
    added = sum(statistics.median(v) for v in spent.values())
    total = statistics.median(totals)
    print("stages a float32 check adds (median): " + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms"
                                                                for k, v in spent.items())
          + f" of {total * 1e3:.1f} ms per check: {added / total:.1%}, ratio {total / (total - added):.2f}x")


if __name__ == "__main__":
    main()
