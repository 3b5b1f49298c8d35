"""ETags as LXD makes them: a hash of an object's writable fields, checked by `If-Match`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import PreconditionFailed


def etag_of(writable_fields: dict[str, Any]) -> str:
    encoded = json.dumps(writable_fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def check_if_match(if_match: str | None, writable_fields: dict[str, Any]) -> None:
    """Refuse a write prepared from a state that has changed since (412)."""
    if not if_match:
        return
    expected = if_match.strip()
    if expected.startswith("W/"):
        expected = expected[2:]
    expected = expected.strip('"')
    if expected != "*" and expected != etag_of(writable_fields):
        raise PreconditionFailed("ETag doesn't match: the object changed since it was read")
