"""Single-element perturbations of a numpy forward, evaluated by forked worker processes.

A forward's small array operations hold Python's GIL, so threads barely overlap them; forked
processes do, and need nothing pickled: each child inherits the evaluator (forward, inputs,
upstream gradient) as it is, evaluates its share of the perturbations on its own copy of the
inputs, and streams the values back through a pipe, chunk by chunk, while the parent reports
progress. BLAS is held to one thread per process meanwhile, so processes do not fight over the
cores.

The values must be the ones a single process gets: a sample is evaluated again in the parent,
and any difference (a forward that keeps state between calls), a child that dies, or children
that stall (a forward that uses a threaded runtime, which a forked child cannot) ends the
attempt with a reason, for the caller to fall back to one process. Used only where ``fork`` is
safe and cheap (Linux), for numpy forwards (torch forwards have their own threads).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import struct
import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gradcheck.evaluate import Evaluator

__all__ = ["MIN_EVALUATIONS", "WorkersFailed", "available_cores", "choose_workers", "forked_values"]

MIN_EVALUATIONS = 256  # fewer evaluations than this are not worth a fork
MIN_SECONDS = 0.2  # nor is work that takes less than this in one process
CHUNK = 128  # evaluations per message from a child
VERIFY = 8  # values evaluated again in the parent to confirm the children's
STALL_SECONDS = 10.0  # no chunk from any child for this long (at least): give up on them
_HEADER = struct.Struct("<qq")  # (start, count) of the chunk that follows


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_workers(seconds_per_evaluation: float, evaluations: int) -> int:
    """Worker processes for ``evaluations`` perturbations: one per core (at most 8) when fork
    is available and they would take longer than ``MIN_SECONDS`` in one process, else 1."""
    cores = available_cores()
    if (
        cores < 2
        or not sys.platform.startswith("linux")
        or not hasattr(os, "fork")
        or evaluations < MIN_EVALUATIONS
        or seconds_per_evaluation * evaluations < MIN_SECONDS
    ):
        return 1
    return min(cores, 8)


def _blas_single_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class WorkersFailed(Exception):
    """The worker processes could not deliver; the message says why."""


def forked_values(
    ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray, workers: int,
    seconds_per_evaluation: float = 0.0,
) -> np.ndarray:
    """``ev.perturbed_values(name, flat_index, deltas)`` from ``workers`` child processes.

    Raises:
        WorkersFailed: a child died or stalled, or the values differ from the parent's own on a
            sample (the evaluator's working point is intact; evaluate in this process).
    """
    stall = max(STALL_SECONDS, 50 * CHUNK * seconds_per_evaluation)
    with _blas_single_thread():
        values = _gather(ev, name, flat_index, deltas, workers, stall)
        rng = np.random.default_rng(len(flat_index))
        sample = rng.choice(len(flat_index), size=min(VERIFY, len(flat_index)), replace=False)
        again = ev.serial_values(name, flat_index[sample], deltas[sample])
    if not np.array_equal(again, values[sample], equal_nan=True):
        raise WorkersFailed("the forward gave other values in worker processes than in this one "
                            "(it keeps state between calls?)")
    return values


def _child(ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray, part: np.ndarray, fd: int) -> None:
    """In the child: evaluate ``part`` (positions into flat_index) and write it, chunk by chunk."""
    code = 1
    try:
        if "torch" in sys.modules:
            # A forward that calls torch inside: the parent's torch thread pool does not exist
            # in a forked child, so torch must not try to use it (as in torch's own workers).
            sys.modules["torch"].set_num_threads(1)
        clone = ev.clone()
        with os.fdopen(fd, "wb", buffering=0) as out:
            for s in range(0, len(part), CHUNK):
                positions = part[s:s + CHUNK]
                chunk = clone.serial_values(name, flat_index[positions], deltas[positions])
                out.write(_HEADER.pack(int(positions[0]), len(positions)) + chunk.tobytes())
        code = 0
    finally:
        os._exit(code)  # never return into the parent's code (pytest, the caller's program)


def _start_child() -> tuple[int, int, int]:
    """A pipe and a forked child: ``(read end, write end, pid)``; pid is 0 in the child."""
    try:
        read_fd, write_fd = os.pipe()
    except OSError as exc:  # out of file descriptors
        raise WorkersFailed(f"worker processes could not be started ({exc})") from None
    try:
        with warnings.catch_warnings():
            # Python and some runtimes (jax) warn that forking a multi-threaded process may
            # deadlock a child that uses those threads: the child only runs the numpy forward,
            # and a child that stalls anyway is given up on (``stall``).
            warnings.filterwarnings("ignore", message=r".*fork\(\)", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*fork\(\)", category=RuntimeWarning)
            return read_fd, write_fd, os.fork()
    except OSError as exc:  # out of processes
        os.close(read_fd)
        os.close(write_fd)
        raise WorkersFailed(f"worker processes could not be started ({exc})") from None


def _gather(
    ev: Evaluator, name: str, flat_index: np.ndarray, deltas: np.ndarray, workers: int, stall: float
) -> np.ndarray:
    n = len(flat_index)
    # Contiguous shares: each child sends chunks of consecutive positions.
    parts = [p for p in np.array_split(np.arange(n), workers) if len(p)]
    values = np.full(n, np.nan)
    received = np.zeros(n, dtype=bool)
    children: dict[int, int] = {}  # read fd -> pid
    reaped: set[int] = set()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        for part in parts:
            read_fd, write_fd, pid = _start_child()
            if pid == 0:
                os.close(read_fd)
                _child(ev, name, flat_index, deltas, part, write_fd)
            os.close(write_fd)
            children[read_fd] = pid
        _read_all(ev, children, reaped, values, received, stall)
    finally:
        for read_fd, pid in children.items():
            with contextlib.suppress(OSError):
                os.close(read_fd)
            if pid not in reaped:  # interrupted: stop the child
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
    if not received.all():
        raise WorkersFailed("worker processes ended without sending every value")
    ev.evaluations += n
    return values


def _read_all(
    ev: Evaluator, children: dict[int, int], reaped: set[int], values: np.ndarray, received: np.ndarray,
    stall: float,
) -> None:
    """Read every child's chunks into ``values``; raise WorkersFailed if a child fails."""
    selector = selectors.DefaultSelector()
    buffers = {fd: b"" for fd in children}
    for fd in children:
        selector.register(fd, selectors.EVENT_READ)
    try:
        while buffers:
            ready = selector.select(timeout=stall)
            if not ready:
                raise WorkersFailed(f"worker processes sent nothing for {stall:.3g} s (a forward using a "
                                    "threaded runtime, such as jax, cannot run in a forked child?)")
            for key, _ in ready:
                fd = key.fd
                data = os.read(fd, 1 << 16)
                if not data:  # the child finished (or died)
                    selector.unregister(fd)
                    _, status = os.waitpid(children[fd], 0)
                    reaped.add(children[fd])
                    if status != 0 or buffers[fd]:
                        code = os.waitstatus_to_exitcode(status)
                        how = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
                        raise WorkersFailed(f"a worker process failed ({how})")
                    del buffers[fd]
                    continue
                buffer = buffers[fd] + data
                while len(buffer) >= _HEADER.size:
                    start, count = _HEADER.unpack_from(buffer)
                    end = _HEADER.size + 8 * count
                    if len(buffer) < end:
                        break
                    values[start:start + count] = np.frombuffer(buffer, np.float64, count, _HEADER.size)
                    received[start:start + count] = True
                    buffer = buffer[end:]
                    ev.tracker.tick(count)  # the parent reports progress as chunks arrive
                buffers[fd] = buffer
    finally:
        selector.close()
