"""`store_move.copy_store`: runs the service's `copy-store` with the service's own code
and config, reports its exit and message, and gives up past its time limit."""

from __future__ import annotations

import sys
from pathlib import Path

from lxd_deployments_charm.store_move import copy_store

# A stand-in for the service's package: `python -m lxd_deployments copy-store --config F`
# records its argv and answers as the config file says.
MAIN = '''
import sys, time
from pathlib import Path
Path(sys.argv[-1] + ".argv").write_text(" ".join(sys.argv[1:]))
mode = Path(sys.argv[-1]).read_text().strip()
if mode == "refuse":
    print("copy-store: the database holds another service's data", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
print("copied 3 deployments, 2 keys")
'''


def _code(tmp_path: Path) -> Path:
    package = tmp_path / "code" / "lxd_deployments"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(MAIN)
    return tmp_path / "code"


def test_a_copy_that_succeeds(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("ok")

    result = copy_store(sys.executable, _code(tmp_path), config)

    assert result.ok
    assert result.message == "copied 3 deployments, 2 keys"
    assert Path(f"{config}.argv").read_text() == f"copy-store --config {config}"


def test_a_refused_copy_carries_the_commands_message(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("refuse")

    result = copy_store(sys.executable, _code(tmp_path), config)

    assert not result.ok
    assert result.message == "copy-store: the database holds another service's data"


def test_a_copy_past_its_time_limit_is_a_failure(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("hang")

    result = copy_store(sys.executable, _code(tmp_path), config, timeout=1.0)

    assert not result.ok
    assert result.message == "copy-store did not finish in 1s"


def test_a_missing_interpreter_is_a_failure_not_a_crash(tmp_path):
    result = copy_store(str(tmp_path / "no-python"), _code(tmp_path), tmp_path / "c.yaml")

    assert not result.ok and "could not run" in result.message
