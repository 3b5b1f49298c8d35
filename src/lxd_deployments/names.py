"""LXD's naming and config-key rules, shared by every resource of the service."""

import re

from .errors import InvalidInput

# LXD's instance-name rule: a hostname label. Deployments, shapes and keys follow it too
# so that instance names generated from them are always valid.
# Matched whole (`fullmatch`): with `match`, `$` also accepts a final newline.
_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")
MAX_NAME_LENGTH = 63
# Free-form names (trust store certificates) and config keys: any printable text, no
# control character (a newline would split a log line or a header), bounded.
MAX_LABEL_LENGTH = 255
MAX_CONFIG_KEY_LENGTH = 255
# LXD's project names: no slash, no whitespace or control character.
_PROJECT_PATTERN = re.compile(r"[^\s/\x00-\x1f\x7f]{1,63}")


def validate_name(name: str, what: str) -> str:
    """Return `name` when it follows LXD's rule, else raise a message that says which part fails."""
    if not isinstance(name, str) or name == "":
        raise InvalidInput(f"{what} name is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{what} name must be at most {MAX_NAME_LENGTH} characters long")
    if name[0].isdigit() or name[0] == "-":
        raise InvalidInput(f"{what} name must not start with a digit or a dash")
    if name.endswith("-"):
        raise InvalidInput(f"{what} name must not end with a dash")
    if not _NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"{what} name may only contain letters, digits and dashes")
    return name


def has_control_characters(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text)


def validate_label(name: str, what: str) -> str:
    """A free-form name (a certificate's): printable, at most `MAX_LABEL_LENGTH` long."""
    if len(name) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"{what} name must be at most {MAX_LABEL_LENGTH} characters long")
    if has_control_characters(name):
        raise InvalidInput(f"{what} name must not contain control characters (newlines, "
                           "tabs...)")
    return name


def validate_project(project: str) -> str:
    """An LXD project name: 1 to 63 characters, no slash, whitespace or control character."""
    if not _PROJECT_PATTERN.fullmatch(project):
        raise InvalidInput(f"Invalid project name {project!r}: 1 to 63 characters, without "
                           "slashes, whitespace or control characters")
    return project


def validate_config(config: dict[str, str], what: str, known_keys: frozenset[str]) -> None:
    """Refuse config keys that are neither `user.*` nor documented for this kind of object."""
    for key in config:
        if len(key) > MAX_CONFIG_KEY_LENGTH or has_control_characters(key) \
                or key != key.strip():
            raise InvalidInput(f"Invalid {what} configuration key {key[:64]!r}: at most "
                               f"{MAX_CONFIG_KEY_LENGTH} characters, without control "
                               "characters or surrounding whitespace")
        if key.startswith("user.") and len(key) > len("user."):
            continue
        if key in known_keys:
            continue
        raise InvalidInput(f'Unknown {what} configuration key "{key}"')
