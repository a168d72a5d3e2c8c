"""A run of cases -> one JSON-ready document (``python -m gradcheck report --format json``).

Schema (``schema_version`` 2; keys are stable, new keys may be added):

    {
      "schema_version": 2,
      "tool": "gradcheck",
      "ok": bool,                       # every case passed (gallery: every bug caught)
      "gallery": bool,                  # the run checked the known-buggy variants
      "seed": int,                      # run settings: the seed, drawn examples asked per case
      "examples_per_case": int,         # (a case may draw fewer: see CASE's "examples"),
      "rtol": float | null, "atol": float | null,   # and the tolerances (null: per dtype)
      "versions": {"gradcheck", "python", "numpy", "torch", "hypothesis": str | null},
      "seconds": float,
      "summary": {"cases", "passed", "failed", "errors", "examples", "kinks",
                  "inconclusive": int},    # inconclusive: checks that compared nothing (empty)
      "examples": int,                  # drawn examples checked over all cases
      "points": int,                    # fixed points checked over all cases
      "kinks": int,                     # kinks met over all cases
      "errors": [{"case": str, "error": str}],
      "failures": [{"case": str, "minimal_example": EXAMPLE,   # cases with a failing check
                    "replay": str}],                       # and the command that replays it
      "cases": [CASE, ...]
    }

    CASE = {"name", "description", "family": str, "bug": str | null,
            "expected_diagnosis": str | null, "verdict": "pass" | "FAIL" | "caught" | "MISSED"
            | "error" | "inconclusive", "ok": bool, "seed": int, "examples": int (drawn), "points": int (fixed),
            "oracles": [str], "modes": [str],  # modes: "reverse", "forward"
            "kinks": int, "inconclusive": int (checks that compared nothing), "failures": int, "seconds": float,
            "error": str | null,
            "worst_relative_error": {ORACLE: float | null},   # one key per oracle that ran
            "worst_input": {ORACLE: str | null},               # ORACLE: "numeric", "torch", "jax"
            "worst_at": {"numeric": WORST | null, "torch": WORST | null},
            "diagnoses": [{"input": str, "kind": str, "summary": str, "params": {...},
                           "evidence": str}],
            "detectable": {INPUT_NAME: {"relative_error": float, "probability": float}},
                # inputs checked in directional mode: any single element wrong by relative_error
                # or more (of the input's largest gradient) would have been caught with at least
                # that probability, in every check of the case (the weakest over them); {} if none
            "minimal_example": EXAMPLE | null, "at_point": EXAMPLE | null}

    EXAMPLE = {"source": "drawn" | "point", "inputs": [INPUT], "result": CheckResult.to_dict()}

    WORST = {"relative_error": float,       # as in worst_relative_error
             "input": str,                  # the input whose gradient it is in
             "index": [int] | null,         # its element ([] for a 0-d input); null when the error
                                            # is along a random direction (directional mode)
             "example": int | null,         # the example it was met in: 1 is the first checked
                                            # (fixed points, then drawn examples); null for a
                                            # re-check while shrinking a failure
             "inputs": [INPUT]}             # that example (a large input: at its element)

    INPUT = {"name", "shape", "dtype", "values" (small inputs) | null,
             "at": [{"index": [int], "value": float}]}   # a large input: flagged elements
                                                          # (a complex value is [real, imag])

Non-finite floats become null, so the document is strict JSON.
"""

from __future__ import annotations

import platform
from typing import Any

from gradcheck.result import _jsonable
from gradcheck.runner import CaseRun, InputShown, MinimalExample, RunReport, shown_inputs
from gradcheck.worst import WorstAt

__all__ = ["SCHEMA_VERSION", "run_to_dict", "versions"]

SCHEMA_VERSION = 2
# Version 2 (from 1): everything per oracle is keyed by the oracles that ran (``oracles``), so a
# third oracle (jax) adds keys instead of fields: ``worst_relative_error``, ``worst_input`` and
# ``worst_at`` per case; in each ``result`` (``CheckResult.to_dict()``) a mismatch carries
# ``references`` and ``errors`` by oracle instead of ``numeric``, ``numeric_error`` and
# ``torch``, a kink ``exact`` instead of ``torch``, a disagreement ``values`` and ``errors``,
# and an input ``worst`` instead of ``worst_numeric`` and ``worst_torch``. Results also carry
# ``verdict`` (pass, fail or inconclusive), ``compared`` per input and ``oracle_errors``.
# Added within version 2 (no meaning changed): each result carries ``outputs``, for a forward
# with several outputs one {"name", "shape", "dtype", "differentiable"} per output (its
# ``output_shape`` is then ``[n]``, the differentiable elements raveled together), empty for a
# forward that returns one array; each input and mismatch carries ``outputs``, the names of the
# outputs its gradient is wrong through.
# Added keys (same version): a case's ``modes``; a result's ``modes``, ``forward``, ``consistency``
# and ``taylor``, and a mismatch's ``mode`` and ``tangent``.
# Each case and each input of a result carries ``detectable``, directional mode's statement of
# what it could have missed.
# And a result's ``second_order`` (``order=2``: the second-order check's result, or null), with
# "second order" among its ``modes``.


def versions() -> dict[str, str | None]:
    """Versions of gradcheck, Python and the libraries the oracles use."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("gradcheck", "numpy", "torch", "hypothesis"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _plain(value: Any) -> Any:
    """Values as JSON carries them: a complex number as ``[real, imag]``."""
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _inputs(inputs: tuple[InputShown, ...]) -> list[dict[str, Any]]:
    return [
        {"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "values": _plain(i.values),
         "at": [{"index": list(index), "value": _plain(value)} for index, value in i.at]}
        for i in inputs
    ]


def _example(example: MinimalExample | None) -> dict[str, Any] | None:
    if example is None:
        return None
    return {"source": example.source, "inputs": _inputs(example.inputs), "result": example.result.to_dict()}


def _worst(where: WorstAt | None) -> dict[str, Any] | None:
    if where is None:
        return None
    flagged = {where.input: [where.index]} if where.index is not None else {}
    return {"relative_error": where.error, "input": where.input,
            "index": None if where.index is None else list(where.index), "example": where.example,
            "inputs": _inputs(shown_inputs(where.inputs, flagged))}


def diagnoses(run: CaseRun) -> list[dict[str, Any]]:
    """The likely bugs named in a case's failing example (its fixed point first)."""
    example = run.at_point or run.minimal
    if example is None:
        return []
    return [{"input": s.name, **s.diagnosis.to_dict()}
            for s in example.result.inputs if s.diagnosis is not None]


def case_to_dict(run: CaseRun) -> dict[str, Any]:
    case = run.case
    return {
        "name": case.name,
        "description": case.description,
        "family": case.family,
        "bug": case.bug,
        "expected_diagnosis": case.expected_diagnosis,
        "verdict": run.verdict,
        "ok": run.ok,
        "seed": run.seed,
        "examples": run.examples,
        "points": run.points,
        "inconclusive": run.inconclusive,
        "oracles": list(run.oracles),
        "modes": list(run.modes),
        "kinks": run.kinks,
        "failures": run.failures,
        "seconds": round(run.seconds, 4),
        "error": run.error,
        "worst_relative_error": {oracle: run.worst.get(oracle) for oracle in run.oracles},
        "worst_input": {oracle: run.worst_input.get(oracle) for oracle in run.oracles},
        "worst_at": {oracle: _worst(run.worst_at.get(oracle)) for oracle in run.oracles},
        "diagnoses": diagnoses(run),
        "detectable": {name: {"relative_error": d.relative_error, "probability": d.probability}
                       for name, d in run.detectable.items()},
        "minimal_example": _example(run.minimal),
        "at_point": _example(run.at_point),
    }


def run_to_dict(report: RunReport) -> dict[str, Any]:
    """The whole run as the documented JSON document."""
    runs = report.runs
    cases = [case_to_dict(run) for run in runs]
    settings = report.settings
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": "gradcheck",
        "ok": report.ok,
        "gallery": report.gallery,
        "seed": settings.seed,
        "examples": sum(run.examples for run in runs),
        "points": sum(run.points for run in runs),
        "examples_per_case": settings.examples,
        "rtol": settings.rtol,
        "atol": settings.atol,
        "versions": versions(),
        "seconds": round(report.seconds, 3),
        "summary": {
            "cases": len(runs),
            "passed": sum(run.ok for run in runs),
            "failed": sum(not run.ok and run.error is None for run in runs),
            "errors": sum(run.error is not None for run in runs),
            "examples": sum(run.examples for run in runs),
            "kinks": sum(run.kinks for run in runs),
            "inconclusive": sum(run.inconclusive for run in runs),
        },
        "kinks": sum(run.kinks for run in runs),
        "errors": [{"case": run.case.name, "error": run.error} for run in runs if run.error is not None],
        "failures": [{"case": c["name"], "minimal_example": c["minimal_example"],
                      "replay": report.replay_command(run)}
                     for run, c in zip(runs, cases, strict=True) if c["minimal_example"] is not None],
        "cases": cases,
    }
    return _jsonable(document)
