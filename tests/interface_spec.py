"""The interface specification (interfaces/) as the git repository pytest-interface-tester
clones: a local one, made in a temporary directory (no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INTERFACE = "lxd-deployments-governor"


def spec_repository(tmp: Path) -> str:
    """A git repository holding `interfaces/` on branch main; its path."""
    repo = tmp / "charm-relation-interfaces"
    shutil.copytree(REPO / "interfaces", repo / "interfaces",
                    ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=tests", "-c", "user.email=tests@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "interfaces"], check=True)
    return f"file://{repo}"


def _scenario_compatibility() -> None:
    """pytest-interface-tester 3.4 reads `_EventPath.suffix`, which ops-scenario 8 calls
    `python_suffix` (same value): give it the old name until the tester catches up."""
    from scenario.state import _EventPath

    if not hasattr(_EventPath, "suffix"):
        _EventPath.suffix = property(lambda self: self.python_suffix)  # type: ignore[attr-defined]


_scenario_compatibility()
