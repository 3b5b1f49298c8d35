"""Assertions shared by the integration tests."""

from __future__ import annotations

from typing import Any

import httpx


def error_of(response: httpx.Response) -> tuple[int, str]:
    """The HTTP status and message of LXD's error envelope, checking that it is one."""
    body = response.json()
    assert body["type"] == "error", body
    assert body["error_code"] == response.status_code, body
    assert body["metadata"] is None, body
    return response.status_code, body["error"]


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The metadata of a successful sync answer, checking the envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "sync", body
    assert body["error_code"] == 0, body
    return body["metadata"]


def cli_ok(result) -> str:
    """The stdout of a CLI run that must have succeeded."""
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def cli_error(result) -> str:
    """The message of a CLI run that must have failed as lxc does (`Error: ...`, exit 1)."""
    assert result.code == 1, f"exit {result.code}: {result.stdout}{result.stderr}"
    assert result.stderr.startswith("Error: "), result.stderr
    return result.stderr.removeprefix("Error: ").strip()
