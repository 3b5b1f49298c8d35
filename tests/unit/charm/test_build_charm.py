"""scripts/build-charm lays the charm out as `charmcraft pack` does (without downloads)."""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_the_charm_layout(tmp_path):
    output = tmp_path / "lxd-deployments.charm"

    subprocess.run([sys.executable, str(REPO / "scripts" / "build-charm"), "--skip-deps",
                    "--base", "22.04", "--arch", "arm64", "--output", str(output)],
                   check=True, capture_output=True, text=True)

    with zipfile.ZipFile(output) as charm:
        names = set(charm.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in charm.infolist()}
        manifest = yaml.safe_load(charm.read("manifest.yaml"))
        dispatch = charm.read("dispatch").decode()
    assert {"metadata.yaml", "config.yaml", "actions.yaml", "dispatch", "src/charm.py",
            "src/templates/config.yaml.j2", "src/templates/lxd-deployments.service.j2",
            "src/lxd_deployments/daemon.py", "src/lxd_deployments_charm/install.py",
            "lib/charms/lxd_deployments/v0/governor.py"} <= names
    assert not any(n.startswith(("tests/", ".venv/", "bench/")) or "__pycache__" in n
                   or ".egg-info" in n for n in names)
    assert modes["dispatch"] & stat.S_IXUSR and modes["src/charm.py"] & stat.S_IXUSR
    assert "PYTHONPATH=lib:venv" in dispatch and "./src/charm.py" in dispatch
    assert manifest["bases"] == [{"name": "ubuntu", "channel": "22.04",
                                  "architectures": ["arm64"]}]


def test_the_build_records_what_it_used(tmp_path):
    output = tmp_path / "lxd-deployments.charm"

    subprocess.run([sys.executable, str(REPO / "scripts" / "build-charm"), "--skip-deps",
                    "--output", str(output)], check=True, capture_output=True, text=True)

    with zipfile.ZipFile(output) as charm:
        record = yaml.safe_load(charm.read("build-record.yaml"))
        lock = charm.read("requirements.txt")
    assert record["base"] == "ubuntu@24.04" and record["python"] == "3.12"
    assert record["lock-sha256"] == hashlib.sha256(lock).hexdigest()
    assert len(record["source-commit"]) >= 40


def test_the_lock_pins_every_distribution():
    """Strict dependencies: requirements.txt is the complete, pinned lock."""
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[a-z0-9-]+==[A-Za-z0-9.+-]+", line) for line in lines)
    names = {line.split("==")[0] for line in lines}
    for wanted in (REPO / "requirements.in").read_text().splitlines():
        if wanted.strip() and not wanted.startswith("#"):
            name = re.split(r"[<>=!~\[ ]", wanted, maxsplit=1)[0]
            assert re.sub(r"[-_.]+", "-", name).lower() in names, name
    charmcraft = yaml.safe_load((REPO / "charmcraft.yaml").read_text())
    assert charmcraft["parts"]["charm"]["charm-strict-dependencies"] is True
    # Strict dependencies build from source all but these; psycopg-binary has no source.
    assert "psycopg-binary" in names
    assert "psycopg-binary" in charmcraft["parts"]["charm"]["charm-binary-python-packages"]
