"""Side by side: gradcheck against torch.autograd.gradcheck and jax's check_grads.

All tools check the same hand-written backward pass of the seeds' two-layer ReLU softmax net
(``loss = mean softmax_xent(ReLU(X W1) W2, y)``) at the same points, in one process:

1. speed, per size: our per-element mode on a plain numpy forward and on an array-API forward,
   our directional mode, torch's gradcheck (fast_mode False / True) and jax's check_grads;
2. sensitivity: the smallest relative error of the gradient (``dW * (1 + r)``) each tool flags;
3. false alarms on correct nets at kinks (a zero column of W1, ReLU inputs exactly 0) and jax's
   random-direction check on a correct 64x128x64 net over several seeds;
4. memory: the peak of our own allocations during a check, against the size of the inputs
   (worker processes allocate on their own; the per-element pass allocates nothing per element).

Run: ``python benchmarks/compare_anchors.py [--quick]`` (jax is optional: ``pip install jax``).
Times are wall-clock seconds on this machine, the best of three runs for runs under two seconds;
ratios are ours / theirs (below 1 = we are faster).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

import gradcheck

WRT = ("W1", "W2")


def forward_numpy(X, y, W1, W2):
    Z1 = np.maximum(X @ W1, 0)
    L = Z1 @ W2
    L = L - L.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(L).sum(axis=1)) - L[np.arange(len(y)), y])


def forward_array_api(X, y, W1, W2):
    import array_api_compat

    xp = array_api_compat.array_namespace(X, W1, W2)
    Z = X @ W1
    Z1 = xp.where(Z > 0, Z, xp.zeros_like(Z))
    L = Z1 @ W2
    L = L - xp.max(L, axis=-1, keepdims=True)
    onehot = xp.astype(y[:, None] == xp.arange(W2.shape[-1])[None, :], L.dtype)
    return xp.mean(xp.log(xp.sum(xp.exp(L), axis=-1)) - xp.sum(L * onehot, axis=-1))


def make_backward(factor=1.0):
    def backward(dout, X, y, W1, W2):
        m = X.shape[0]
        Z1 = np.maximum(X @ W1, 0)
        L = Z1 @ W2
        E = np.exp(L - L.max(axis=1, keepdims=True))
        G2 = E / E.sum(axis=1, keepdims=True)
        G2[np.arange(m), y] -= 1
        G1 = (Z1 > 0) * (G2 @ W2.T)
        return {"W1": factor * dout * X.T @ G1 / m, "W2": factor * dout * Z1.T @ G2 / m}

    return backward


def net(m, n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "X": rng.standard_normal((m, n)),
        "y": rng.integers(0, k, m),
        "W1": rng.standard_normal((n, d)) / np.sqrt(n),
        "W2": rng.standard_normal((d, k)) / np.sqrt(d),
    }


def timed(fn, repeats=3, short=2.0):
    """(seconds, value) of ``fn()``: the best of ``repeats`` runs for runs shorter than
    ``short`` seconds (this machine's timings of short runs scatter by 2x), else of one run."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
        if elapsed >= short:
            break
    return best, value


# --- the anchors, each checking the same hand-written backward -------------------------------

def torch_check(inputs, backward, fast_mode):
    import torch

    X, y = inputs["X"], inputs["y"]

    class Net(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W1, W2):
            ctx.save_for_backward(W1, W2)
            return torch.tensor(forward_numpy(X, y, W1.detach().numpy(), W2.detach().numpy()))

        @staticmethod
        def backward(ctx, g):
            W1, W2 = ctx.saved_tensors
            grads = backward(float(g), X, y, W1.detach().numpy(), W2.detach().numpy())
            return torch.from_numpy(grads["W1"]), torch.from_numpy(grads["W2"])

    W1 = torch.tensor(inputs["W1"], requires_grad=True)
    W2 = torch.tensor(inputs["W2"], requires_grad=True)
    try:
        return bool(torch.autograd.gradcheck(Net.apply, (W1, W2), fast_mode=fast_mode))
    except Exception:  # torch raises GradcheckError on a mismatch
        return False


def jax_check(inputs, factor=1.0, seed=0):
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)
    X, y = jnp.asarray(inputs["X"]), jnp.asarray(inputs["y"])

    def plain(W1, W2):
        Z1 = jnp.maximum(X @ W1, 0)
        L = Z1 @ W2
        L = L - L.max(axis=1, keepdims=True)
        return jnp.mean(jnp.log(jnp.exp(L).sum(axis=1)) - L[jnp.arange(len(y)), y])

    @jax.custom_vjp
    def f(W1, W2):
        return plain(W1, W2)

    def f_fwd(W1, W2):
        return plain(W1, W2), (W1, W2)

    def f_bwd(res, g):
        W1, W2 = res
        m = X.shape[0]
        Z1 = jnp.maximum(X @ W1, 0)
        L = Z1 @ W2
        E = jnp.exp(L - L.max(axis=1, keepdims=True))
        G2 = E / E.sum(axis=1, keepdims=True) - jax.nn.one_hot(y, W2.shape[1])
        G1 = (Z1 > 0) * (G2 @ W2.T)
        return factor * g * X.T @ G1 / m, factor * g * Z1.T @ G2 / m

    f.defvjp(f_fwd, f_bwd)
    np.random.seed(seed)  # check_grads draws its directions from numpy's global RNG
    try:
        check_grads(f, (jnp.asarray(inputs["W1"]), jnp.asarray(inputs["W2"])), order=1, modes=["rev"])
        return True
    except AssertionError:
        return False


def have(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def ours(inputs, backward, mode="full", forward=forward_numpy):
    return gradcheck.check_gradients(forward, backward, inputs, wrt=WRT, mode=mode).ok


# --- the three comparisons -----------------------------------------------------------------

def _cell(timing):
    """A table cell for ``timed``'s ``(seconds, ok)``, or ``-`` for a check not run."""
    if timing is None:
        return "-"
    t, ok = timing
    return f"{t:.3g} ({'pass' if ok else 'FAIL'})"


def speed(sizes, use_jax):
    print("## Speed (seconds; ratio = ours / theirs)")
    header = ["params", "ours full (numpy)", "ours full (array API)", "ours directional",
              "torch full", "torch fast", "jax"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    correct = make_backward()
    ours(net(4, 3, 2, 2), correct)  # warm-up: imports (torch among them) are not timed
    torch_check(net(4, 3, 2, 2), correct, True)
    for m, n, d, k in sizes:
        inputs = net(m, n, d, k)
        count = n * d + d * k
        row = {}
        # Per-element checks (ours and torch's) only where they take seconds, not hours.
        small = count <= 20_000
        row["full_np"] = timed(partial(ours, inputs, correct)) if small else None
        row["full_api"] = timed(partial(ours, inputs, correct, forward=forward_array_api)) if small else None
        row["dir"] = timed(partial(ours, inputs, correct, mode="directional"))
        row["torch_full"] = timed(partial(torch_check, inputs, correct, False)) if small else None
        row["torch_fast"] = timed(partial(torch_check, inputs, correct, True))
        row["jax"] = timed(partial(jax_check, inputs)) if use_jax and small else None
        keys = ("full_np", "full_api", "dir", "torch_full", "torch_fast", "jax")
        cells = [f"{count:,}"] + [_cell(row[key]) for key in keys]
        print("| " + " | ".join(cells) + " |", flush=True)
        ratios = []
        if row["torch_full"]:
            ratios.append(f"full(numpy)/torch full = {row['full_np'][0] / row['torch_full'][0]:.2f}")
            ratios.append(f"full(array API)/torch full = {row['full_api'][0] / row['torch_full'][0]:.2f}")
        ratios.append(f"directional/torch fast = {row['dir'][0] / row['torch_fast'][0]:.2f}")
        print("|   ratios: " + "; ".join(ratios) + " |")


def sensitivity(use_jax):
    print("\n## Smallest relative gradient error flagged (dW * (1 + r)), m=32 n=64 d=32 k=10")
    inputs = net(32, 64, 32, 10, seed=3)
    tools = {
        "ours full": lambda b: ours(inputs, b),
        "ours directional": lambda b: ours(inputs, b, mode="directional"),
        "torch full": lambda b: torch_check(inputs, b, False),
        "torch fast": lambda b: torch_check(inputs, b, True),
    }
    if use_jax:
        tools["jax"] = None
    rs = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    print("| tool | " + " | ".join(f"{r:g}" for r in rs) + " | smallest caught |")
    print("|---|" + "---|" * (len(rs) + 1))
    for name, tool in tools.items():
        caught = []
        for r in rs:
            ok = jax_check(inputs, factor=1 + r) if name == "jax" else tool(make_backward(1 + r))
            caught.append(not ok)
        smallest = min((r for r, c in zip(rs, caught, strict=True) if c), default=None)
        marks = " | ".join("caught" if c else "missed" for c in caught)
        print(f"| {name} | {marks} | {smallest if smallest else '-'} |")


def false_alarms(use_jax, seeds):
    print("\n## False alarms on correct ReLU nets (fraction of runs flagged; lower is better)")
    correct = make_backward()
    cases = {}
    zero_col = net(16, 24, 12, 5, seed=1)
    zero_col["W1"][:, 2] = 0.0
    cases["zero column of W1 (16x24x12)"] = [zero_col]
    at_zero = net(16, 24, 12, 5, seed=2)
    at_zero["X"][:, 0] = 1.0
    pre = at_zero["X"] @ at_zero["W1"]
    at_zero["W1"][0, :] -= pre[0] / at_zero["X"][0, 0]  # row 0 of X W1 becomes exactly 0
    cases["ReLU inputs at 0 (16x24x12)"] = [at_zero]
    cases["random 64x128x64 net, per seed"] = [net(64, 128, 64, 10, seed=s) for s in range(seeds)]
    print("| case | ours full | ours directional | torch full | torch fast | jax |")
    print("|---|---|---|---|---|---|")
    for label, nets in cases.items():
        big = nets[0]["W1"].size > 5000
        cells = []
        for tool in ("full", "directional", "torch_full", "torch_fast", "jax"):
            if tool == "jax" and not use_jax:
                cells.append("-")
                continue
            if tool == "torch_full" and big:
                cells.append("-")
                continue
            flags = []
            for i, inputs in enumerate(nets):
                if tool in ("full", "directional"):
                    ok = ours(inputs, correct, mode=tool)
                elif tool == "jax":
                    ok = jax_check(inputs, seed=i)
                else:
                    ok = torch_check(inputs, correct, tool == "torch_fast")
                flags.append(not ok)
            cells.append(f"{sum(flags)}/{len(flags)}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def memory():
    print("\n## Memory: peak Python allocations during our check (tracemalloc), against the inputs' size")
    import tracemalloc

    correct = make_backward()
    print("| check | params | inputs (MB) | peak (MB) | peak / inputs |")
    print("|---|---|---|---|---|")
    for (m, n, d, k), mode in (((64, 256, 64, 10), "full"), ((64, 1000, 1000, 10), "directional")):
        inputs = net(m, n, d, k)
        size = sum(a.nbytes for a in inputs.values()) / 2**20
        ours(inputs, correct, mode=mode)  # warm-up outside the trace
        tracemalloc.start()
        ours(inputs, correct, mode=mode)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak /= 2**20
        print(f"| ours {mode} | {n * d + d * k:,} | {size:.2f} | {peak:.2f} | {peak / size:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    use_jax = have("jax")
    if not use_jax:
        print("(jax not installed: its columns are skipped; pip install jax)")
    sizes = [(16, 32, 16, 10), (64, 256, 64, 10)] if not args.quick else [(16, 32, 16, 10)]
    if not args.quick:
        sizes.append((64, 1000, 1000, 10))
    speed(sizes, use_jax)
    sensitivity(use_jax)
    false_alarms(use_jax, seeds=3 if args.quick else 5)
    if not args.quick:
        memory()


if __name__ == "__main__":
    main()
