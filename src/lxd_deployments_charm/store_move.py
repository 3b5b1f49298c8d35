"""Moving a unit's SQLite store into PostgreSQL: the service's `copy-store` command.

`lxd-deployments copy-store --config FILE` copies the SQLite store of the config's
state_dir into the config's `database`, once: it exits 0 when it copied or the copy was
already done, and 1 with a message when the target holds other data. The charm runs it on
the leader, with the service stopped (nothing written to SQLite after the copy is lost),
the first time the database relation gives credentials.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# Seconds the copy may take (a hook must end; a store of 100k records copies in seconds).
COPY_TIMEOUT = 600.0
# Characters of the command's output kept in a status message.
MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class CopyResult:
    ok: bool
    message: str = ""


def copy_store(python: str, code_dir: Path, config_file: Path, *,
               timeout: float = COPY_TIMEOUT) -> CopyResult:
    """Run the service's copy-store with the service's own code and config."""
    command = [python, "-m", "lxd_deployments", "copy-store", "--config", str(config_file)]
    try:
        done = subprocess.run(command, env={"PYTHONPATH": str(code_dir),
                                            "PYTHONDONTWRITEBYTECODE": "1",
                                            "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return CopyResult(False, f"copy-store did not finish in {timeout:.0f}s")
    except OSError as err:
        return CopyResult(False, f"copy-store could not run: {err}")
    output = " ".join((done.stderr.strip() or done.stdout.strip()).split())
    if done.returncode == 0:
        return CopyResult(True, output[-MESSAGE_LIMIT:])
    return CopyResult(False, output[-MESSAGE_LIMIT:] or f"exit status {done.returncode}")
