"""What the core needs from LXD, as a protocol: unit tests swap in a fake with these methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Profile:
    """The parts of an LXD profile a shape template can copy."""

    name: str
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)


class LXDAdapter(Protocol):
    """Questions and commands for LXD. Every method may raise `LXDUnavailable`."""

    def project_exists(self, project: str) -> bool:
        """Whether the LXD project exists."""
        ...

    def image_exists(self, project: str, *, alias: str | None = None,
                     fingerprint: str | None = None) -> bool:
        """Whether an image with this alias, or fingerprint (or prefix), is in the project."""
        ...

    def get_profile(self, project: str, name: str) -> Profile | None:
        """The profile, or None when the project has no profile of that name."""
        ...

    def delete_instance(self, project: str, name: str) -> None:
        """Stop (forcibly) and delete an instance; an instance already gone is not an error."""
        ...
