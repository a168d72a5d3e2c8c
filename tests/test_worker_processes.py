"""Worker processes for the per-element pass: same values as one process, or a fallback."""

import os
import sys
import time

import numpy as np
import pytest

import gradcheck
from gradcheck import parallel
from gradcheck.evaluate import Evaluator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes use fork (Linux)")

PARENT = os.getpid()


def _smooth(x, w):
    return float(np.sum(np.sin(x) * w**2) + np.sum(np.tanh(x @ w)))


def _inputs(seed=0, n=24, d=16):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, d)), "w": rng.standard_normal(d)}


@pytest.fixture
def always_fork(monkeypatch):
    """Workers for any amount of work (normally only passes longer than MIN_SECONDS fork)."""
    monkeypatch.setattr(parallel, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(parallel, "MIN_EVALUATIONS", 8)
    monkeypatch.setattr("gradcheck.evaluate.MIN_EVALUATIONS", 8)
    monkeypatch.setattr(parallel, "available_cores", lambda: 3)


def _evaluator(forward=_smooth):
    return Evaluator(forward, _inputs())


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_forked_values_equal_one_process_bit_for_bit(workers):
    ev = _evaluator()
    n = ev.work["x"].size
    index = np.concatenate([np.arange(n), np.arange(n)])
    deltas = np.concatenate([np.full(n, 1e-5), np.full(n, -1e-5)])
    alone = ev.perturbed_values("x", index, deltas)
    ticks = []

    class Count:
        def tick(self, k=1):
            ticks.append(k)

    ev = ev.derived(tracker=Count())
    forked = parallel.forked_values(ev, "x", index, deltas, workers)
    assert np.array_equal(forked, alone)
    assert sum(ticks) >= len(index)  # every chunk reported (plus the re-evaluated sample)
    assert np.array_equal(ev.work["x"], _inputs()["x"])  # the working point is restored


def _differs(x, w):
    return _smooth(x, w) + (1e-3 if os.getpid() != PARENT else 0.0)


def _dies(x, w):
    if os.getpid() != PARENT:
        os._exit(3)
    return _smooth(x, w)


def _hangs(x, w):
    if os.getpid() != PARENT:
        time.sleep(60)
    return _smooth(x, w)


@pytest.fixture
def children(monkeypatch):
    """{pid: wait status} of the child processes forked during the test (None until waited for)."""
    ended: dict[int, int | None] = {}
    fork, waitpid = os.fork, os.waitpid

    def recording_fork():
        pid = fork()
        if pid:
            ended[pid] = None
        return pid

    def recording_waitpid(pid, options):
        got, status = waitpid(pid, options)
        if got in ended:
            ended[got] = status
        return got, status

    monkeypatch.setattr(os, "fork", recording_fork)
    monkeypatch.setattr(os, "waitpid", recording_waitpid)
    return ended


# Only the stall is timed: a forward that differs or dies is found out at once, however busy the
# machine, so that its children need not report within a short stall.
@pytest.mark.parametrize(("forward", "stall", "message"), [
    (_differs, parallel.STALL_SECONDS, "the forward gave other values in worker processes than in this one"),
    (_dies, parallel.STALL_SECONDS, r"a worker process failed \(exit code 3\)"),
    (_hangs, 0.5, "worker processes sent nothing for 0.5 s"),
])
def test_workers_that_misbehave_are_given_up_on(forward, stall, message, monkeypatch, children):
    monkeypatch.setattr(parallel, "STALL_SECONDS", stall)
    ev = _evaluator(forward)
    index = np.arange(ev.work["x"].size)
    with pytest.raises(parallel.WorkersFailed, match=message):
        parallel.forked_values(ev, "x", index, np.full(index.size, 1e-5), 2)
    # Every child was waited for; stalled children were stopped (killed), not awaited.
    assert len(children) == 2 and None not in children.values()
    if forward is _hangs:
        assert all(os.WIFSIGNALED(status) for status in children.values())
    assert np.array_equal(ev.work["x"], _inputs()["x"])  # the working point is intact


def _numeric_backward(dout, x, w):
    return gradcheck.numeric_gradient(_smooth, {"x": x, "w": w})


def test_check_with_workers_matches_one_process(always_fork, monkeypatch):
    def wrong(dout, x, w):
        g = _numeric_backward(dout, x, w)
        g["x"] = g["x"] * (1 + 1e-4)
        return g

    forked = gradcheck.check_gradients(_smooth, wrong, _inputs(), mode="full")
    monkeypatch.setattr(parallel, "available_cores", lambda: 1)
    alone = gradcheck.check_gradients(_smooth, wrong, _inputs(), mode="full")
    assert not forked.ok and not alone.ok
    # The same evaluations, plus the sample each forked pass evaluates again.
    assert forked.evaluations > alone.evaluations
    assert (forked.evaluations - alone.evaluations) % parallel.VERIFY == 0
    assert [(m.input, m.index, m.references.get("numeric")) for m in forked.mismatches] == [
        (m.input, m.index, m.references.get("numeric")) for m in alone.mismatches
    ]


def test_check_falls_back_and_says_so(always_fork):
    result = gradcheck.check_gradients(_differs, _numeric_backward, _inputs(), mode="full")
    assert result.ok, str(result)
    assert any("worker processes" in note for note in result.notes)


def test_short_work_stays_in_one_process():
    assert parallel.choose_workers(1e-5, 1000) == 1  # 10 ms of work
    assert parallel.choose_workers(1e-3, 100) == 1  # too few evaluations
    if parallel.available_cores() > 1:
        assert parallel.choose_workers(1e-3, 10_000) == min(parallel.available_cores(), 8)


def test_numeric_gradient_with_workers_matches_one_process(always_fork, monkeypatch):
    forked = gradcheck.numeric_gradient(_smooth, _inputs())
    monkeypatch.setattr(parallel, "available_cores", lambda: 1)
    alone = gradcheck.numeric_gradient(_smooth, _inputs())
    assert forked.keys() == alone.keys() == {"x", "w"}
    for name in forked:
        assert np.array_equal(forked[name], alone[name])


def test_a_forward_that_calls_torch_inside_runs_in_workers(always_fork, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(parallel, "STALL_SECONDS", 5.0)
    a = torch.randn(256, 256)
    (a @ a).sum()  # the parent's torch thread pool is up
    big = torch.randn(128, 128, dtype=torch.float64)

    def uses_torch(x, w):
        noise_free = (big @ big).sum() * 0  # a threaded torch op, inside a numpy forward
        return _smooth(x, w) + float(noise_free)

    result = gradcheck.check_gradients(uses_torch, _numeric_backward, _inputs(), mode="full")
    assert result.ok, str(result)
    assert not any("worker processes" in note for note in result.notes), result.notes


def test_no_processes_to_fork_falls_back(always_fork, monkeypatch):
    def refuse():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    result = gradcheck.check_gradients(_smooth, _numeric_backward, _inputs(), mode="full")
    assert result.ok, str(result)
    assert any("worker processes could not be started" in note for note in result.notes), result.notes
