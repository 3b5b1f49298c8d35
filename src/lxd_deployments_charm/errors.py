"""The charm's errors: what a person can fix (Blocked) and what time will fix (Waiting)."""

from __future__ import annotations


class CharmError(Exception):
    """Base of the errors the charm reports as a status rather than raises to Juju."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BlockedError(CharmError):
    """A person must act: bad config, a conflict only an admin can resolve."""


class WaitingError(CharmError):
    """Nothing to do but wait: the service is starting, a relation has no data yet."""
