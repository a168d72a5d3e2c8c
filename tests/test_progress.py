"""Progress of long checks: the callback's updates, the stderr line, and bad arguments.

Checks here are timed by ``check_clock``, which advances a fixed step at each reading: what they
show is then the same on any machine, however fast or busy."""

import inspect
import io
import itertools
import re

import pytest
import relu_net
from relu_net import WRT

import gradcheck
from gradcheck import progress as progress_module


def _net():
    return relu_net.inputs(0, m=8, n=12, d=6, k=3)


def _scaled(factor):
    def backward(dout, **kw):
        return {k: v * factor for k, v in relu_net.backward(dout, **kw).items()}

    return backward


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("factor", [1.0, 1 + 1e-4])
def test_callback_sees_every_stage_and_every_evaluation(mode, factor, check_clock):
    check_clock(progress_module.INTERVAL)  # each reading is an interval later: every tick reports
    updates = []
    result = gradcheck.check_gradients(relu_net.forward, _scaled(factor), _net(), wrt=WRT, mode=mode,
                                       progress=updates.append)
    assert result.ok == (factor == 1.0)
    finished = [u for u in updates if u.finished]
    assert finished, "each stage ends with a finished update"
    # The count is the check's own count of forward evaluations.
    assert updates[-1].evaluations == result.evaluations
    first_stage = "central differences" if mode == "full" else "directions"
    assert {(u.stage, u.input) for u in finished} >= {(first_stage, "W1"), (first_stage, "W2")}
    for u in updates:
        assert 0 <= u.done <= (u.total if u.total is not None else u.done)
        assert u.elapsed >= 0
        assert u.remaining is None or u.remaining >= 0
    elapsed = [u.elapsed for u in updates]
    assert elapsed == sorted(elapsed)
    assert any(not u.finished for u in updates), "updates come within a stage, not only at its end"
    if mode == "full":
        # A central pass costs two evaluations per element; a wrong gradient is refined.
        central = {u.input: u.done for u in finished if u.stage == "central differences"}
        assert central == {"W1": 2 * 12 * 6, "W2": 2 * 6 * 3}
        assert any(u.stage == "refinement" for u in finished) == (factor != 1.0)


def test_progress_false_and_default_off_a_terminal_write_nothing(capsys):
    for progress in (False, None):
        gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT, progress=progress)
    assert capsys.readouterr().err == ""


ELAPSED = re.compile(r"(?:\)|evaluations), ([\d.]+) s")  # the elapsed seconds in a described update


def test_progress_true_in_a_log_writes_plain_lines(capsys, check_clock):
    check_clock(1.0)
    gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("gradcheck: ")
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert all(line.startswith("gradcheck: ") for line in lines)
    # One line every LOG_SECONDS of the check, the first at once.
    elapsed = [float(ELAPSED.search(line)[1]) for line in lines]
    assert len(lines) > 1 and elapsed[0] <= progress_module.LOG_SECONDS
    assert all(b - a >= progress_module.LOG_SECONDS for a, b in itertools.pairwise(elapsed))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_redraws_one_line_and_clears_it(monkeypatch, check_clock):
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    check_clock(progress_module.INTERVAL)
    gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT, mode="full", progress=True)
    text = stream.getvalue()
    assert "\n" not in text
    assert "central differences" in text and "%" in text
    # Redrawn in place while a stage runs, not only at its end.
    assert re.search(r"\rgradcheck: W1: central differences [\d,]+/144 \((?!100%)\d+%\)", text), text
    assert text.endswith("\r\x1b[K")  # the transient line is erased at the end


def test_default_on_a_terminal_stays_quiet_for_short_checks(monkeypatch, check_clock):
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    check_clock(0.0)  # the check takes no time at all
    gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT)
    assert stream.getvalue() == ""


def test_default_on_a_terminal_shows_a_check_once_it_has_run_a_while(monkeypatch, check_clock):
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    check_clock(progress_module.QUIET_SECONDS / 4)
    gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT)
    drawn = [float(ELAPSED.search(draw)[1]) for draw in stream.getvalue().split("\r") if draw.startswith("gradcheck: ")]
    assert drawn and min(drawn) >= progress_module.QUIET_SECONDS
    assert stream.getvalue().endswith("\r\x1b[K")


def test_a_raising_callback_aborts_the_check():
    class Stop(Exception):
        pass

    def stop(update):
        raise Stop(update.stage)

    with pytest.raises(Stop):
        gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT, progress=stop)


@pytest.mark.parametrize("bad", ["yes", 1, 0.5, [print]])
def test_bad_progress_is_misuse(bad):
    message = r"progress must be None, True, False or a callable, got progress="
    with pytest.raises(gradcheck.GradcheckError, match=message):
        gradcheck.check_gradients(relu_net.forward, _scaled(1.0), _net(), wrt=WRT, progress=bad)


def test_describe_reads_as_a_sentence():
    p = gradcheck.Progress("central differences", "W1", 12288, 32768, 12300, 1.4, 2.3)
    assert p.describe() == "W1: central differences 12,288/32,768 (38%), 1.4 s, about 2.3 s left"
    q = gradcheck.Progress("noise", "", 16, None, 20, 0.25, None, True)
    assert q.describe() == "noise 16 evaluations, 0.2 s"


def test_an_interlude_runs_on_no_input_and_the_stage_it_interrupts_resumes():
    updates = []
    tracker = progress_module.Tracker(updates.append, interval=float("inf"))  # finished stages only
    tracker.stage("central differences", "W1", 10)
    tracker.tick(3)
    with tracker.interlude("noise", 16):
        tracker.tick(16)
    tracker.tick(2)
    tracker.finish()
    assert [(u.stage, u.input, u.done, u.total) for u in updates] == [
        ("noise", "", 16, 16), ("central differences", "W1", 5, 10)]
    assert list(inspect.signature(tracker.interlude).parameters) == ["stage", "total"]
    assert list(inspect.signature(progress_module.NULL_TRACKER.interlude).parameters) == ["stage", "total"]
