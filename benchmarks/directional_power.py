"""Directional mode: does its statement of what it could have missed hold, and what does it cost?

1. Power. A directional check states, per input, the smallest error in any single element that
   its directions would have caught with probability >= 1 - POWER_DELTA (``InputSummary.
   detectable``). For each trial, a check of the correct gradient at a fixed point (seed t) gives
   the statement; then one element of one input (chosen at random, as is the error's sign) is
   made wrong by exactly the stated size, and the same check (same seed: the same directions)
   runs on that gradient (the noise measurement and Richardson step of a suspect direction
   included). The backward is evaluated once per size and its gradient copied per trial; the
   forward is the float64 numpy net, so only the numeric oracle judges (no exact oracle compares
   the elements). To keep the run short, only the first ``--localize`` trials per size also
   localize a failing direction down to the element; the others run with a localization budget
   of 0 (``directional.MAX_LEAVES``), so a failing direction becomes an unlocalized mismatch:
   caught or not is the same, as a failing direction fails the check either way. Printed:
   trials, caught, the rate and the bound, how many of the localized trials found the planted
   element, and in how many trials an element other than the planted one was flagged.
2. Cost. At the two-layer net 64x1024x1000x10 (about 1M parameters): the time of a directional
   check of the correct backward against one forward plus one backward, and cProfile's split of
   the check's time between the forward calls, the directions' stage and the rest. Measured the
   same way before the +-1 directions (Gaussian directions drawn per input, perturbed copies made
   per step; also before the backward's repeats joined every check), the check took 15-16.6x one
   forward plus backward, the forward calls 26-32% of it.

Run: ``python benchmarks/directional_power.py [--trials N] [--localize N] [--quick]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
from compare_anchors import WRT, forward_numpy, make_backward, net

import gradcheck
from gradcheck import directional
from gradcheck.tolerance import POWER_DELTA

SIZES = {"17k": (64, 256, 64, 10), "1M": (64, 1024, 1000, 10)}


def power(label: str, dims: tuple[int, int, int, int], trials: int, localize: int) -> bool:
    """Plant single-element errors at the stated size; True when the rate meets the bound."""
    inputs = net(*dims)
    grads = make_backward()(1.0, **inputs)
    count = sum(grads[n].size for n in WRT)
    pick = np.random.default_rng(12345)
    caught = localized = elsewhere = 0
    budget = directional.MAX_LEAVES
    largest = {n: 0.0 for n in WRT}
    start = time.perf_counter()
    for trial in range(trials):
        def correct(dout, **kw):
            return {n: dout * g.copy() for n, g in grads.items()}

        stated = gradcheck.check_gradients(forward_numpy, correct, inputs, wrt=WRT, mode="directional", seed=trial)
        assert stated.ok, str(stated)
        name = WRT[int(pick.integers(len(WRT)))]
        summary = next(s for s in stated.inputs if s.name == name)
        assert summary.detectable is not None
        largest[name] = max(largest[name], summary.detectable.relative_error)
        j = int(pick.integers(grads[name].size))
        error = float(pick.choice([-1.0, 1.0])) * summary.detectable.relative_error * np.max(np.abs(grads[name]))

        def planted(dout, name=name, j=j, error=error, **kw):
            out = {n: dout * g.copy() for n, g in grads.items()}
            out[name].reshape(-1)[j] += dout * error
            return out

        directional.MAX_LEAVES = budget if trial < localize else 0
        try:
            result = gradcheck.check_gradients(forward_numpy, planted, inputs, wrt=WRT, mode="directional",
                                               seed=trial)
        finally:
            directional.MAX_LEAVES = budget
        caught += not result.ok
        at = tuple(int(i) for i in np.unravel_index(j, grads[name].shape))
        localized += any(m.input == name and m.index == at for m in result.mismatches)
        elsewhere += any(m.index and (m.input, m.index) != (name, at) for m in result.mismatches)
    seconds = time.perf_counter() - start
    rate = caught / trials
    bound = 1.0 - POWER_DELTA
    sizes = ", ".join(f"{n} {v:.2g}" for n, v in largest.items())
    print(f"| {label} ({count:,} params) | {trials} | {caught} | {rate:.4f} | >= {bound:g} | "
          f"{localized}/{min(localize, trials)} | {elsewhere} | {sizes} | {seconds:.0f} |", flush=True)
    return rate >= bound


def best(fn, repeats: int) -> float:
    """The least CPU time of ``repeats`` runs of ``fn`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def cost(repeats: int) -> None:
    """The 1M check's time against one forward plus one backward, and cProfile's split.

    CPU time of this process with BLAS on one thread: on a shared machine, wall-clock times of
    these 2-200 ms runs scatter by 50x under load while CPU times stay within a few percent."""
    from threadpoolctl import threadpool_limits

    inputs = net(*SIZES["1M"])
    backward = make_backward()

    def check():
        return gradcheck.check_gradients(forward_numpy, backward, inputs, wrt=WRT, mode="directional")

    with threadpool_limits(1):
        result = check()  # warm-up (imports, torch's attempt at the numpy forward)
        forward_s = best(lambda: forward_numpy(**inputs), repeats)
        backward_s = best(lambda: backward(1.0, **inputs), repeats)
        check_s = best(check, repeats)
        profile = cProfile.Profile(time.process_time)
        profile.runcall(check)
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = stats.stats  # type: ignore[attr-defined]
    in_forward = next(v for k, v in entries.items() if k[2] == "forward_numpy")
    calls, forward_total = in_forward[1], in_forward[3]
    # The directional stage itself: every input's directions, from drawing them to the statement.
    stage = sum(v[3] for k, v in entries.items() if k[2] == "check_input_directional")
    print(f"\n## Cost at {sum(inputs[n].size for n in WRT):,} parameters (64x1024x1000x10): CPU time, "
          f"BLAS on one thread, least of {repeats}")
    print("| forward | backward | directional check | check / (forward + backward) | "
          "forward calls | their share of the check (cProfile) | the directions' stage (cProfile) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {forward_s * 1e3:.2f} ms | {backward_s * 1e3:.2f} ms | {check_s * 1e3:.1f} ms | "
          f"{check_s / (forward_s + backward_s):.1f}x | {calls} ({result.evaluations} evaluations counted) | "
          f"{forward_total / total:.0%} | {stage / total:.0%}: {stage * 1e3:.0f} ms, "
          f"{stage / (forward_s + backward_s):.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="planted errors per size (default 200)")
    parser.add_argument("--localize", type=int, default=20,
                        help="trials per size that also localize the failing direction (default 20)")
    parser.add_argument("--quick", action="store_true", help="20 trials, 17k only, and the cost")
    args = parser.parse_args()
    trials = 20 if args.quick else args.trials
    print(f"## Power: single-element errors planted at the stated size (caught with probability "
          f">= {1 - POWER_DELTA:g})")
    print("| net | trials | caught | rate | bound | localized to the element (of those localizing) | "
          "an element flagged elsewhere | largest stated size | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = {label: dims for label, dims in SIZES.items() if not (args.quick and label == "1M")}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # BLAS on one thread: two threads per process gain little on a busy machine
        held = [power(label, dims, trials, args.localize) for label, dims in sizes.items()]
    cost(repeats=5 if args.quick else 15)
    print(f"\nstatement {'holds' if all(held) else 'FAILS'} at every size")


if __name__ == "__main__":
    main()
