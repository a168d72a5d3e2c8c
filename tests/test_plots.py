"""``--plot``: the step picture handles exact (zero-error) steps and says what its curve shows."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck.plots import STEPS, curve_shape, step_curve, steps_figure

pytest.importorskip("matplotlib")

EPS = float(np.finfo(np.float64).eps)
ROUNDING = 1e-16 / STEPS  # falls as h grows
TRUNCATION = 1e-2 * STEPS ** 2  # grows as h^2
EXACT_HALF = np.where(np.arange(STEPS.size) % 2 == 0, 0.0, ROUNDING)


@pytest.mark.parametrize(
    ("errors", "says"),
    [
        (np.zeros(STEPS.size), "no truncation, no rounding: error 0 at all 53 steps"),
        (ROUNDING + TRUNCATION, "truncation falls and rounding rises as h shrinks"),
        (ROUNDING, "no truncation error; rounding rises as h shrinks"),  # a linear function
        (EXACT_HALF, "no truncation error; rounding rises as h shrinks; error 0 at 27 of 53 steps"),
        (TRUNCATION + 1e-17, "truncation falls as h shrinks; no rounding error at the smallest steps"),
        (np.r_[ROUNDING[:-1], 0.05], "the largest steps reach a kink; rounding rises as h shrinks"),
        (np.full(STEPS.size, 3e-16), "error at rounding level at every step"),
    ],
)
def test_the_title_says_what_the_curve_shows(errors, says):
    assert curve_shape(errors, EPS) == says


def _curve(errors):
    return {"input": "x", "index": (0,), "steps": STEPS * 1e-2, "errors": np.asarray(errors), "chosen": 1e-7,
            "reference": 2.0, "reference_kind": "torch", "eps": EPS}


@pytest.mark.parametrize("errors", [np.zeros(STEPS.size), EXACT_HALF])
def test_zero_errors_are_marked_on_a_log_axis_with_ticks(errors):
    import matplotlib.pyplot as plt

    fig = steps_figure("mine.linear", _curve(errors))
    try:
        (ax,) = fig.axes
        low, high = ax.get_ylim()
        assert ax.get_yscale() == "log" and 0 < low < high
        ticks = [t for t in ax.get_yticks() if low <= t <= high]
        assert len(ticks) >= 2  # a readable axis
        curve, zeros = ax.lines[0], ax.lines[1]
        plotted = np.asarray(curve.get_ydata(), dtype=float)
        assert np.all(np.isnan(plotted) == (errors == 0))  # no made-up value for an exact step
        assert len(zeros.get_xdata()) == int(np.sum(errors == 0))
        assert "error exactly 0" in zeros.get_label()
        assert "error 0 at" in ax.get_title()
    finally:
        plt.close(fig)


def test_a_linear_function_has_no_truncation_error():
    # 2x at x = 1: x +- h, 2 (x +- h) and their difference are exact in floating point, so
    # is every central difference: the curve is zero throughout.
    curve = step_curve(lambda x: 2.0 * x, {"x": np.array([1.0])})
    assert not np.any(curve["errors"])
    assert curve_shape(curve["errors"], curve["eps"]).startswith("no truncation")
