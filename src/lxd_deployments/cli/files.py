"""Reading the certificate files the user names on the command line."""

from __future__ import annotations

from .context import CommandError


def read_text_file(path: str, what: str) -> str:
    """The file's text, or a CommandError that names the file and the reason."""
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise CommandError(f"Cannot read {what} {path!r}: {err}") from err
