"""The governor library installs from its own package into a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv

from charms.lxd_deployments.v0 import governor
from tests.interface_spec import REPO


def test_the_library_installs_from_its_package_and_imports(tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    # A copy, so that the build leaves nothing in the repository's lib/.
    source = tmp_path / "lib"
    subprocess.run(["cp", "-r", str(REPO / "lib"), str(source)], check=True)

    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)],
                   check=True, capture_output=True, text=True, timeout=540)
    probe = subprocess.run(
        [str(python), "-c", "import charms.lxd_deployments.v0.governor as g, ops; "
         "print(g.__file__); print(g.INTERFACE_NAME, g.LIBAPI, g.LIBPATCH); "
         "print(g.GovernorProvider.__name__, g.GovernorRequirer.__name__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path)

    where, names, classes = probe.stdout.splitlines()
    assert where.startswith(str(environment)) and "site-packages" in where
    # The package carries the very file in lib/ (its API and patch, not an older copy).
    assert names == f"lxd-deployments-governor {governor.LIBAPI} {governor.LIBPATCH}"
    assert classes == "GovernorProvider GovernorRequirer"
    assert sys.prefix != str(environment)
