"""What installing gradcheck puts into a user's environment, and how the README says to do it."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_generic_top_level_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    # Every installed top-level name is gradcheck's own; the repository's reference_impls/
    # folder is installed as gradcheck_reference.
    assert {name.split(".")[0] for name in setuptools["packages"]} == {"gradcheck", "gradcheck_reference"}
    assert setuptools["package-dir"]["gradcheck_reference"] == "reference_impls"
    assert config["project"]["entry-points"]["gradcheck.cases"] == {"reference": "gradcheck_reference"}
    # As installed: the entry point the report loads its cases from.
    assert [ep.value for ep in entry_points(group="gradcheck.cases") if ep.name == "reference"] == [
        "gradcheck_reference"]


def test_reference_cases_import_under_the_installed_name():
    import gradcheck_reference
    from gradcheck.registry import load_module

    cases = load_module("gradcheck_reference")
    assert {case.name for case in cases} == {case.name for case in (*gradcheck_reference.CORRECT,
                                                                    *gradcheck_reference.GALLERY)}


def test_quick_start_stays_two_commands_and_the_cpu_build_is_explained():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```")[1]
    assert quick_start.strip().splitlines() == [
        'pip install -c constraints.txt -e ".[test,plot]" && python -m gradcheck report',
        "python -m pytest -n auto",
    ]
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in section
    assert "pins the CPU build" not in readme  # a version pin does not choose the build
