"""Domain errors: what went wrong, in words a user can act on, with no HTTP in sight.

The API layer maps each class to an HTTP status in one table (`api/errors.py`); the
core, the store and the LXD adapter only ever raise these.
"""


class DeploymentsError(Exception):
    """Base of every error the service reports to a caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DeploymentsError):
    """The request is malformed or breaks a validation rule (400)."""


class NotFound(DeploymentsError):
    """The named object does not exist, or is not visible to the caller (404)."""


class Conflict(DeploymentsError):
    """The object exists already, is in use, or a scaling bound would be crossed (409)."""


class NameTaken(Conflict):
    """An instance name already recorded in the project (409); `name` says which."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class BoundReached(Conflict):
    """A launch past `scaling_maximum` or a delete below `scaling_minimum` (409)."""


class PlacementRefused(Conflict):
    """A strict placement group's rule leaves no cluster member for a launch (409)."""


class PreconditionFailed(DeploymentsError):
    """The `If-Match` ETag does not match the object's current state (412)."""


class Forbidden(DeploymentsError):
    """The caller is known but may not do this (403)."""


class Unauthorized(DeploymentsError):
    """The caller could not be identified (401)."""


class PayloadTooLarge(DeploymentsError):
    """The request body is over the service's limit (413)."""


class TooManyRequests(DeploymentsError):
    """The caller spent its budget of refused requests; it may try again later (429)."""


class LXDUnavailable(DeploymentsError):
    """LXD could not be reached or answered with an unexpected failure (503)."""


class LXDBusy(LXDUnavailable):
    """LXD refused a change because the instance is busy with another one ("Instance is
    busy running a ... operation"): worth trying again shortly."""
