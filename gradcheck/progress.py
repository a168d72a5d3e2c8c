"""Progress of one running check: what stage it is in and how many evaluations it has done.

``check_gradients(..., progress=...)`` takes:

* ``None`` (the default): a line on stderr, redrawn in place, only when stderr is a terminal
  and only once the check has run for more than ``QUIET_SECONDS`` (short checks print nothing);
* ``True``: that line from the start; when stderr is not a terminal (a CI log), one plain line
  every ``LOG_SECONDS`` instead;
* ``False``: nothing;
* a callable: called with a ``Progress`` at most every ``INTERVAL`` seconds and at the end of
  each stage (it may raise to abort the check: the exception propagates).

The engine reports through a ``Tracker``: ``stage(...)`` when a stage starts, ``tick(k)`` after
``k`` forward evaluations. The numbers are forward evaluations, the unit that costs time.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["NULL_TRACKER", "Progress", "Tracker", "close", "tracker_for"]

INTERVAL = 0.1  # seconds between callbacks
QUIET_SECONDS = 1.0  # the default display stays silent for checks shorter than this
LOG_SECONDS = 5.0  # seconds between lines when stderr is not a terminal
# The clock a check's progress is timed by, taken when its tracker is made (tests put in a clock
# they control, so that what a check shows does not depend on how fast the machine runs it).
CLOCK: Callable[[], float] = time.perf_counter


@dataclass(frozen=True)
class Progress:
    """One update of a running check.

    Attributes:
        stage: what runs: "noise", "central differences", "refinement" (full mode);
            "directions", "localization", "element checks" (directional mode).
        input: the input the stage works on ("" for stages over all inputs).
        done: forward evaluations done in this stage.
        total: evaluations the stage is expected to take (None if unknown; a stage may end
            before its total or, for directions that cross kinks, run past it).
        evaluations: forward evaluations in the whole check so far.
        elapsed: seconds since the check started.
        remaining: estimated seconds left in this stage (None without a total).
        finished: True on the last update of a stage.
    """

    stage: str
    input: str
    done: int
    total: int | None
    evaluations: int
    elapsed: float
    remaining: float | None = None
    finished: bool = False

    def describe(self) -> str:
        """``W1: central differences 12,288/32,768 (38%), 1.4 s, about 2.3 s left``."""
        what = f"{self.input}: {self.stage}" if self.input else self.stage
        if self.total:
            share = min(self.done / self.total, 1.0)
            text = f"{what} {self.done:,}/{self.total:,} ({share:.0%}), {self.elapsed:.1f} s"
            if self.remaining is not None and not self.finished:
                text += f", about {self.remaining:.1f} s left"
        else:
            text = f"{what} {self.done:,} evaluations, {self.elapsed:.1f} s"
        return text


class Tracker:
    """Counts evaluations and passes throttled ``Progress`` updates to ``callback``."""

    def __init__(self, callback: Callable[[Progress], Any], *, interval: float = INTERVAL) -> None:
        self.callback = callback
        self.interval = interval
        self.clock = CLOCK
        self.start = self.clock()
        self.evaluations = 0
        self._stage = ""
        self._input = ""
        self._done = 0
        self._total: int | None = None
        self._stage_start = self.start
        self._next = self.start + interval
        self._open = False

    def stage(self, stage: str, input: str = "", total: int | None = None) -> None:
        """A new stage starts (the previous one, if open, is finished first)."""
        self.finish()
        self._stage, self._input, self._done, self._total = stage, input, 0, total
        self._stage_start = self.clock()
        self._open = True

    def tick(self, k: int = 1) -> None:
        """``k`` more forward evaluations were made."""
        self._done += k
        self.evaluations += k
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            self.callback(self._snapshot(now, False))

    def interlude(self, stage: str, total: int | None = None) -> _Interlude:
        """``with tracker.interlude("noise", 16): ...``: a stage inside the current one (on no
        particular input), which resumes (with its count) afterwards."""
        return _Interlude(self, stage, total)

    def finish(self) -> None:
        """The current stage is over."""
        if self._open:
            self._open = False
            self.callback(self._snapshot(self.clock(), True))

    def _snapshot(self, now: float, finished: bool) -> Progress:
        remaining = None
        total = self._total
        if total is not None and self._done > total:
            total = self._done  # the estimate was short (suspect directions cost more)
        if total and self._done:
            rate = (now - self._stage_start) / self._done
            remaining = (total - self._done) * rate
        return Progress(self._stage, self._input, self._done, total, self.evaluations,
                        now - self.start, remaining, finished)


class _Interlude:
    def __init__(self, tracker: Tracker, stage: str, total: int | None) -> None:
        self.tracker, self.name, self.total = tracker, stage, total

    def __enter__(self) -> None:
        t = self.tracker
        self.saved = (t._open, t._stage, t._input, t._done, t._total, t._stage_start)
        t._open = False  # paused, not finished
        t.stage(self.name, "", self.total)

    def __exit__(self, *exc: object) -> None:
        t = self.tracker
        t.finish()
        t._open, t._stage, t._input, t._done, t._total, t._stage_start = self.saved


class _NullTracker(Tracker):
    """Tracks nothing (``progress=False``): the evaluation loops call it unconditionally."""

    def __init__(self) -> None:
        pass

    def stage(self, stage: str, input: str = "", total: int | None = None) -> None:
        pass

    def tick(self, k: int = 1) -> None:
        pass

    def interlude(self, stage: str, total: int | None = None) -> Any:
        return contextlib.nullcontext()

    def finish(self) -> None:
        pass


NULL_TRACKER: Tracker = _NullTracker()


class _StderrLine:
    """Draws progress on one stderr line (in place on a terminal, a line per period in a log)."""

    def __init__(self, stream: TextIO, *, always: bool) -> None:
        self.stream = stream
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.delay = 0.0 if always else QUIET_SECONDS
        self.drawn = False
        self.last_line = -LOG_SECONDS

    def __call__(self, update: Progress) -> None:
        if update.elapsed < self.delay:
            return
        text = f"gradcheck: {update.describe()}"
        if self.terminal:
            self.stream.write("\r" + text[:200] + "\x1b[K")
            self.drawn = True
        elif update.elapsed - self.last_line >= LOG_SECONDS:
            self.stream.write(text + "\n")
            self.last_line = update.elapsed
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")  # the line was transient: leave the terminal clean
            self.stream.flush()
            self.drawn = False


class _DisplayTracker(Tracker):
    def __init__(self, display: _StderrLine) -> None:
        super().__init__(display)
        self.display = display

    def close(self) -> None:
        self.finish()
        self.display.close()


def tracker_for(progress: Any) -> Tracker:
    """The tracker for ``check_gradients``'s ``progress`` argument (validated by the caller)."""
    if progress is False:
        return NULL_TRACKER
    if progress is None or progress is True:
        stream = sys.stderr
        if progress is None and not getattr(stream, "isatty", lambda: False)():
            return NULL_TRACKER
        return _DisplayTracker(_StderrLine(stream, always=progress is True))
    return Tracker(progress)


def close(tracker: Tracker) -> None:
    """End the check's progress: finish the open stage and clear a drawn line."""
    if isinstance(tracker, _DisplayTracker):
        tracker.close()
    else:
        tracker.finish()
