"""Second order side by side: gradcheck's ``order=2`` against ``torch.autograd.gradgradcheck``.

Both check the double backward of the seeds' two-layer ReLU softmax net as a torch callable
(``loss = mean softmax_xent(ReLU(X W1) W2, y)``, float64), in one process:

1. speed at about 17k parameters: ours (``order=2``, which checks the first order too) against
   gradgradcheck's default mode and its ``fast_mode``;
2. bugs caught: double backwards planted in a custom ``autograd.Function`` for the ReLU layer
   whose gradient is right: a detached term, a wrong constant in the second derivative, a
   backward computing with numpy;
3. false alarms on correct nets with ReLU inputs exactly at 0 (a zero column of W1, a zero row
   of X): gradgradcheck's finite differences straddle the kink there.

Run: ``python benchmarks/second_order.py [--quick]``. Times are wall-clock seconds on this
machine; ratios are ours / theirs (below 1 = we are faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import gradcheck

WRT = ("W1", "W2")


def make_net(hidden):
    """The net with ``hidden(A) = ReLU(A)`` (the layer whose double backward is planted)."""

    def net(X, y, W1, W2):
        Z = hidden(X @ W1) @ W2
        return torch.nn.functional.cross_entropy(Z, y)

    return net


def relu_function(backward):
    """ReLU as a custom autograd Function whose backward is ``backward(ctx, grad)``; the
    function is ``A -> A * 1{A > 0}`` and its gradient ``grad * 1{A > 0}`` in every variant."""

    class Relu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a.clamp(min=0)

    Relu.backward = staticmethod(backward)
    return Relu.apply


def _mask(ctx):
    return (ctx.saved_tensors[0] > 0).to(torch.float64)


# A smooth stand-in makes the planted bugs visible in the second derivative: ReLU's is zero, so
# its "softplus" variant below is the layer whose double backward the bugs get wrong.
def softplus_function(backward):
    class Softplus(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return torch.nn.functional.softplus(a)

    Softplus.backward = staticmethod(backward)
    return Softplus.apply


def _sig(ctx):
    return torch.sigmoid(ctx.saved_tensors[0])


CORRECT = softplus_function(lambda ctx, g: g * _sig(ctx))
BUGS = {
    "detached term": softplus_function(lambda ctx, g: g * _sig(ctx).detach()),
    "wrong constant in 2nd derivative": softplus_function(
        # sigmoid(a) + (a - a.detach()) * 0.5 sigmoid' : value sigmoid(a), derivative 1.5 sigmoid'
        lambda ctx, g: g * (_sig(ctx) + 0.5 * (_sig(ctx) - _sig(ctx).detach()))),
    "backward with numpy": softplus_function(
        lambda ctx, g: torch.from_numpy(g.detach().numpy() / (1 + np.exp(-ctx.saved_tensors[0].detach().numpy())))),
}


def inputs(m, n, d, k, seed=0, kinks=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n))
    W1 = rng.normal(size=(n, d)) / np.sqrt(n)
    W2 = rng.normal(size=(d, k)) / np.sqrt(d)
    if kinks:
        W1[:, 0] = 0.0  # hidden unit 0: its input is exactly 0 for every example
        X[0] = 0.0  # example 0: every hidden input exactly 0
    t = {"X": X, "y": rng.integers(0, k, m), "W1": W1, "W2": W2}
    return {name: torch.tensor(v) for name, v in t.items()}


def ours(net, point, **options):
    start = time.perf_counter()
    result = gradcheck.check_gradients(net, None, point, wrt=WRT, order=2, progress=False, **options)
    return time.perf_counter() - start, result


def theirs(net, point, fast_mode):
    args = {k: (v.clone().requires_grad_(k in WRT) if v.is_floating_point() else v) for k, v in point.items()}
    def fn(W1, W2):
        return net(args["X"], args["y"], W1, W2)

    start = time.perf_counter()
    try:
        ok = torch.autograd.gradgradcheck(fn, (args["W1"], args["W2"]), fast_mode=fast_mode, raise_exception=False)
        error = ""
    except Exception as exc:  # a backward that cannot run with create_graph=True
        ok, error = False, type(exc).__name__
    return time.perf_counter() - start, ok, error


DEFAULT_MAX_PARAMS = 5_000  # gradgradcheck's default mode holds two dense n x n Jacobians


def speed(sizes, run_all):
    ours(make_net(torch.relu), inputs(4, 3, 3, 2))  # warm-up: the first check in a process pays for imports
    print("\n1. speed: two-layer net as a torch callable (float64); ours checks the first order too")
    print(f"   {'parameters':>10s} {'ours s':>8s} {'modes (1st, 2nd)':>20s} {'fast_mode s':>12s} {'ours/fast':>10s} "
          f"{'default s':>10s} {'ours/default':>13s}")
    for m, n, d, k in sizes:
        point = inputs(m, n, d, k)
        net = make_net(torch.relu)
        params = n * d + d * k
        t_ours, result = ours(net, point)
        assert result.ok, str(result)
        t_fast, ok_fast, _ = theirs(net, point, True)
        assert ok_fast
        if params <= DEFAULT_MAX_PARAMS or run_all:
            t_slow, _, _ = theirs(net, point, False)
            slow, ratio = f"{t_slow:10.2f}", f"{t_ours / t_slow:12.3f}x"
        else:
            gb = 2 * (params + 1) ** 2 * 8 / 1e9
            slow, ratio = f"{'skipped':>10s}", f"(two dense Jacobians: {gb:.1f} GB; --all runs it)"
        modes = f"{result.mode}, {result.second_order.mode}"
        print(f"   {params:10d} {t_ours:8.2f} {modes:>20s} {t_fast:12.2f} {t_ours / t_fast:9.2f}x {slow} {ratio}")


def bugs(size):
    m, n, d, k = size
    point = inputs(m, n, d, k, seed=1)
    print(f"\n2. planted double-backward bugs (softplus layer as a custom Function; net {m}x{n} -> {d} -> {k}); "
          "the first-order gradient is right in each")
    print(f"   {'variant':34s} {'ours':>8s} {'gradgradcheck':>14s} {'fast_mode':>10s}  ours says")
    for name, layer in {"correct": CORRECT, **BUGS}.items():
        net = make_net(layer)
        _, result = ours(net, point)
        _, slow, e1 = theirs(net, point, False)
        _, fast, e2 = theirs(net, point, True)
        second = result.second_order
        said = second.faults[0] if second is not None and second.faults else ""
        if not said and second is not None:
            wrong = [s.name for s in second.inputs if not s.ok]
            said = f"second derivative wrong in {', '.join(wrong)}" if wrong else ""
        verdict = {True: "pass", False: "caught"}
        print(f"   {name:34s} {verdict[result.ok]:>8s} {verdict[slow] + (f' ({e1})' if e1 else ''):>14s} "
              f"{verdict[fast] + (f' ({e2})' if e2 else ''):>10s}  {said[:90]}")


def false_alarms(size, seeds):
    m, n, d, k = size
    net = make_net(torch.relu)
    ours_alarms = slow_alarms = fast_alarms = 0
    for seed in range(seeds):
        point = inputs(m, n, d, k, seed=seed, kinks=True)
        _, result = ours(net, point)
        ours_alarms += not result.ok
        slow_alarms += not theirs(net, point, False)[1]
        fast_alarms += not theirs(net, point, True)[1]
    print(f"\n3. false alarms on correct ReLU nets with inputs exactly at the kink ({seeds} seeds, "
          f"net {m}x{n} -> {d} -> {k})")
    print(f"   ours {ours_alarms}/{seeds}, gradgradcheck default {slow_alarms}/{seeds}, "
          f"fast_mode {fast_alarms}/{seeds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest size only")
    parser.add_argument("--all", action="store_true",
                        help=f"run gradgradcheck's default mode beyond {DEFAULT_MAX_PARAMS} parameters too "
                        "(17k: minutes, GBs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(16, 32, 32, 5), (32, 64, 64, 5), (32, 128, 128, 5)]
    speed(sizes[:1] if args.quick else sizes, run_all=args.all)
    bugs((8, 6, 5, 3))
    false_alarms((8, 6, 5, 3), seeds=10)


if __name__ == "__main__":
    main()
