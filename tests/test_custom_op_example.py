"""The custom-op example project (``examples/custom_op``) passes its own suite, run from its own
directory as its CI would run it: the fused op passes, and each planted bug is caught."""

from pathlib import Path

import pytest
from test_pytest_plugin import run, summary

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_op"


def test_custom_op_example_passes(pytester: pytest.Pytester) -> None:
    if not EXAMPLE.is_dir():
        pytest.skip("the examples/ directory is not part of this installation")
    result = run(pytester, str(EXAMPLE), "--rootdir", str(EXAMPLE))
    result.assert_outcomes(passed=8)
    # 10 drawn examples and three fixture checks; the planted bugs are checked without the fixture.
    assert summary(result)[0] == "gradcheck: 13 checks in 4 tests, all passed; seed 0"
