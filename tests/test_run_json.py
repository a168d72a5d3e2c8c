"""``--format json``: where each worst error was met (example and element), documented."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import strategies as st

import gradcheck
from gradcheck import run_json
from gradcheck.case import Case
from gradcheck.options import Settings
from gradcheck.runner import CaseRun, RunReport, run_case

POINT = np.array([[0.5, -1.0, 0.25, 1.0], [0.75, 0.5, 5.0, -0.5], [1.5, 2.0, -2.5, 0.5],
                  [-1.5, 1.25, 0.5, 2.5], [1.0, -2.0, 3.0, 0.5]])  # largest |x| at [1, 2]


def cube(x):
    return (x ** 3).sum()


def cube_backward_off_at_max(dout, x):
    """The gradient of sum(x^3), off by a relative 1e-8 * max|x| at the largest |x|: a pass."""
    grad = 3 * x ** 2 * dout
    i = np.unravel_index(np.argmax(np.abs(x)), x.shape)
    grad[i] *= 1 + 1e-8 * np.max(np.abs(x))
    return {"x": grad}


def test_a_passing_case_says_which_example_and_element_its_worst_error_is_at():
    # Example 1 is the point POINT / 5 (error 1e-8), example 2 the point POINT (error 5e-8),
    # then drawn examples, all POINT / 5 again.
    case = Case(name="mine.cube_nearly", forward=cube, backward=cube_backward_off_at_max,
                inputs=st.just({"x": POINT / 5}), points=({"x": POINT / 5}, {"x": POINT}))
    settings = Settings(examples=2)
    run = run_case(case, settings)
    assert run.verdict == "pass"
    document = json.loads(json.dumps(run_json.run_to_dict(RunReport(settings, False, [run], 1.0))))
    (reported,) = document["cases"]
    for oracle in ("numeric", "torch"):
        worst = reported["worst_at"][oracle]
        assert worst["relative_error"] == reported["worst_relative_error"][oracle]
        assert worst["relative_error"] == pytest.approx(5e-8, rel=1e-2)
        assert (worst["input"], worst["index"], worst["example"]) == ("x", [1, 2], 2)
        # The example's inputs; a large one at the element.
        assert worst["inputs"] == [{"name": "x", "shape": [5, 4], "dtype": "float64", "values": None,
                                    "at": [{"index": [1, 2], "value": 5.0}]}]
    assert document["schema_version"] == 2


def test_the_schema_documents_the_worst_keys():
    for key in ('"worst_at"', "WORST = {", '"relative_error"', '"index"', '"example"', '"inputs"'):
        assert key in run_json.__doc__


def _schema_keys(name: str) -> set[str]:
    """The keys of the documented object ``name`` ("" for the document itself): the quoted names
    followed by ``:`` at its top level (comments left out)."""
    doc = run_json.__doc__
    start = doc.index(f"{name} = {{") + len(name) + 3 if name else doc.index("    {\n") + 4
    text = "\n".join(line.split("#")[0] for line in doc[start:].splitlines())
    assert text[0] == "{"
    keys, depth, i = set(), 0, 0
    while i < len(text):
        c = text[i]
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
            if depth == 0:
                return keys
        elif c == '"':
            end = text.index('"', i + 1)
            if depth == 1 and text[end + 1:end + 2] == ":":
                keys.add(text[i + 1:end])
            i = end
        i += 1
    raise AssertionError(f"no end to {name or 'the document'} in the schema")


def test_the_schema_documents_every_key_emitted_and_no_other():
    run = CaseRun(case=Case(name="mine.cube", forward=cube, backward=cube_backward_off_at_max,
                            inputs=st.just({"x": POINT})), seed=0)
    document = run_json.run_to_dict(RunReport(Settings(examples=3), False, [run], 1.0))
    assert set(document) == _schema_keys("")
    assert document["examples_per_case"] == 3  # the setting; "examples" counts what was drawn
    (case,) = document["cases"]
    documented = set(re.findall(r'"(\w+)"', run_json.__doc__[run_json.__doc__.index("CASE = {"):]))
    assert set(case) <= documented


@pytest.mark.parametrize(("mode", "located"), [("full", {"numeric", "torch"}), ("directional", {"torch"})])
def test_each_input_names_the_element_of_its_worst_errors(mode, located):
    x = POINT.copy()
    result = gradcheck.check_gradients(cube, cube_backward_off_at_max, {"x": x}, mode=mode)
    (summary,) = result.inputs
    # The directional mode's numeric error is along a direction, not at an element.
    assert summary.worst_at == {oracle: (1, 2) for oracle in located}
    assert result.to_dict()["inputs"][0]["worst_at"] == {oracle: [1, 2] for oracle in located}


def test_complex_inputs_are_carried_as_real_imaginary_pairs():
    rng = np.random.default_rng(5)
    big = rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4))  # shown at its flagged elements

    def backward_one_element_off(g, z, s):  # y = s sum(z), a complex number: dz = g conj(s)
        grad = {"z": np.full(z.shape, g * np.conj(s)), "s": g * np.conj(np.sum(z))}
        grad["z"][1, 2] += 0.5j
        return grad

    case = Case(name="mine.complex", forward=lambda z, s: s * z.sum(), backward=backward_one_element_off,
                inputs=st.just({"z": big, "s": np.asarray(0.5 - 1j)}))
    run = run_case(case, Settings(examples=1))
    assert run.verdict == "FAIL"
    document = json.loads(json.dumps(run_json.run_to_dict(RunReport(Settings(examples=1), False, [run], 1.0)),
                                     allow_nan=False))
    z, s = document["cases"][0]["minimal_example"]["inputs"]
    assert (z["dtype"], z["shape"], z["values"]) == ("complex128", [5, 4], None)
    assert z["at"] == [{"index": [1, 2], "value": [big[1, 2].real, big[1, 2].imag]}]
    assert (s["dtype"], s["values"]) == ("complex128", [0.5, -1.0])
    (mismatch,) = document["cases"][0]["minimal_example"]["result"]["mismatches"]
    assert (mismatch["input"], mismatch["index"], mismatch["part"]) == ("z", [1, 2], "imag")


def test_a_case_states_what_its_directional_checks_could_have_missed():
    from gradcheck.run_table import details_lines

    run = CaseRun(case=Case(name="mine.cube", forward=cube, backward=cube_backward_off_at_max,
                            inputs=st.just({"x": POINT})), seed=0)
    stated = []
    for scale in (1.0, 3.0, 2.0):
        result = gradcheck.check_gradients(cube, cube_backward_off_at_max, {"x": POINT * scale}, mode="directional")
        stated.append(result.inputs[0].detectable)
        run.add(result)
    weakest = max(stated, key=lambda d: d.relative_error)
    assert run.detectable == {"x": weakest}
    report = RunReport(Settings(examples=3), False, [run], 1.0)
    (case,) = run_json.run_to_dict(report)["cases"]
    assert case["detectable"] == {"x": {"relative_error": weakest.relative_error, "probability": 0.999}}
    assert (f"mine.cube (directional): a single element wrong by {weakest.relative_error:.1e} or more (relative "
            "to x's largest gradient) would have been caught with probability >= 0.999") in details_lines(report)
    full = CaseRun(case=run.case, seed=0)
    full.add(gradcheck.check_gradients(cube, cube_backward_off_at_max, {"x": POINT}, mode="full"))
    assert run_json.case_to_dict(full)["detectable"] == {}
