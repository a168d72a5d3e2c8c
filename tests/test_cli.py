"""``python -m gradcheck report`` run as a user runs it: its output and exit code.

A subprocess where the process boundary is the point (exit codes reaching the shell, the console
script, a printed replay command pasted into a shell); elsewhere ``cli.main`` in this process,
with its output piped the same way, which spares each test a fresh import of torch."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gradcheck as gradcheck_package
from gradcheck import cli

ROOT = Path(cli.__file__).resolve().parents[1]  # the subprocess imports this gradcheck, from any cwd


def importable(name: str) -> bool:
    """Whether ``import name`` can work here (False also when it is blocked in ``sys.modules``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# Tests of the `plot` extra's features; without matplotlib they skip, and the test that the
# report asks for the extra runs instead.
needs_matplotlib = pytest.mark.skipif(not importable("matplotlib"), reason="needs the plot extra (matplotlib)")


def gradcheck(*args: str, cwd: Path | None = None, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("COLUMNS", None)  # output piped, width unknown: the table fits 80 columns
    paths = [pythonpath and str(pythonpath), str(ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return subprocess.run([sys.executable, "-m", "gradcheck", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _not_a_terminal(fd: int = 1) -> os.terminal_size:
    raise OSError("not a terminal")


@pytest.fixture
def cli_main(capsys, monkeypatch):
    """``cli_main(*args)``: what ``gradcheck(*args)`` returns, from ``cli.main(args)`` in this
    process. Output is captured as when piped: no terminal, no ``COLUMNS`` (so the table fits
    80 columns and progress is a line per case); ``sys.path`` is restored after. (Imported
    modules stay: torch, imported by a first check, cannot be imported twice in one process.)"""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(os, "get_terminal_size", _not_a_terminal)

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = cli.main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["python", "-m", "gradcheck", *args], code, out.out, out.err)

    return run


USER_MODULE = '''
import numpy as np
from hypothesis import strategies as st
import gradcheck
from gradcheck.strategies import float_arrays

def cube(x):
    return (x ** 3).sum()

def cube_backward(dout, x):
    return {"x": 3 * x ** 2 * dout}

def cube_backward_wrong(dout, x):
    return {"x": 2 * x ** 2 * dout}  # should be 3 x^2

inputs = st.fixed_dictionaries({"x": float_arrays((3,))})
gradcheck.register(
    gradcheck.Case(name="mine.cube", forward=cube, backward=cube_backward, inputs=inputs),
    gradcheck.Case(name="mine.cube_wrong", forward=cube, backward=cube_backward_wrong, inputs=inputs),
)
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user")
    (root / "mycases.py").write_text(textwrap.dedent(USER_MODULE))
    return root


def test_table_has_a_row_per_case_and_a_summary(cli_main):
    run = cli_main("report", "--case", "gates.*", "--examples", "3")
    assert run.returncode == 0, run.stderr
    for name in ("gates.add", "gates.multiply", "gates.max", "gates.sigmoid"):
        assert name in run.stdout
    assert max(map(len, run.stdout.splitlines())) <= 80  # piped: 80 columns
    for header in ("case", "kinks", "numeric", "torch", "verdict"):
        assert header in run.stdout
    text = " ".join(run.stdout.split())
    assert "gradcheck report OK: 8 cases, 8 passed, 0 failed, 0 errors" in text
    assert "seed 0" in text
    assert "[8/8] gates.sigmoid: pass" in run.stderr  # progress, off the report's stream


def test_json_document_has_the_documented_schema(cli_main):
    run = cli_main("report", "--case", "twolayer.*", "--case", "staged.*", "--examples", "3",
                    "--seed", "7", "--format", "json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["schema_version"] == 2 and document["ok"] is True and document["seed"] == 7
    assert {"cases", "examples", "errors", "kinks", "failures", "seed", "versions"} <= set(document)
    assert document["examples"] == 6 * 3 and document["points"] == 2  # the staged f's worked example, twice
    names = [c["name"] for c in document["cases"]]
    # In the order of the patterns, then of registration.
    assert names == ["twolayer.softmax_net", "twolayer.softmax_net_float32", "twolayer.nn_epoch_batch",
                     "twolayer.llayer_relu", "staged.f_xy", "staged.f_xy_sum"]
    for case in document["cases"]:
        assert case["verdict"] == "pass" and case["oracles"] == ["numeric", "torch"]
        # The cases with a Hessian-vector product are checked at the second order too.
        assert ("second order" in case["modes"]) == (case["name"] in ("twolayer.softmax_net", "staged.f_xy_sum"))
        assert case["examples"] == 3 and case["minimal_example"] is None  # as asked, fixed points apart
        assert set(case["worst_relative_error"]) == {"numeric", "torch"}
    assert document["errors"] == [] and document["failures"] == []


def test_markdown_is_a_table_for_job_summaries(cli_main):
    run = cli_main("report", "--case", "matmul.*", "--examples", "2", "--format", "markdown")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("### gradcheck report")
    assert "| case | examples | oracles | modes | kinks | worst vs numeric | worst vs torch | verdict | note |" in lines
    assert any(line.startswith("| `matmul.dW_dX` |") and "pass" in line for line in lines)


def test_gallery_passes_only_when_every_bug_is_caught_and_says_how(cli_main):
    """The one run of the whole gallery end to end. One drawn example per case: a bug counts as
    caught at its fixed point too, and test_gallery.py checks that each bug is caught on most
    drawn examples, by direct checks."""
    run = cli_main("report", "--gallery", "--examples", "1", "--format", "json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["gallery"] is True and document["ok"] is True
    assert len(document["cases"]) >= 13
    for case in document["cases"]:
        assert case["verdict"] == "caught" and case["bug"]
        expected = case["expected_diagnosis"]
        if expected is not None:
            assert expected in {d["kind"] for d in case["diagnoses"]}, case["name"]
    # A bug confined to one output's path is named through that output.
    (lstm,) = [c for c in document["cases"] if c["name"] == "gallery.lstm_dh_not_through_c"]
    assert {s["name"]: s["outputs"] for s in lstm["at_point"]["result"]["inputs"]} == {"Wx": ["h"], "Wh": ["h"]}
    assert [o["name"] for o in lstm["at_point"]["result"]["outputs"]] == ["h", "c"]
    table = cli_main("report", "--gallery", "--case", "gallery.transposed_dW", "--examples", "5")
    assert table.returncode == 0
    assert "caught" in table.stdout and "transpose" in table.stdout and "bug: dW computed as" in table.stdout


def test_user_module_cases_run_and_a_failure_is_shrunk(user_module, cli_main, monkeypatch):
    monkeypatch.syspath_prepend(str(user_module))
    run = cli_main("report", "--module", "mycases", "--examples", "20", "--format", "json")
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert [c["name"] for c in document["cases"]] == ["mine.cube", "mine.cube_wrong"]
    (failure,) = document["failures"]
    assert failure["case"] == "mine.cube_wrong"
    example = failure["minimal_example"]
    assert example["source"] == "drawn" and example["inputs"][0]["shape"] == [3]
    (diagnosis,) = document["cases"][1]["diagnoses"]
    # Shrunk to x = [-1, -1, -1]: there a factor cannot be told from a wrong formula at -1.
    assert diagnosis["kind"] == "undetermined" and diagnosis["params"]["fits"] == "scale"
    assert diagnosis["params"]["pattern"]["factor"] == pytest.approx(2 / 3)
    table = cli_main("report", "--module", "mycases", "--examples", "20")
    assert table.returncode == 1
    assert "smallest failing example (shrunk)" in table.stdout and "FAIL" in table.stdout
    replay = "replay: python -m gradcheck report --module mycases --case mine.cube_wrong --seed 0 --examples 20"
    assert replay in table.stdout


REPLAY = re.compile(r"^== (?P<case>\S+): (?P<verdict>\w+) \(case seed \d+; replay: (?P<command>.+)\)$", re.M)


def details(stdout: str, case: str) -> list[str]:
    """The details block of ``case`` in a table report: its header line to the blank line."""
    lines = stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"== {case}: ")))
    return lines[start:lines.index("", start)]


def test_printed_replay_command_reproduces_the_failure(user_module, tmp_path, cli_main, monkeypatch):
    """Pasted in the user's directory, the printed command fails the same way in a fresh process
    (and neither run leaves a Hypothesis directory there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(user_module))
    run = cli_main("report", "--module", "mycases", "--seed", "4", "--examples", "12", "--rtol", "1e-5")
    assert run.returncode == 1, run.stderr
    (printed,) = REPLAY.finditer(run.stdout)
    assert printed["case"] == "mine.cube_wrong" and printed["verdict"] == "FAIL"
    command = shlex.split(printed["command"])
    assert command[:4] == ["python", "-m", "gradcheck", "report"]
    replay = gradcheck(*command[3:], cwd=tmp_path, pythonpath=user_module)
    assert replay.returncode == 1, replay.stderr
    assert list(tmp_path.iterdir()) == []
    assert details(replay.stdout, "mine.cube_wrong") == details(run.stdout, "mine.cube_wrong")
    assert "smallest failing example (shrunk)" in "\n".join(details(replay.stdout, "mine.cube_wrong"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--case", "no.such.case"], "--case 'no.such.case' matches no case"),
        (["report", "--module", "no_such_module_anywhere"], "could not import case module 'no_such_module_anywhere'"),
        (["report", "--examples", "0"], "examples must be a positive integer"),
        (["report", "--format", "yaml"], "argument --format: invalid choice: 'yaml'"),
        (["report", "--case", "gallery.*"], "matches only gallery cases"),
        (["report", "--plot", ""], "argument --plot: '' is not a directory name"),
    ],
)
def test_misuse_gets_one_line_and_exit_code_2(args, message, cli_main):
    run = cli_main(*args)
    assert run.returncode == 2
    assert run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("gradcheck: error: ") and message in line
    assert "Traceback" not in run.stderr


GALLERY_ONLY = '''
import numpy as np
from hypothesis import strategies as st
import gradcheck

gradcheck.register(gradcheck.Case(
    name="mine.doubled", forward=lambda x: float(np.sum(x ** 2)), backward=lambda dout, x: {"x": 4 * x * dout},
    inputs=st.just({"x": np.ones(2)}), bug="the gradient doubled",
))
'''


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "there are no correct (non-gallery) cases to run; use --gallery to run the known-buggy variants"),
        (["--case", "mine.*"],
         "--case 'mine.*' matches only gallery cases (e.g. 'mine.doubled'); run them with --gallery"),
        (["--gallery", "--case", "x*"], "--case 'x*' matches no case (known: mine.doubled); --list shows them all"),
    ],
)
def test_case_selection_misuse_is_said_in_the_flags_words(args, message, tmp_path, monkeypatch, capsys,
                                                           isolated_imports):
    (tmp_path / "gallery_only_cases.py").write_text(GALLERY_ONLY)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--module", "gallery_only_cases.py", "--list", *args]) == 2
    assert capsys.readouterr().err == f"gradcheck: error: {message}\n"


def test_the_report_runs_its_cases_through_the_runner(tmp_path, monkeypatch, capsys):
    """The command line has no run loop of its own: ``runner.run_cases`` runs the cases."""
    from gradcheck import runner

    (tmp_path / "gallery_run_cases.py").write_text(GALLERY_ONLY.replace("mine.doubled", "mine.doubled_run"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reports = []
    run_cases = runner.run_cases
    monkeypatch.setattr(runner, "run_cases", lambda *a, **kw: reports.append(run_cases(*a, **kw)) or reports[-1])
    args = ["report", "--module", "gallery_run_cases", "--gallery", "--examples", "2", "--format", "json"]
    assert cli.main(args) == 0
    (report,) = reports
    assert [run.verdict for run in report.runs] == ["caught"] and report.modules == ("gallery_run_cases",)
    assert json.loads(capsys.readouterr().out)["cases"][0]["verdict"] == "caught"


@needs_matplotlib
def test_unwritable_plot_directory_is_misuse(tmp_path, cli_main):
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = cli_main("report", "--case", "gates.add", "--plot", str(blocker))
    assert run.returncode == 2 and "exists and is not a directory" in run.stderr
    run = cli_main("report", "--case", "gates.add", "--plot", str(blocker / "sub"))
    assert run.returncode == 2 and "is not writable" in run.stderr


@needs_matplotlib
def test_plots_are_written_per_case(tmp_path, cli_main):
    out = tmp_path / "plots"
    run = cli_main("report", "--case", "sigmoid_chain.one_per_layer", "--case", "gates.exp",
                    "--examples", "4", "--plot", str(out))
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gates.exp.steps.png", "sigmoid_chain.one_per_layer.layers.png",
                     "sigmoid_chain.one_per_layer.steps.png"]
    assert all((out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert cli.main(["report", "--case", "gates.add", "--plot", "unused"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gradcheck[plot]'" in err


def test_list_and_no_command():
    run = gradcheck("report", "--list", "--case", "softplus.*")
    assert run.returncode == 0 and run.stdout.startswith("softplus.squiggle\t")
    run = gradcheck()
    assert run.returncode == 2 and "report" in run.stderr


LONG_MODULE = '''
import numpy as np
from hypothesis import strategies as st
import gradcheck

def cube(x):
    return float(np.sum(np.asarray(x) ** 3))

def cube_backward(dout, x):
    return {"x": 3 * x ** 2 * dout}

gradcheck.register(gradcheck.Case(
    name="mine.long", forward=cube, backward=cube_backward,
    inputs=st.just({"x": np.linspace(-1.0, 1.0, 200)}),
))
'''


def test_a_long_check_shows_its_stage_in_a_log(tmp_path, monkeypatch, capsys, check_clock):
    """The check is long by its clock, which runs a second at each reading, on any machine (a
    forward that sleeps instead ran its evaluations on many cores in under a second)."""
    (tmp_path / "longcases.py").write_text(textwrap.dedent(LONG_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    check_clock(1.0)
    monkeypatch.setattr(cli, "LOG_EVERY", 0.0)  # a line for every update past the first second
    assert cli.main(["report", "--module", "longcases", "--examples", "1"]) == 0
    err = capsys.readouterr().err
    # While the one check runs, lines name the case, the stage (and its input) and how far it is.
    assert re.search(r"^\[1/1\] mine\.long: (x: )?[a-z ]+ [\d,]+/[\d,]+ \(\d+%\), [\d.]+ s", err, re.M), err
    assert "[1/1] mine.long: pass" in err


# What pip installs as the ``gradcheck`` console script: sys.path starts at the script's folder,
# not at the current directory as under ``python -m``.
CONSOLE_SCRIPT = '''
import sys
from gradcheck.cli import main
if __name__ == "__main__":
    sys.exit(main())
'''


def console_script(*args: str, cwd: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    script = bin_dir / "gradcheck"
    script.write_text(CONSOLE_SCRIPT)
    env = dict(os.environ)
    repo = Path(cli.__file__).resolve().parents[1]  # gradcheck itself, as if installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_version_from_both_commands(user_module, tmp_path):
    for run in (gradcheck("--version"), console_script("--version", cwd=user_module, bin_dir=tmp_path)):
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"gradcheck {gradcheck_package.__version__}"


def test_console_script_imports_a_module_from_the_current_directory(user_module, tmp_path):
    run = console_script("report", "--module", "mycases", "--list", cwd=user_module, bin_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    assert [line.split("\t")[0] for line in run.stdout.splitlines()] == ["mine.cube", "mine.cube_wrong"]


PATH_MODULE = '''
import numpy as np
from hypothesis import strategies as st
import gradcheck

gradcheck.register(gradcheck.Case(
    name="mine.by_path_{n}", forward=lambda x: float(np.sum(x ** 2)), backward=lambda dout, x: {{"x": 2 * x * dout}},
    inputs=st.just({{"x": np.ones(2)}}),
))
'''


@pytest.fixture
def isolated_imports(monkeypatch):
    """sys.path and sys.modules as they were once the test is done."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


def test_module_may_be_a_file_path(tmp_path, monkeypatch, capsys, isolated_imports):
    folder = tmp_path / "somewhere" / "else"
    folder.mkdir(parents=True)
    (folder / "path_cases_a.py").write_text(PATH_MODULE.format(n="a"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--module", "somewhere/else/path_cases_a.py", "--list"]) == 0
    assert capsys.readouterr().out.startswith("mine.by_path_a\t")
    assert cli.main(["report", "--module", "somewhere/else/missing.py", "--list"]) == 2
    err = capsys.readouterr().err
    assert "case module 'somewhere/else/missing.py' is neither a .py file nor a package folder" in err


BROKEN_MODULE = '''import numpy as np


def shape_of_weights():
    return np.ones(6).reshape(4, 4)  # line 5: the user's mistake, raised inside numpy


W = shape_of_weights()
'''


@pytest.mark.parametrize("show_traceback", [False, True])
def test_import_error_names_the_users_file_and_line(tmp_path, monkeypatch, capsys, isolated_imports, show_traceback):
    (tmp_path / "broken_cases_x.py").write_text(BROKEN_MODULE)
    monkeypatch.chdir(tmp_path)
    args = ["report", "--module", "broken_cases_x"] + (["--traceback"] if show_traceback else [])
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = ("gradcheck: error: could not import case module 'broken_cases_x': ValueError: cannot reshape "
               "array of size 6 into shape (4,4) (at broken_cases_x.py:5)")
    last = captured.err.strip().splitlines()[-1]
    if show_traceback:
        assert last == message
        assert captured.err.startswith("Traceback (most recent call last):")
        assert "np.ones(6).reshape(4, 4)" in captured.err and "line 8, in <module>" in captured.err
    else:
        assert captured.err.strip() == message + "; --traceback shows the full traceback"


def test_the_exact_oracles_are_chosen_by_flag_and_replayed(cli_main):
    import numpy as np
    from hypothesis import strategies as st

    import gradcheck

    pytest.importorskip("jax")
    run = cli_main("report", "--case", "gates.multiply", "--examples", "3", "--oracles", "torch,jax",
                   "--format", "json")
    assert run.returncode == 0, run.stderr
    (case,) = json.loads(run.stdout)["cases"]
    assert case["oracles"] == ["numeric", "torch", "jax"]
    assert set(case["worst_relative_error"]) == {"numeric", "torch", "jax"}
    from gradcheck.options import Settings
    from gradcheck.runner import CaseRun, RunReport

    case = gradcheck.Case(name="mine.any", forward=lambda x: x, backward=lambda dout, x: {"x": dout},
                          inputs=st.just({"x": np.ones(2)}))
    report = RunReport(Settings(oracles=("torch", "jax")), False, [CaseRun(case=case, seed=0)])
    words = shlex.split(report.replay_command(report.runs[0]))
    assert words[words.index("--oracles") + 1] == "torch,jax"


def test_an_unknown_oracle_is_misuse_in_one_line(cli_main):
    run = cli_main("report", "--case", "gates.add", "--examples", "1", "--oracles", "theano")
    assert run.returncode == 2
    assert "oracles names 'theano', which is not an oracle" in run.stderr
