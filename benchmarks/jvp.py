"""Forward mode at a million parameters: what a JVP check costs, against one forward and against
``torch.autograd.gradcheck(check_forward_ad=True, fast_mode=True)``.

The two-layer ReLU softmax net of the seeds, 64 x 1024 x 1000 x 10 (``loss = mean
softmax_xent(ReLU(X W1) W2, y)``; W1 and W2 hold 1,034,000 parameters), with a hand-written
forward mode (``jvp``) checked alone (``backward=None`` on a numpy forward): every call of the
forward and of the jvp is counted. Our check should cost at most four forward evaluations per
tangent (two when the central difference matches at once) and one jvp call per tangent. torch's
fast gradcheck checks torch's own forward-mode AD of the same net (written in torch), its
reverse mode switched off; its forward calls are counted too.

Run: ``python benchmarks/jvp.py [--quick]`` (``--quick``: 64 x 256 x 250 x 10). Times are the best
of three runs, wall-clock seconds, with numpy's BLAS and torch on one thread each (so that other
work on the machine moves them less); the ratio is ours / torch's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gradcheck


class Counted:
    """A function that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def forward(X, y, W1, W2):
    Z1 = np.maximum(X @ W1, 0)
    L = Z1 @ W2
    L = L - L.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(L).sum(axis=1)) - L[np.arange(len(y)), y])


def jvp(tangents, X, y, W1, W2):
    """dloss = sum((softmax(L) - I_y) * (dZ1 W2 + Z1 dW2)) / m, dZ1 = 1{X W1 > 0} (X dW1)."""
    A = X @ W1
    Z1 = np.maximum(A, 0)
    L = Z1 @ W2
    E = np.exp(L - L.max(axis=1, keepdims=True))
    G2 = E / E.sum(axis=1, keepdims=True)
    G2[np.arange(len(y)), y] -= 1
    dL = ((A > 0) * (X @ tangents["W1"])) @ W2 + Z1 @ tangents["W2"]
    return np.sum(G2 * dL) / X.shape[0]


def torch_forward(X, y):
    import torch

    def loss(W1, W2):
        L = torch.relu(X @ W1) @ W2
        return torch.nn.functional.cross_entropy(L, y)

    return loss


def best_of(run, repeats=3):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 x 256 x 250 x 10 instead")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        run(args.quick)


def run(quick):
    m, n, d, k = (64, 256, 250, 10) if quick else (64, 1024, 1000, 10)
    rng = np.random.default_rng(0)
    inputs = {"X": rng.standard_normal((m, n)), "y": rng.integers(0, k, m),
              "W1": rng.standard_normal((n, d)) / np.sqrt(n), "W2": rng.standard_normal((d, k)) / np.sqrt(d)}
    params = inputs["W1"].size + inputs["W2"].size
    print(f"two-layer net {m}x{n}x{d}x{k}: {params:,} parameters (W1, W2), float64")

    one_forward, _ = best_of(lambda: forward(**inputs), repeats=5)
    counted_forward, counted_jvp = Counted(forward), Counted(jvp)

    def ours():
        counted_forward.calls = counted_jvp.calls = 0
        return gradcheck.check_gradients(counted_forward, None, inputs, wrt=("W1", "W2"), jvp=counted_jvp,
                                         progress=False)

    seconds, result = best_of(ours)
    assert result.ok, str(result)
    tangents = len(result.forward.tangents)
    per_tangent = result.forward.evaluations / tangents
    print(f"one forward: {one_forward * 1e3:.1f} ms")
    print(f"gradcheck, forward mode alone: {seconds:.3f} s = {seconds / one_forward:.1f} forwards; "
          f"{tangents} tangents, {result.forward.evaluations} evaluations along them "
          f"({per_tangent:.1f} per tangent, at most 4), {counted_jvp.calls} jvp calls "
          f"({counted_jvp.calls / tangents:.0f} per tangent); {counted_forward.calls} forward calls in all "
          f"(the point and its determinism check included)")
    assert per_tangent <= 4 and counted_jvp.calls == tangents

    import torch

    X, y = torch.from_numpy(inputs["X"]), torch.from_numpy(inputs["y"])
    counted_torch = Counted(torch_forward(X, y))
    W1 = torch.from_numpy(inputs["W1"].copy()).requires_grad_()
    W2 = torch.from_numpy(inputs["W2"].copy()).requires_grad_()

    def theirs():
        counted_torch.calls = 0
        return torch.autograd.gradcheck(counted_torch, (W1, W2), check_forward_ad=True, check_backward_ad=False,
                                        fast_mode=True)

    torch_seconds, ok = best_of(theirs)
    assert ok
    print(f"torch.autograd.gradcheck(check_forward_ad=True, fast_mode=True): {torch_seconds:.3f} s = "
          f"{torch_seconds / one_forward:.1f} forwards; {counted_torch.calls} forward calls")
    print(f"ratio ours / torch: {seconds / torch_seconds:.2f} (time), "
          f"{counted_forward.calls / max(counted_torch.calls, 1):.2f} (forward calls)")


if __name__ == "__main__":
    main()
