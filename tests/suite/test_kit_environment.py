"""kit.require: a missing tool skips on a developer's machine and fails under CI=true (#24)."""

import os
import subprocess
import sys

import pytest

PROBE = """
from kit import require, variant

def test_needs_a_tool():
    require(False, "frobnicator is not installed (Debian frobnicator)")

@variant(True, "this kernel has frobs")
def test_of_another_machine_shape():
    pass
"""


def run_probe(tmp_path, ci: str):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = dict(
        os.environ, CI=ci, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_tool_fails_under_ci_naming_it(tmp_path, ci):
    done = run_probe(tmp_path, ci)
    assert done.returncode == 1, done.stdout
    assert "frobnicator is not installed (Debian frobnicator)" in done.stdout
    assert "1 failed, 1 skipped" in done.stdout


@pytest.mark.parametrize("ci", ["", "false"])
def test_a_missing_tool_skips_locally_with_the_reason(tmp_path, ci):
    done = run_probe(tmp_path, ci)
    assert done.returncode == 0, done.stdout
    assert "SKIPPED" in done.stdout and "frobnicator is not installed" in done.stdout
    assert "2 skipped" in done.stdout
