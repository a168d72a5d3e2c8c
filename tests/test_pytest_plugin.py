"""The pytest plugin and ``gradient_test``, run by pytester in fresh pytest sessions: options,
header, fixture, terminal summary, failure output, and a parallel run matching a serial one."""

import ast
import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
from bad_values import FLAG_VALUES
from hypothesis import strategies as st
from literals import write_literals_module

import gradcheck
from gradcheck.errors import GradcheckError
from gradcheck.options import DEFAULT_EXAMPLES, OPTIONS
from gradcheck.testing import gradient_test


def _plugin_args() -> list[str]:
    """Load the plugin by module name unless pytest loads it by its entry point anyway."""
    by_entry_point = any(ep.value == "gradcheck.pytest_plugin" for ep in entry_points(group="pytest11"))
    if by_entry_point and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    return ["-p", "gradcheck.pytest_plugin"]


# The code under test in the inner sessions: a tanh layer, a wrong backward, a ReLU with a kink.
LAYER = '''
import array_api_compat
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def forward(x, w):
    xp = array_api_compat.array_namespace(x, w)
    return xp.tanh(x @ w)


def backward(dout, x, w):
    t = np.tanh(x @ w)
    dz = dout * (1 - t * t)
    return {"x": dz @ w.T, "w": x.T @ dz}


def wrong_backward(dout, x, w):
    grads = backward(dout, x, w)
    grads["w"] = 2 * grads["w"]
    return grads


def relu_sum(x):
    xp = array_api_compat.array_namespace(x)
    return xp.sum(xp.where(x > 0, x, 0 * x))


def relu_sum_backward(dout, x):
    return {"x": dout * (x > 0).astype(np.float64)}


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(3, 4)), "w": rng.normal(size=(4, 2))}


values = st.floats(-2, 2).map(lambda v: round(v, 3))
entries = {"x": hnp.arrays(np.float64, (3, 4), elements=values), "w": hnp.arrays(np.float64, (4, 2), elements=values)}
drawn = st.fixed_dictionaries(entries)
'''


@pytest.fixture(scope="module", autouse=True)
def _import_once() -> None:
    """Import here what the inner sessions import lazily (torch, array-API namespaces, numpy
    submodules): pytester removes modules first imported by an inner in-process session, and
    extension modules cannot be imported twice in one process."""
    import hypothesis.extra.numpy  # noqa: F401
    import numpy as np

    def forward(x):
        import array_api_compat

        xp = array_api_compat.array_namespace(x)
        return xp.sum(xp.tanh(x))

    gradcheck.check_gradients(forward, lambda dout, x: {"x": dout * (1 - np.tanh(x) ** 2)}, {"x": np.ones(2)})


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(layer=LAYER)
    pytester.syspathinsert()
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", *args)


def summary(result: pytest.RunResult) -> list[str]:
    """The lines of the gradcheck summary section (empty if there is none)."""
    lines = result.stdout.lines
    starts = [i for i, line in enumerate(lines) if "gradcheck summary" in line]
    if not starts:
        return []
    section = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("="):
            break
        section.append(line)
    return section


# --- options and header ---------------------------------------------------------------------


def test_help_shows_the_shared_options_in_one_group(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(["gradient checks (gradcheck):"])
    for option in OPTIONS:
        result.stdout.fnmatch_lines([f"*--gradcheck-{option.name}={option.metavar}*"])
    text = " ".join(result.stdout.str().split())
    assert f"Hypothesis examples drawn per case (default: {DEFAULT_EXAMPLES})" in text


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        *((f"--gradcheck-{name}", text, f"--gradcheck-* options: {message}") for name, text, message in FLAG_VALUES),
        ("--gradcheck-examples", "ten", "invalid int value: 'ten'"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, flag: str, value: str, message: str) -> None:
    """With the message of the value's rule, as the API and the command line give it
    (``tests/bad_values.py``)."""
    result = run(pytester, f"{flag}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(line.endswith(message) for line in result.stderr.lines), result.stderr.str()


def test_header_prints_the_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    run(pytester).stdout.fnmatch_lines(
        [f"gradcheck: seed 0 (replay with --gradcheck-seed 0), examples {DEFAULT_EXAMPLES}, *"]
    )
    result = run(pytester, "--gradcheck-seed", "7", "--gradcheck-rtol", "1e-4")
    result.stdout.fnmatch_lines(
        [f"gradcheck: seed 7 (replay with --gradcheck-seed 7), examples {DEFAULT_EXAMPLES}, "
         "rtol 0.0001, atol scaled floor"]
    )


# --- the fixture and the summary ---------------------------------------------------------------


def test_fixture_checks_with_the_run_settings(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from gradcheck.options import Settings
        from layer import backward, forward, inputs

        def test_settings(gradcheck):
            assert gradcheck.settings == Settings(seed=5, examples=3, rtol=1e-4)
            result = gradcheck.check(forward, backward, inputs())
            assert result.ok and result.seed == 5
            assert {s.tolerance.rtol for s in result.inputs} == {1e-4}
            given = gradcheck.assert_gradients(forward, backward, inputs(), seed=9, rtol=1e-3)
            assert given.seed == 9 and {s.tolerance.rtol for s in given.inputs} == {1e-3}
        """
    )
    result = run(project, "--gradcheck-seed=5", "--gradcheck-examples=3", "--gradcheck-rtol=1e-4")
    result.assert_outcomes(passed=1)


def test_fixture_has_the_module_names_with_the_run_settings(project: pytest.Pytester) -> None:
    """Inside ``def test(gradcheck)`` the fixture shadows the module: it has all its public
    names, the checking functions with the run's seed and tolerances."""
    project.makepyfile(
        """
        import pytest
        import gradcheck as module
        from layer import backward, forward, inputs, wrong_backward

        def test_names(gradcheck):
            missing = [name for name in module.__all__ if not hasattr(gradcheck, name)]
            assert missing == [] and set(module.__all__) <= set(dir(gradcheck))
            checking = {"check_gradients", "assert_gradients"}
            assert all(getattr(gradcheck, name) is getattr(module, name)
                       for name in module.__all__ if name not in checking)
            result = gradcheck.check_gradients(forward, backward, inputs())
            assert result.ok and result.seed == 5 and {s.tolerance.rtol for s in result.inputs} == {1e-4}
            with pytest.raises(gradcheck.GradientMismatch) as caught:
                gradcheck.assert_gradients(forward, wrong_backward, inputs())
            assert caught.value.result.seed == 5
            with pytest.raises(AttributeError, match="no attribute 'check_gradient'"):
                gradcheck.check_gradient
        """
    )
    result = run(project, "--gradcheck-seed=5", "--gradcheck-rtol=1e-4")
    result.assert_outcomes(passed=1)
    assert summary(result)[0] == "gradcheck: 2 checks in 1 test, 1 failed in 1 test; seed 5"


def test_summary_counts_checks_kinks_and_worst_errors(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_summary="""
        import numpy as np
        from layer import backward, forward, inputs, relu_sum, relu_sum_backward

        def test_layer(gradcheck):
            gradcheck.assert_gradients(forward, backward, inputs(0))
            gradcheck.assert_gradients(forward, backward, inputs(1))

        def test_relu(gradcheck):
            x = np.array([[1.0, 0.0, -2.0], [0.5, -1.0, 3.0]])
            gradcheck.assert_gradients(relu_sum, relu_sum_backward, {"x": x})

        def test_without_the_fixture():
            pass
        """
    )
    result = run(project, "--gradcheck-seed=3")
    result.assert_outcomes(passed=3)
    lines = summary(result)
    assert lines[0] == "gradcheck: 3 checks in 2 tests, all passed; seed 3"
    assert lines[1] == ("  kinks met (held to their one-sided slopes): 1 in 1 test, "
                        "e.g. x[0, 1] in test_summary.py::test_relu")
    assert lines[2].startswith("  worst relative error vs numeric: ")
    assert lines[3].startswith("  worst relative error vs torch: ")
    assert len(lines) == 4


def test_no_summary_without_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert summary(result) == [] and "gradcheck summary" not in result.stdout.str()


def test_failing_check_shows_the_mismatch_report(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_fail="""
        import gradcheck as gc
        from layer import forward, inputs, wrong_backward

        def test_fixture(gradcheck):
            gradcheck.assert_gradients(forward, wrong_backward, inputs())

        def test_plain():
            gc.assert_gradients(forward, wrong_backward, inputs())
        """
    )
    result = run(project)
    result.assert_outcomes(failed=2)
    report = [
        "E * gradcheck.errors.GradientMismatch: gradcheck FAIL: oracles numeric, torch; mode full; *; seed 0",
        "E *   ok   x (3, 4) float64: 12 elements match; *",
        "E *   FAIL w (4, 2) float64: 8/8 elements mismatch; worst rel. error numeric *, torch *",
        "E *       likely bug*",
        "E *       w?*?: analytic *, numeric * (+-*), torch *; off by * (rel. *), allowed * "
        "(disagrees with numeric and torch)",
    ]
    result.stdout.fnmatch_lines(["*_ test_fixture _*", *report, "*_ test_plain _*", *report])
    out = result.stdout.str()
    assert "assert False" not in out and "where False" not in out
    assert "  FAIL test_fail.py::test_fixture: 1 of 1 check failed" in summary(result)
    assert "test_plain" not in "\n".join(summary(result))  # plain calls are not counted


# --- the decorator ----------------------------------------------------------------------------


def test_decorator_runs_the_configured_number_of_examples(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_drawn="""
        from gradcheck.testing import gradient_test
        from layer import backward, drawn, entries, forward

        RESULTS = []

        @gradient_test(forward, backward, inputs=drawn)
        def test_session_count(result, tmp_path):
            '''Runs after each passing check; its other parameters are fixtures.'''
            assert tmp_path.exists()
            RESULTS.append(result)

        @gradient_test(forward, backward, inputs=entries, examples=3, wrt="w")  # a dict of strategies
        def test_three(result):
            assert [s.name for s in result.inputs] == ["w"]

        def test_results_were_passed():
            assert len(RESULTS) == 7
            assert all(r.ok and r.seed == 2 and r.oracles == ("numeric", "torch") for r in RESULTS)
        """
    )
    result = run(project, "--gradcheck-examples=7", "--gradcheck-seed=2", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert summary(result)[0] == "gradcheck: 10 checks in 2 tests, all passed; seed 2"


def test_decorator_failure_shows_the_report_of_a_shrunk_example(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_wrong="""
        from gradcheck.testing import gradient_test
        from layer import drawn, forward, wrong_backward

        @gradient_test(forward, wrong_backward, inputs=drawn)
        def test_wrong():
            '''The doubled w gradient is caught.'''
        """
    )
    result = run(project, "--gradcheck-examples=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_wrong _*",
            "GradientMismatch: gradcheck FAIL: *",
            "  FAIL w (4, 2) float64: *",
            "*: test_wrong(",  # Hypothesis names the smallest failing example
            "    inputs={*",
        ]
    )
    # Every frame the failure passed through is gradcheck's or Hypothesis' own: none is shown.
    out = result.stdout.str()
    assert "testing.py" not in out and "hypothesis" + os.sep not in out and "hidden" not in out


def test_decorator_takes_a_case_with_points_and_gallery_bugs(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_cases="""
        from gradcheck import Case
        from gradcheck.testing import gradient_test
        from layer import backward, drawn, forward, inputs, wrong_backward

        correct = Case("tanh_layer", forward, backward, drawn, points=(inputs(0), inputs(1)))
        caught = Case("tanh_layer.double_w", forward, wrong_backward, drawn, bug="w gradient doubled")
        missed = Case("tanh_layer.no_bug", forward, backward, drawn, bug="none, really")

        @gradient_test(correct)
        def test_correct(): pass

        @gradient_test(caught)
        def test_caught(): pass

        @gradient_test(missed)
        def test_missed(): pass
        """
    )
    result = run(project, "--gradcheck-examples=3")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*gallery case 'tanh_layer.no_bug': the bug (none, really) was not caught in 3 examples (seed 0)"]
    )
    assert any(line.startswith("  FAIL test_cases.py::test_caught: ") for line in summary(result))
    assert "test_correct: " not in "\n".join(summary(result))
    assert summary(result)[0].startswith("gradcheck: ")


RECORDED = """
import json
from gradcheck.testing import gradient_test
from layer import backward, drawn, forward

SEEN = []

@gradient_test(forward, backward, inputs=drawn.map(lambda inputs: SEEN.append(inputs["x"].tolist()) or inputs))
def test_drawn():
    pass

def test_write_what_was_drawn():
    with open("drawn.json", "w") as f:
        json.dump(SEEN, f)
"""


def test_decorator_draws_the_same_examples_beside_any_other_test(project: pytest.Pytester) -> None:
    """Alone, or beside a test whose module imports a project module full of number literals
    (which Hypothesis would mix into its draws), a test draws the same examples for a seed."""
    project.makepyfile(test_recorded=RECORDED)
    run(project, "test_recorded.py", "-p", "no:randomly").assert_outcomes(passed=2)
    alone = json.loads((project.path / "drawn.json").read_text())
    write_literals_module(project.path, "project_constants", low=0.001, high=2.0)
    project.makepyfile(test_other="import project_constants\n\ndef test_other():\n    pass\n")
    run(project, "-p", "no:randomly").assert_outcomes(passed=3)
    beside = json.loads((project.path / "drawn.json").read_text())
    assert len(alone) == DEFAULT_EXAMPLES and beside == alone


def test_decorator_runs_without_the_plugin(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_alone=f"""
        from gradcheck.testing import gradient_test
        from layer import backward, drawn, forward

        COUNT = []

        @gradient_test(forward, backward, inputs=drawn)
        def test_default_examples(result):
            assert result.seed == 0
            COUNT.append(1)

        def test_count():
            assert len(COUNT) == {DEFAULT_EXAMPLES}
        """
    )
    result = project.runpytest("-p", "no:gradcheck", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "gradcheck" not in result.stdout.str()


def _forward(x):
    return x * x


def _backward(dout, x):
    return {"x": 2 * x * dout}


_CASE = gradcheck.Case("square", _forward, _backward, st.fixed_dictionaries({"x": st.floats(-1, 1)}))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((_forward,), {"inputs": _CASE.inputs}, "needs a backward"),
        ((_forward, _backward), {}, "needs inputs"),
        ((_forward, _backward), {"inputs": {"x": 1.0}}, "inputs must be a Hypothesis strategy"),
        ((_forward, _backward), {"inputs": {"x": st.floats(), "n": 3}}, "where 'n' is not a strategy"),
        ((_forward, _backward), {"inputs": {0: st.floats()}}, "non-string names [0]"),
        ((_forward, _backward), {"inputs": {}}, "or a dict of strategies {name: strategy}; got inputs={}"),
        ((_forward, _backward), {"inputs": _CASE.inputs, "wrt": ("x", 3)},
         "wrt must be a name or a sequence of names, got wrt=('x', 3)"),
        ((_CASE, _backward), {}, "takes the case's own backward"),
        ((_CASE,), {"inputs": _CASE.inputs}, "takes the case's own"),
        ((_CASE,), {"examples": 0}, "examples=0"),
        ((_CASE,), {"examples": True}, "examples=True"),
        ((_CASE,), {"mode": "fast"}, "mode='fast'"),
        ((_CASE,), {"rtol": -1.0}, "rtol=-1.0"),
        ((_CASE,), {"atol": float("inf")}, "atol=inf"),
        (("forward", None), {"inputs": _CASE.inputs}, "forward must be callable"),
    ],
)
def test_decorator_misuse_raises_where_it_is_applied(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(GradcheckError) as caught:
        gradient_test(*args, **kwargs)
    assert message in str(caught.value)


# --- the example project ---------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "layernorm_project"


def test_example_project_passes(pytester: pytest.Pytester) -> None:
    """The example project's suite, run from its own directory as its CI would run it."""
    if not EXAMPLE.is_dir():
        pytest.skip("the examples/ directory is not part of this installation")
    result = run(pytester, str(EXAMPLE), "--rootdir", str(EXAMPLE))
    result.assert_outcomes(passed=7)
    assert summary(result)[0] == f"gradcheck: {DEFAULT_EXAMPLES + 4} checks in 5 tests, all passed; seed 0"


# --- pytest-xdist -----------------------------------------------------------------------------

PARALLEL = """
import pytest
from gradcheck.testing import gradient_test
from layer import backward, drawn, forward, inputs, relu_sum, relu_sum_backward, wrong_backward
import numpy as np

@pytest.mark.parametrize("seed", range(4))
def test_fixture(gradcheck, seed):
    gradcheck.assert_gradients(forward, backward, inputs(seed))

def test_fixture_wrong(gradcheck):
    gradcheck.assert_gradients(forward, wrong_backward, inputs())

def test_kink(gradcheck):
    gradcheck.assert_gradients(relu_sum, relu_sum_backward, {"x": np.array([0.0, 1.0, -1.0])})

@gradient_test(forward, backward, inputs=drawn)
def test_drawn(): pass

@gradient_test(forward, wrong_backward, inputs=drawn)
def test_drawn_wrong(): pass
"""


def test_parallel_run_matches_serial_run(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    root = str(Path(gradcheck.__file__).resolve().parents[1])  # workers import this gradcheck
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    project.makepyfile(test_parallel=PARALLEL)
    args = ("--gradcheck-examples=4", "--gradcheck-seed=11")
    serial = run(project, *args)
    parallel = run(project, *args, "-n", "2")
    assert serial.parseoutcomes() == parallel.parseoutcomes()
    serial.assert_outcomes(passed=6, failed=2)
    parallel.assert_outcomes(passed=6, failed=2)
    assert summary(parallel) == summary(serial)
    assert summary(serial)[0].startswith("gradcheck: ") and "failed in 2 tests" in summary(serial)[0]


def test_summary_counts_inconclusive_checks_apart() -> None:
    import numpy as np

    from gradcheck import check_gradients
    from gradcheck.options import Settings
    from gradcheck.report import Tally, summary_lines

    tally = Tally("test_empty")
    tally.add(check_gradients(lambda x: (x * x).sum(), lambda dout, x: {"x": 2 * x}, {"x": np.zeros((0, 2))}))
    tally.add(check_gradients(lambda x: (x * x).sum(), lambda dout, x: {"x": 2 * x}, {"x": np.ones(2)}))
    assert (tally.checks, tally.failed, tally.inconclusive) == (2, 0, 1)
    assert summary_lines([tally], Settings())[0] == (
        "gradcheck: 2 checks in 1 test, all passed (1 inconclusive: empty, nothing compared); seed 0")


# --- the library and its plugin -----------------------------------------------------------------


def test_the_library_never_imports_its_plugin() -> None:
    """The plugin imports the library; the library hands out no import back up to it (the run's
    settings and recording reach ``gradient_test`` through ``testing.set_run``)."""
    package = Path(gradcheck.__file__).resolve().parent
    importers = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{name}" for name in names]
            if "gradcheck.pytest_plugin" in names and path.stem != "pytest_plugin":
                importers.append(path.name)
    assert importers == []


def _request(config: SimpleNamespace, node: str = "test_node") -> SimpleNamespace:
    """What a ``gradient_test`` takes from pytest's ``request``: the config and the test item."""
    return SimpleNamespace(config=config, node=node)


def test_gradient_test_checks_with_the_run_it_is_handed() -> None:
    from gradcheck.options import Settings
    from gradcheck.testing import PytestRun, set_run

    recorded, bodies = [], []
    config = SimpleNamespace(stash=pytest.Stash())
    set_run(config, PytestRun(Settings(seed=7, examples=3), lambda node, result: recorded.append((node, result))))

    @gradient_test(_forward, _backward, inputs=_CASE.inputs)
    def test_square(result):
        bodies.append(result)

    test_square(request=_request(config))
    assert len(recorded) == 3 and all(node == "test_node" and r.ok and r.seed == 7 for node, r in recorded)
    assert bodies == [r for _, r in recorded]  # the body ran after each passing check


def test_gradient_test_and_the_report_draw_and_count_alike() -> None:
    """Both drive their checks through ``runner.drive``: with the case's seed a test checks what
    the report checks, fixed points first, and counts each check."""
    import numpy as np

    from gradcheck.options import Settings
    from gradcheck.runner import case_seed, run_case
    from gradcheck.testing import PytestRun, set_run

    def case(seen: list) -> gradcheck.Case:
        drawn = _CASE.inputs.map(lambda inputs: seen.append(inputs["x"]) or inputs)
        return gradcheck.Case("square", _forward, _backward, drawn, points=({"x": np.float64(0.5)},))

    by_report: list = []
    run = run_case(case(by_report), Settings(seed=3, examples=5))
    by_test: list = []
    recorded = []
    config = SimpleNamespace(stash=pytest.Stash())
    set_run(config, PytestRun(Settings(seed=case_seed(3, "square"), examples=5), lambda node, r: recorded.append(r)))
    gradient_test(case(by_test))(lambda: None)(request=_request(config))
    assert by_test == by_report and len(by_report) == 5
    assert len(recorded) == run.points + run.examples == 6


def test_gradient_test_says_its_default_number_of_examples() -> None:
    from gradcheck.options import DEFAULT_EXAMPLES

    text = " ".join(gradient_test.__doc__.split())
    assert f"(default ``options.DEFAULT_EXAMPLES``, {DEFAULT_EXAMPLES})" in text


def test_the_oracles_option_reaches_the_fixture_and_bad_names_are_usage_errors(project: pytest.Pytester) -> None:
    pytest.importorskip("jax")
    project.makepyfile(test_chosen_oracles="""
        import array_api_compat
        import numpy as np

        def forward(x):
            xp = array_api_compat.array_namespace(x)
            return xp.sum(xp.sin(x))

        def test_fixture(gradcheck):
            result = gradcheck.check_gradients(forward, lambda dout, x: {"x": dout * np.cos(x)}, {"x": np.ones(3)})
            assert result.oracles == ("numeric", "torch", "jax")
    """)
    result = run(project, "--gradcheck-oracles", "torch,jax")
    result.assert_outcomes(passed=1)
    bad = run(project, "--gradcheck-oracles", "theano")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "oracles names 'theano'" in bad.stderr.str()
