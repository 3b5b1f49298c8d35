"""What every command handler gets: the API client, the standard streams and two errors.

Handlers take a `Context` rather than touching `sys` so tests can hand them a fake
transport and in-memory streams.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote

from lxd_deployments.client import DeploymentsClient


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see; exits 2 with the usage."""


class CommandError(Exception):
    """A command failed for a reason outside the API (unreadable file, editor failed)."""


@dataclass
class Context:
    """The environment a command runs in."""

    client_factory: Callable[[], DeploymentsClient]
    stdin: TextIO | None = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    quiet: bool = False
    _client: DeploymentsClient | None = None

    @property
    def client(self) -> DeploymentsClient:
        """The API client, made on first use so `daemon` and `--help` never build one."""
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def close_client(self) -> None:
        """Close the client if one was made."""
        if self._client is not None:
            self._client.close()

    def stdin_is_tty(self) -> bool:
        """True when standard input is a terminal (or absent): then it holds no YAML."""
        if self.stdin is None:
            return True
        try:
            return self.stdin.isatty()
        except (AttributeError, ValueError):
            return True

    def out(self, text: str = "") -> None:
        """Write a line of the command's real output."""
        self.stdout.write(text if text.endswith("\n") else text + "\n")

    def say(self, text: str) -> None:
        """Write a confirmation like lxc's "Profile p created", unless --quiet."""
        if not self.quiet:
            self.out(text)


def url_part(name: str) -> str:
    """Quote one path segment so no name can reach another route."""
    return quote(name, safe="")


def if_match(etag: str | None) -> dict[str, str]:
    """The If-Match header for a PUT after a GET, when the GET returned an ETag."""
    return {"If-Match": etag} if etag else {}


def api_path(*parts: str) -> str:
    """`/1.0/deployments/<d>/...` with every name quoted."""
    return "/1.0/" + "/".join(url_part(part) for part in parts)


def as_list(metadata: Any) -> list[dict[str, Any]]:
    """A recursion=1 collection as a list of objects (an empty answer is an empty list)."""
    if not metadata:
        return []
    return [item for item in metadata if isinstance(item, dict)]
