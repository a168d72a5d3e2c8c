"""The case runner: per-case seeds, shrinking to a minimal example, gallery verdicts, errors,
and the JSON document of a run."""

from __future__ import annotations

import importlib
import json
import shlex
from fnmatch import fnmatchcase

import numpy as np
import pytest
from hypothesis import strategies as st
from literals import write_literals_module

from gradcheck import Case, GradcheckError
from gradcheck import strategies as gs
from gradcheck.options import CheckOptions, Settings
from gradcheck.run_json import SCHEMA_VERSION, run_to_dict
from gradcheck.run_table import markdown, rows, summary_line
from gradcheck.runner import (
    CaseRun,
    CaseSelectionError,
    Checked,
    RunReport,
    case_seed,
    drive,
    run_case,
    run_cases,
    select_cases,
)

vectors = st.fixed_dictionaries({"x": gs.float_arrays(gs.shapes(min_dims=1, max_dims=1, max_side=6))})


def square(x):
    return (x * x).sum()


def square_backward(dout, x):
    return {"x": 2 * x * dout}


def wrong_from_the_third(dout, x):
    """Correct on vectors of up to two elements; drops the third element's gradient."""
    g = 2 * x * dout
    if g.size >= 3:
        g = g.copy()
        g[2] = 0.0
    return {"x": g}


CORRECT = Case(name="t.square", forward=square, backward=square_backward, inputs=vectors,
               points=({"x": np.array([1.0, -2.0])},))
BUGGY = Case(name="t.third", forward=square, backward=wrong_from_the_third, inputs=vectors)


def test_case_seed_depends_only_on_the_run_seed_and_the_name():
    assert case_seed(0, "a") == case_seed(0, "a")
    assert case_seed(0, "a") != case_seed(0, "b")
    assert case_seed(0, "a") != case_seed(1, "a")


def test_correct_case_passes_every_example_and_counts_them():
    run = run_case(CORRECT, Settings(examples=7))
    assert run.ok and run.verdict == "pass" and run.minimal is None
    assert (run.examples, run.points) == (7, 1)  # as many drawn examples as asked, and the point
    assert rows(RunReport(Settings(examples=7), False, [run]))[0][1] == "7"
    assert run.oracles == ("numeric", "torch")
    assert run.worst["torch"] is not None and run.worst["torch"] < 1e-12


def test_failure_is_shrunk_to_the_smallest_failing_example():
    run = run_case(BUGGY, Settings(examples=50))
    assert not run.ok and run.verdict == "FAIL"
    example = run.minimal
    assert example is not None and example.source == "drawn"
    (x,) = example.inputs
    assert x.shape == (3,)  # the smallest vector on which the bug shows
    assert not example.result.ok
    assert [m.index for m in example.result.mismatches] == [(2,)]


def test_same_seed_same_run_whatever_the_order():
    settings = Settings(seed=5, examples=5)
    first = run_cases([CORRECT, BUGGY], settings)
    second = run_cases([BUGGY, CORRECT], settings)
    by_name = {r.case.name: r for r in second.runs}
    for run in first.runs:
        other = by_name[run.case.name]
        assert (run.seed, run.examples, run.worst) == (
            other.seed, other.examples, other.worst)


def drawn(settings: Settings) -> list[np.ndarray]:
    """The inputs a correct case draws in a run with ``settings``, in order."""
    seen: list[np.ndarray] = []
    recorded = vectors.map(lambda inputs: seen.append(inputs["x"]) or inputs)
    run = run_case(Case(name="t.recorded", forward=square, backward=square_backward, inputs=recorded), settings)
    assert run.ok
    return seen


def test_drawn_examples_do_not_depend_on_imported_modules(tmp_path, monkeypatch):
    """Hypothesis mixes number literals of imported project modules into its draws; a run
    draws the same examples for a seed whether or not such a module was imported first."""
    settings = Settings(seed=3, examples=40)
    before = drawn(settings)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(write_literals_module(tmp_path, "project_constants", low=0.01, high=10.0))
    after = drawn(settings)
    assert len(before) == len(after) == 40
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))


@pytest.mark.parametrize(
    ("name", "settings", "gallery", "modules", "command"),
    [
        ("t.third", Settings(), False, (), "--case t.third --seed 0"),
        ("t.third", Settings(seed=4, examples=12), False, ("mine",),
         "--module mine --case t.third --seed 4 --examples 12"),
        ("t.third", Settings(rtol=1e-05, atol=0.0), True, ("a.b", "c"),
         "--module a.b --module c --case t.third --seed 0 --rtol 1e-05 --atol 0.0 --gallery"),
        ("odd*name[1]", Settings(), False, ("my dir",), "--module 'my dir' --case 'odd[*]name[[]1]' --seed 0"),
    ],
)
def test_replay_command_names_everything_the_case_was_run_with(name, settings, gallery, modules, command):
    run = CaseRun(case=Case(name=name, forward=square, backward=square_backward, inputs=vectors), seed=0)
    report = RunReport(settings, gallery, [run], modules=modules)
    assert report.replay_command(run) == "python -m gradcheck report " + command
    pattern = shlex.split(command)[shlex.split(command).index("--case") + 1]
    assert fnmatchcase(name, pattern) and not fnmatchcase(name + "x", pattern)


def test_gallery_case_passes_when_caught_and_is_missed_when_correct():
    caught = run_case(Case(name="g.third", forward=square, backward=wrong_from_the_third,
                           inputs=vectors, bug="drops a gradient"), Settings(examples=30))
    assert caught.ok and caught.verdict == "caught"
    missed = run_case(Case(name="g.none", forward=square, backward=square_backward,
                           inputs=vectors, bug="claimed, but not a bug"), Settings(examples=5))
    assert not missed.ok and missed.verdict == "MISSED"


def test_a_failing_fixed_point_is_kept_as_the_point_example():
    case = Case(name="t.point", forward=square, backward=wrong_from_the_third, inputs=vectors,
                points=({"x": np.array([1.0, 2.0, 3.0, 4.0])},))
    run = run_case(case, Settings(examples=30))
    assert run.at_point is not None and run.at_point.source == "point"
    assert run.minimal is not None and run.minimal.source == "drawn"


def test_strategy_errors_and_misuse_are_case_errors_not_crashes():
    def broken(_):
        raise RuntimeError("strategy exploded")

    exploding = Case(name="t.explodes", forward=square, backward=square_backward,
                     inputs=st.just(None).map(broken))
    run = run_case(exploding, Settings(examples=3))
    assert run.verdict == "error" and "strategy exploded" in run.error
    misuse = Case(name="t.misuse", forward=square, backward=square_backward,
                  inputs=st.just({"x": np.array([np.inf])}))
    run = run_case(misuse, Settings(examples=3))
    assert run.verdict == "error" and "finite" in run.error


def test_select_cases_by_pattern_and_kind():
    gallery = Case(name="g.third", forward=square, backward=wrong_from_the_third, inputs=vectors, bug="b")
    cases = [CORRECT, BUGGY, gallery]
    assert select_cases(cases, [], gallery=False) == [CORRECT, BUGGY]
    assert select_cases(cases, ["t.sq*"], gallery=False) == [CORRECT]
    assert select_cases(cases, [], gallery=True) == [gallery]
    with pytest.raises(CaseSelectionError) as nothing:
        select_cases(cases, ["nothing*"], gallery=False)
    assert str(nothing.value) == "pattern 'nothing*' matches no case (known: t.square, t.third, g.third)"
    assert (nothing.value.pattern, nothing.value.other) == ("nothing*", None)
    with pytest.raises(CaseSelectionError) as other:
        select_cases(cases, ["g.*"], gallery=False)
    assert str(other.value) == "pattern 'g.*' matches only gallery cases (e.g. 'g.third')"
    assert (other.value.pattern, other.value.other, other.value.gallery) == ("g.*", gallery, False)
    with pytest.raises(CaseSelectionError, match=r"^there are no gallery cases to run$"):
        select_cases([CORRECT], [], gallery=True)
    assert isinstance(other.value, GradcheckError)  # misuse, whoever selects


def test_run_document_is_strict_json_with_the_documented_keys():
    report = run_cases([CORRECT, BUGGY], Settings(examples=20))
    document = json.loads(json.dumps(run_to_dict(report), allow_nan=False))
    assert document["schema_version"] == SCHEMA_VERSION and document["ok"] is False
    assert {"cases", "examples", "errors", "kinks", "failures", "seed", "versions"} <= set(document)
    assert set(document["versions"]) >= {"gradcheck", "python", "numpy", "torch", "hypothesis"}
    assert [c["name"] for c in document["cases"]] == ["t.square", "t.third"]
    assert document["summary"] == {"cases": 2, "passed": 1, "failed": 1, "errors": 0,
                                   "examples": document["examples"], "kinks": document["kinks"],
                                   "inconclusive": 0}
    (failure,) = document["failures"]
    assert failure["case"] == "t.third"
    assert failure["replay"] == "python -m gradcheck report --case t.third --seed 0 --examples 20"
    inputs = failure["minimal_example"]["inputs"]
    assert inputs[0]["shape"] == [3] and len(inputs[0]["values"]) == 3
    assert failure["minimal_example"]["result"]["mismatches"][0]["index"] == [2]


def test_table_rows_summary_and_markdown_agree_with_the_runs():
    report = run_cases([CORRECT, BUGGY], Settings(examples=20))
    table = rows(report)
    assert [r[0] for r in table] == ["t.square", "t.third"]
    assert [r[-2] for r in table] == ["pass", "FAIL"]  # the verdict, before the note
    assert "1 passed, 1 failed" in summary_line(report)
    assert f"; {report.runs[0].examples + report.runs[1].examples} examples and 1 fixed point, " in summary_line(report)
    text = markdown(report)
    assert "| `t.third` |" in text and "❌ FAIL" in text and "smallest failing example" in text


def test_a_case_whose_every_example_is_empty_is_inconclusive_not_a_pass():
    empty = Case(name="t.empty", forward=lambda x: (x * x).sum(), backward=lambda dout, x: {"x": 2 * x * dout},
                 inputs=st.sampled_from([{"x": np.zeros((0, 3))}, {"x": np.zeros((2, 0))}]))
    settings = Settings(examples=4)
    run = run_case(empty, settings)
    assert run.ok and run.verdict == "inconclusive"
    assert run.inconclusive == run.examples > 0
    report = RunReport(settings, False, [run])
    assert "inconclusive" in rows(report)[0]
    assert f"{run.inconclusive} inconclusive checks (empty: nothing compared)" in summary_line(report)
    document = json.loads(json.dumps(run_to_dict(report)))
    assert document["cases"][0]["verdict"] == "inconclusive"
    assert document["summary"]["inconclusive"] == run.inconclusive
    # A case with some non-empty example is judged on those.
    mixed = Case(name="t.mixed", forward=empty.forward, backward=empty.backward,
                 inputs=st.sampled_from([{"x": np.zeros((0, 3))}, {"x": np.ones(3)}]))
    assert run_case(mixed, Settings(examples=10)).verdict == "pass"


# --- the one loop: drive -----------------------------------------------------------------------


def test_drive_checks_points_first_then_draws_numbering_each_example():
    points = ({"x": np.array([1.0, 2.0])}, {"x": np.array([1.0, 2.0, 3.0])}, {"x": np.array([5.0])})
    case = Case(name="t.points", forward=square, backward=wrong_from_the_third, inputs=vectors, points=points)
    seen: list[Checked] = []
    failed = drive(case, CheckOptions(seed=1), examples=30, on_check=seen.append)
    # The second point fails: the third is not checked, the examples are still drawn.
    assert [c.source for c in seen[:3]] == ["point", "point", "drawn"]
    assert [c.result.ok for c in seen[:2]] == [True, False]
    counted = [c for c in seen if c.source != "shrinking"]
    assert [c.number for c in counted] == list(range(1, len(counted) + 1))
    assert all(c.number is None for c in seen if c.source == "shrinking")
    assert all(c.result.seed == 1 for c in seen)
    assert failed is not None and failed.inputs["x"].shape == (3,)  # shrunk
    assert [m.index for m in failed.result.mismatches] == [(2,)]


def test_drive_without_shrinking_reports_the_first_failure():
    seen: list[Checked] = []
    failed = drive(BUGGY, CheckOptions(seed=5), examples=50, on_check=seen.append, shrink=False)
    first = next(i for i, c in enumerate(seen) if not c.result.ok)
    assert seen[first].source == "drawn" and {c.source for c in seen[first + 1:]} == {"shrinking"}
    assert failed is not None and np.array_equal(failed.inputs["x"], seen[first].inputs["x"])


def test_what_the_callback_raises_is_the_failure_hypothesis_shrinks_and_notes():
    class Wrong(Exception):
        pass

    def fail(checked: Checked) -> None:
        if not checked.result.ok:
            raise Wrong(checked.inputs["x"].shape)

    with pytest.raises(Wrong) as info:
        drive(BUGGY, CheckOptions(), examples=50, on_check=fail, quiet=False, name="test_third")
    assert info.value.args == ((3,),)
    # Hypothesis names the shrunk example "Falsifying example" (before 6.170) or "Failing test case".
    heads = ("Falsifying example: test_third(", "Failing test case: test_third(")
    assert any(note.startswith(heads) for note in info.value.__notes__)


def test_misuse_at_a_fixed_point_says_so():
    case = Case(name="t.bad_point", forward=square, backward=square_backward, inputs=vectors,
                points=({"x": np.array([np.nan])},))
    with pytest.raises(GradcheckError, match=r"^fixed point: input 'x' has 1 non-finite value\(s\)"):
        drive(case, CheckOptions(), examples=1)
    assert run_case(case, Settings(examples=1)).error.startswith("fixed point: input 'x' has 1 non-finite")
