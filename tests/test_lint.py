"""Lint is part of the test run, so CI fails on code ruff would reject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


PYTHON_TREES = ("src", "lib", "tests", "bench")


def test_ruff_finds_nothing() -> None:
    trees = [tree for tree in PYTHON_TREES if (REPO / tree).is_dir()]
    assert "src" in trees and "tests" in trees
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *trees],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
