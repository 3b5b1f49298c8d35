"""The few systemd calls the charm makes, in one place (tests replace this module)."""

from __future__ import annotations

import subprocess

from .errors import CharmError

SYSTEMCTL = "systemctl"
TIMEOUT = 120


class SystemdError(CharmError):
    """systemctl failed; the message has its words."""


def _systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run([SYSTEMCTL, *args], capture_output=True, text=True,
                                timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SystemdError(f"systemctl {' '.join(args)}: {err}") from err
    if check and result.returncode != 0:
        raise SystemdError(f"systemctl {' '.join(args)} failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    return result


def daemon_reload() -> None:
    _systemctl("daemon-reload")


def enable(service: str) -> None:
    _systemctl("enable", service)


def is_enabled(service: str) -> bool:
    return _systemctl("is-enabled", "--quiet", service, check=False).returncode == 0


def restart(service: str) -> None:
    _systemctl("restart", service)


def stop(service: str) -> None:
    _systemctl("stop", service, check=False)


def disable(service: str) -> None:
    _systemctl("disable", service, check=False)


def is_active(service: str) -> bool:
    return _systemctl("is-active", "--quiet", service, check=False).returncode == 0
