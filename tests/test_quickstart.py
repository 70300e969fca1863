"""A newcomer's first contact: the README's quick start, as CI runs it from a fresh clone.

`.ci/run` reads the quick-start commands out of README.md and runs them in a fresh `git clone`;
these fast checks keep the pieces it relies on from drifting.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quickstart():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.quickstart_commands


def test_ci_reads_both_quickstart_commands_from_the_readme():
    commands = _quickstart()((ROOT / "README.md").read_text())
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("&& dvc repro") and "pip install -e '.[dev,offline]'" in demo
    assert tests.endswith(".venv/bin/pytest")
    assert "readme_commands.py README.md" in (ROOT / ".ci" / "run").read_text()


def test_a_readme_without_a_quickstart_block_is_an_error():
    with pytest.raises(SystemExit, match="no ```bash block"):
        _quickstart()("# x\n\n## Quick start\n\nno code here\n\n## Next\n")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_dvc_lock_is_not_git_ignored():
    # `dvc repro` refuses to write a git-ignored dvc.lock: a fresh clone failed at once
    found = subprocess.run(["git", "check-ignore", "-q", "dvc.lock"], cwd=ROOT)
    assert found.returncode == 1, ".gitignore hides dvc.lock"
