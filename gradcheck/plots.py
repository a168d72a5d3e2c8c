"""Pictures of a run (``report --plot DIR``), with matplotlib as an optional extra.

Per case, ``<case>.steps.png``: the error of a one-step central difference against the step
size ``h`` for one element (the one with the largest gradient of the checked inputs), with the
step the numeric oracle chose marked. Truncation error falls as ``h^2`` and rounding error grows
as ``eps/h``, a V; but a function linear (or quadratic) along the element has no truncation
error, and at some steps the difference is exact: the title says what the curve shows
(``curve_shape``), and steps with an error of exactly 0 are marked along the bottom of the log
axis. The reference is torch autograd when the forward runs on torch, else the oracle's
extrapolated estimate.

For cases that declare ``layers``, ``<case>.layers.png``: the norm of each layer's gradient,
analytic and reference side by side on a log scale: vanishing (or exploding) gradients through
a deep chain, and the layer where a backward goes wrong, are visible at a glance.

The upstream gradient is all ones (``L = sum(forward)``); the examples are those the run checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcheck.case import Case
from gradcheck.errors import GradcheckError
from gradcheck.evaluate import as_float_array
from gradcheck.inputs import prepare_inputs, resolve_wrt
from gradcheck.numeric import machine_eps, numeric_gradient, step_sizes

__all__ = ["INSTALL_HINT", "check_plot_dir", "curve_shape", "layer_norms", "plot_case", "require_matplotlib",
           "step_curve", "steps_figure"]

INSTALL_HINT = "--plot needs matplotlib: pip install 'gradcheck[plot]' (or pip install matplotlib)"
STEPS = np.logspace(-13, 0, 53)  # relative to the element's scale
END_STEPS = 4  # steps at each end of the sweep (a decade) where truncation or rounding shows
ROUNDING_UNITS = 1e3  # an error below this many units of roundoff is rounding level
TREND = 10.0  # an end of the curve shows truncation or rounding when its error is this many
# times the curve's smallest error (and above rounding level)
KINK_JUMP = 30.0  # a rise by this factor from one step to the next (h^2 gives 3.2) is a kink


def require_matplotlib() -> None:
    """Raise GradcheckError with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise GradcheckError(INSTALL_HINT) from exc


def check_plot_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check that it is writable; return it.

    Raises:
        GradcheckError: it exists and is not a directory, cannot be created, or is not writable.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise GradcheckError(f"--plot {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".gradcheck-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GradcheckError(f"--plot directory {str(path)!r} is not writable: {exc.strerror or exc}") from exc
    return path


def _loss(forward: Any, values: Mapping[str, np.ndarray]) -> float:
    return float(np.sum(as_float_array(forward(**values))))


def step_curve(forward: Any, inputs: Mapping[str, Any], wrt: Any = None) -> dict[str, Any] | None:
    """Relative error of ``(L(x + h e_i) - L(x - h e_i)) / 2h`` against a reference, per ``h``.

    The element ``i`` is the one with the largest reference gradient over the checked inputs.

    Args:
        forward: the case's forward; ``L = sum(forward(**inputs))``.
        inputs: one example.
        wrt: the checked inputs (None: every floating input).
    Returns:
        {"input", "index", "steps" (n,), "errors" (n,), "chosen" (the oracle's step),
        "reference", "reference_kind" (the exact oracle's name, or "numeric")}, or None when every gradient is
        zero (no curve to draw).
    """
    prepared = prepare_inputs(inputs)
    names = resolve_wrt(prepared, wrt)
    values = dict(prepared.widened)
    reference_kind, grads = "numeric", None
    from gradcheck.estimates import Estimate
    from gradcheck.oracles import ORACLES

    for oracle in ORACLES:  # the first exact oracle that runs on the forward
        found = oracle.gradients(forward, values, names, 1.0)
        if isinstance(found, Estimate):
            grads, reference_kind = found.gradients, oracle.name
            break
    if grads is None:
        grads = numeric_gradient(forward, values, wrt=names)
    name = max(names, key=lambda n: float(np.max(np.abs(grads[n]), initial=0.0)))
    g = np.asarray(grads[name], dtype=np.float64).reshape(-1)
    if g.size == 0 or not np.any(g):
        return None
    flat = int(np.argmax(np.abs(g)))
    reference = float(g[flat])
    x = values[name]
    eps = machine_eps(prepared.dtypes[name])
    chosen = float(step_sizes(x, eps).reshape(-1)[flat])
    scale = chosen / eps ** (1 / 3)
    base = float(x.reshape(-1)[flat])
    errors = []
    for relative in STEPS:
        h = (base + relative * scale) - base
        plus, minus = x.copy(), x.copy()
        plus.reshape(-1)[flat] = base + h
        minus.reshape(-1)[flat] = base - h
        d = (_loss(forward, {**values, name: plus}) - _loss(forward, {**values, name: minus})) / (2 * h)
        errors.append(abs(d - reference) / abs(reference))
    index = tuple(int(i) for i in np.unravel_index(flat, x.shape)) if x.ndim else ()
    return {"input": name, "index": index, "steps": STEPS * scale, "errors": np.asarray(errors),
            "chosen": chosen, "reference": reference, "reference_kind": reference_kind, "eps": eps}


def curve_shape(errors: Any, eps: float) -> str:
    """What a step curve shows, in words: whether truncation (error growing at the largest
    steps, smoothly as ``h^2`` or by a jump where a step reaches a kink) and rounding (error
    growing at the smallest steps) show above rounding level, and how many steps are exact.

    Args:
        errors: relative errors, ``(n,)``, for steps from the smallest to the largest.
        eps: machine epsilon of the input's dtype.
    """
    errors = np.asarray(errors, dtype=np.float64)
    exact = int(np.sum(errors == 0))
    if exact == errors.size:
        return f"no truncation, no rounding: error 0 at all {exact} steps"
    level = max(ROUNDING_UNITS * eps, TREND * float(np.nanmin(errors)))
    rounding = bool(np.nanmax(errors[:END_STEPS]) > level)
    tail = np.maximum(errors[-END_STEPS - 1:], level)
    large = "truncation" if tail[-END_STEPS:].max() > level else ""
    if large and np.any(tail[1:] > KINK_JUMP * tail[:-1]):
        large = "kink"
    if large == "kink":
        shape = "the largest steps reach a kink" + ("; rounding rises as h shrinks" if rounding else "")
    elif large and rounding:
        shape = "truncation falls and rounding rises as h shrinks"
    elif rounding:
        shape = "no truncation error; rounding rises as h shrinks"
    elif large:
        shape = "truncation falls as h shrinks; no rounding error at the smallest steps"
    else:
        shape = "error at rounding level at every step"
    return shape + (f"; error 0 at {exact} of {errors.size} steps" if exact else "")


def steps_figure(case_name: str, curve: Mapping[str, Any]) -> Any:
    """The picture of ``step_curve``'s result: a matplotlib Figure (log-log; exact steps, whose
    error is 0 and has no place on a log axis, marked along the bottom)."""
    import matplotlib.pyplot as plt

    steps, errors = np.asarray(curve["steps"]), np.asarray(curve["errors"], dtype=np.float64)
    positive = errors > 0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.plot(steps, np.where(positive, errors, np.nan), marker=".", label="one central difference")
    if not positive.all():
        ax.plot(steps[~positive], np.full(int(np.sum(~positive)), 0.02), linestyle="none", marker="v",
                color="tab:green", transform=ax.get_xaxis_transform(), clip_on=False,
                label=f"error exactly 0 ({int(np.sum(~positive))} of {errors.size} steps)")
    if not positive.any():
        ax.set_ylim(curve["eps"] / 10, 1.0)  # no error to scale the axis by
    elif not positive.all():
        ax.set_ylim(bottom=float(np.min(errors[positive])) / 100)  # room for the marks below
    ax.axvline(curve["chosen"], color="tab:red", linestyle="--", label=f"chosen step {curve['chosen']:.1e}")
    element = f"{curve['input']}[{', '.join(map(str, curve['index']))}]" if curve["index"] else curve["input"]
    ax.set_xlabel("step h")
    ax.set_ylabel(f"relative error vs {curve['reference_kind']}")
    ax.set_title(f"{case_name}: d/d{element}\n{curve_shape(errors, curve['eps'])}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def layer_norms(case: Case, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Norms of each layer's gradient at one example: analytic (the case's backward) and numeric.

    Returns:
        {"layers": names, "analytic": [float], "numeric": [float]}.
    Raises:
        GradcheckError: the case declares no layers.
    """
    if not case.layers:
        raise GradcheckError(f"case {case.name!r} declares no layers")
    prepared = prepare_inputs(inputs)
    output = np.asarray(as_float_array(case.forward(**prepared.widened)))
    dout = 1.0 if output.ndim == 0 else np.ones(output.shape)
    analytic = case.backward(dout, **prepared.values) if case.backward is not None else {}
    numeric = numeric_gradient(case.forward, prepared.widened, wrt=case.layers)
    out: dict[str, Any] = {"layers": list(case.layers), "analytic": [], "numeric": []}
    for name in case.layers:
        value = analytic.get(name) if isinstance(analytic, Mapping) else None
        norm = float(np.linalg.norm(np.asarray(value, dtype=np.float64))) if value is not None else float("nan")
        out["analytic"].append(norm)
        out["numeric"].append(float(np.linalg.norm(numeric[name])))
    return out


def _size(inputs: Mapping[str, Any]) -> int:
    return sum(int(np.size(v)) for v in inputs.values())


def plot_case(case: Case, samples: Sequence[Mapping[str, Any]], directory: Path) -> list[Path]:
    """Write the case's pictures into ``directory``; return the files written.

    Args:
        case: the case.
        samples: example inputs checked in the run (at least one); the step curve uses the
            largest, the layer picture all of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise GradcheckError(f"case {case.name!r}: no example to plot")
    written = []
    largest = max(samples, key=_size)
    curve = step_curve(case.forward, largest, case.wrt)
    if curve is not None:
        fig = steps_figure(case.name, curve)
        path = directory / f"{case.name}.steps.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    if case.layers:
        norms = [layer_norms(case, sample) for sample in samples]
        positions = np.arange(len(case.layers))
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, key in enumerate(("analytic", "numeric")):
            table = np.array([n[key] for n in norms], dtype=np.float64)  # (samples, layers)
            shown = np.where(table > 0, table, np.nan)
            offset = -0.12 if k == 0 else 0.12
            for row in shown:
                ax.plot(positions + offset, row, color=f"C{k}", alpha=0.25, marker=".", linewidth=0.8)
            with np.errstate(all="ignore"):
                median = np.nanmedian(shown, axis=0) if np.any(np.isfinite(shown)) else shown[0]
            ax.plot(positions + offset, median, color=f"C{k}", marker="o", linewidth=2,
                    label=f"{key} ({'backward' if k == 0 else 'central differences'}), median")
        ax.set_yscale("log")
        ax.set_xticks(positions, list(case.layers))
        ax.set_xlabel("layer (input side to output side)")
        ax.set_ylabel("gradient norm")
        ax.set_title(f"{case.name}: gradient size per layer over {len(samples)} examples", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", axis="y", alpha=0.3)
        path = directory / f"{case.name}.layers.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
