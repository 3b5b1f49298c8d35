"""LXD's naming and config-key rules, shared by every resource of the service."""

import re

from .errors import InvalidInput

# LXD's instance-name rule: a hostname label. Deployments, shapes and keys follow it too
# so that instance names generated from them are always valid.
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
MAX_NAME_LENGTH = 63


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
    if not _NAME_PATTERN.match(name):
        raise InvalidInput(f"{what} name may only contain letters, digits and dashes")
    return name


def validate_config(config: dict[str, str], what: str, known_keys: frozenset[str]) -> None:
    """Refuse config keys that are neither `user.*` nor documented for this kind of object."""
    for key in config:
        if key.startswith("user.") and len(key) > len("user."):
            continue
        if key in known_keys:
            continue
        raise InvalidInput(f'Unknown {what} configuration key "{key}"')
