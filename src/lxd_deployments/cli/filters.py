"""`list` filters as `lxc list` reads them: `NAME` (a name prefix or an anchored regular
expression) and `KEY=VALUE` (a config key or a field with that value); all must match."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .output import cell_text


def _name_matches(name: str, pattern: str) -> bool:
    if name.startswith(pattern):
        return True
    anchored = pattern if ("^" in pattern or "$" in pattern) else f"^{pattern}$"
    try:
        return re.search(anchored, name) is not None
    except re.error:  # not a regular expression: the prefix test was the whole test
        return False


def _value_of(obj: Mapping[str, Any], key: str) -> str | None:
    config = obj.get("config")
    if isinstance(config, Mapping) and key in config:
        return str(config[key])
    if key in obj and key != "config":
        return cell_text(obj[key])
    return None


def matches(obj: Mapping[str, Any], filters: Sequence[str]) -> bool:
    """Whether an object of a `list` passes every filter."""
    for item in filters:
        key, sep, value = item.partition("=")
        if sep:
            if _value_of(obj, key) != value:
                return False
        elif not _name_matches(str(obj.get("name") or ""), item):
            return False
    return True


def list_filters(args: Any) -> list[str]:
    """The filters of a top-level `list`: what follows `REMOTE:` on the first argument
    (or the whole first argument when it names no remote), then the others."""
    first = getattr(args, "remote_prefix", None)
    return [*([first] if first else []), *(getattr(args, "filters", None) or [])]
