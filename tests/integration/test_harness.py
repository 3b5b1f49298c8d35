"""The harness itself: the busybox image really runs, and a missing LXD fails the run
(with instructions) instead of skipping it, in CI or not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from . import lxd_harness
from .lxd_harness import BUILD_IMAGE, REPO, HarnessError


def test_busybox_image_starts_and_stops(lxd, lxd_project):
    started = time.monotonic()
    lxd.lxc("launch", "busybox", "c1", "--project", lxd_project)
    state = lxd.lxc("list", "c1", "--project", lxd_project, "--format", "csv", "-c", "ns")
    assert state.stdout.strip() == "c1,RUNNING"
    # Its init answers LXD's stop signal once its trap is set: a clean (not forced) stop.
    lxd.wait_init_listens(lxd_project, "c1")
    lxd.lxc("stop", "c1", "--project", lxd_project, "--timeout", "20")
    state = lxd.lxc("list", "c1", "--project", lxd_project, "--format", "csv", "-c", "ns")
    assert state.stdout.strip() == "c1,STOPPED"
    assert time.monotonic() - started < 20


def test_build_image_script_refuses_a_missing_busybox(tmp_path):
    result = subprocess.run([str(BUILD_IMAGE), str(tmp_path / "x.tar.gz")],
                            env={**os.environ, "BUSYBOX": str(tmp_path / "no-busybox")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "install Debian's busybox-static" in result.stderr
    assert not (tmp_path / "x.tar.gz").exists()


def test_missing_lxd_is_an_error_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(lxd_harness, "LXD_LOCATIONS", (tmp_path,))
    with pytest.raises(HarnessError, match=r"lxd and lxc not found .*apt-get install lxd"):
        lxd_harness.PrivateLXD.create()


_WITHOUT_LXD = """\
import os, sys
import pytest
import tests.integration.lxd_harness as harness
harness.LXD_LOCATIONS = ()
os.environ["PATH"] = "/nonexistent"
sys.exit(pytest.main(["-p", "no:cacheprovider", "-rA", "-o", "addopts=",
                      "tests/integration/test_templates.py::test_unknown_project_refused"]))
"""


def test_missing_lxd_fails_the_run_even_in_ci():
    """The `lxd` fixture turns a missing LXD into a failure, never a skip."""
    env = {**os.environ, "CI": "true", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_LXD], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "cannot run the integration tests: lxd and lxc not found" in output
    assert "1 error" in output
    assert "skipped" not in output
