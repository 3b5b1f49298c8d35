"""YAML in, as lxc takes it: a document on standard input, or the object in $EDITOR.

`create NAME < file.yaml` and `edit NAME < file.yaml` read standard input when it is not
a terminal; `edit` on a terminal opens the editor and re-opens it after an error, keeping
the user's changes, until the change is accepted or the user gives up with ctrl+c.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from lxd_deployments.client import APIError

from .context import CommandError, Context

# HTTP status of an ETag mismatch: re-editing cannot fix it, so the loop stops there.
_PRECONDITION_FAILED = 412


class InvalidDocument(ValueError):
    """A YAML document that is not valid YAML or does not describe the object."""


class _DuplicateKey(yaml.YAMLError):
    """A mapping that names a key twice: PyYAML would keep the last one silently."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, as Go's YAML decoder
    (and so lxc) does: a second `config:` must not silently replace the first."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    earlier = first_line.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if earlier is not None:
                    raise _DuplicateKey(f'line {line}: mapping key "{key}" already defined '
                                        f"at line {earlier}")
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_document(text: str, *, allow_empty: bool = True) -> dict[str, Any]:
    """Parse a YAML mapping; an empty document is `{}` unless `allow_empty` is False."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        raise InvalidDocument(f"Invalid YAML: {err}") from err
    if data is None:
        if not allow_empty:
            raise InvalidDocument("The YAML document is empty")
        return {}
    if not isinstance(data, dict):
        raise InvalidDocument("The YAML document must be a mapping of fields")
    return data


def read_stdin_document(ctx: Context) -> dict[str, Any]:
    """The YAML document piped to a `create`, or `{}` when standard input is a terminal."""
    if ctx.stdin_is_tty():
        return {}
    assert ctx.stdin is not None
    return parse_document(ctx.stdin.read())


def scalar_text(value: Any, what: str) -> str:
    """A config value as the API stores it: YAML `1` or `true` mean the strings "1", "true"
    (Go's YAML decoder does the same for lxc, so files written for lxc keep working)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidDocument(f"{what} must be a plain value, not {type(value).__name__}")


def string_map(value: Any, what: str) -> dict[str, str]:
    """A `config`-like map with every value a string."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidDocument(f"{what} must be a mapping")
    return {str(key): scalar_text(item, f"{what}.{key}") for key, item in value.items()}


def choose_editor(environ: Mapping[str, str]) -> list[str]:
    """The editor command: $EDITOR, then $VISUAL (lxc's order), else vi."""
    command = environ.get("EDITOR") or environ.get("VISUAL") or "vi"
    return shlex.split(command)


def run_editor(ctx: Context, text: str) -> str:
    """Open `text` in the user's editor and return what they saved."""
    handle, path = tempfile.mkstemp(prefix="lxd-deployments-", suffix=".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        command = [*choose_editor(ctx.environ), path]
        try:
            result = subprocess.run(command, check=False, env=dict(ctx.environ))
        except OSError as err:
            raise CommandError(f"Cannot run the editor {command[0]!r}: {err}") from err
        if result.returncode != 0:
            raise CommandError(f"The editor {command[0]!r} exited with {result.returncode}")
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    finally:
        os.unlink(path)


def edit_until_accepted(ctx: Context, text: str, apply: Callable[[dict[str, Any]], None]) -> None:
    """Edit `text` and `apply` the result; on a YAML or API error, say why and edit again."""
    content = run_editor(ctx, text)
    while True:
        try:
            apply(parse_document(content, allow_empty=False))
            return
        except APIError as err:
            if err.status_code == _PRECONDITION_FAILED:
                raise
            problem = err.message
        except InvalidDocument as err:
            problem = str(err)
        ctx.stderr.write(f"Config parsing error: {problem}\n")
        ctx.out("Press enter to open the editor again or ctrl+c to abort change")
        if ctx.stdin is not None:
            ctx.stdin.readline()
        content = run_editor(ctx, content)
