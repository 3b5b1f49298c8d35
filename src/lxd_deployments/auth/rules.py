"""The authorization rules, as plain functions of a `Caller` (no web framework here).

- Management (deployments, shapes and keys changes, the trust store, the audit log):
  admins only.
- Reading a deployment, its shapes, instances and changes: an admin, or a key of that
  deployment (`ro` or `rw`).
- Launching, deleting, changing the state of instances: an admin, or an `rw` key of
  that deployment.
- A key of deployment A asking about deployment B is refused with 403, whether B exists
  or not: the decision is taken from the caller's own keys before anything is looked
  up, so the answer tells nothing about other deployments.
- No identified caller: 401 (only `GET /1.0` is public, see `middleware.py`).
"""

from __future__ import annotations

from ..errors import Forbidden, Unauthorized
from .caller import Caller, Grant


def require_authenticated(caller: Caller) -> None:
    if not caller.is_authenticated:
        raise Unauthorized(caller.reason or "Not authenticated")


def require_admin(caller: Caller) -> None:
    require_authenticated(caller)
    if not caller.is_admin:
        raise Forbidden("Not authorized: this needs an admin (the unix socket or a trusted "
                        "certificate of type client); a deployment key reaches only the "
                        "governor API of its deployment")


def require_metrics_reader(caller: Caller) -> None:
    """`GET /1.0/metrics`: an admin, or a certificate of type `metrics`."""
    require_authenticated(caller)
    if not (caller.is_admin or caller.is_metrics):
        raise Forbidden("Not authorized: metrics need an admin or a trusted certificate of "
                        "type metrics")


def require_deployment(caller: Caller, project: str, deployment: str, *,
                       write: bool) -> Grant | None:
    """The grant that lets the caller read (or, with `write`, change) the deployment's
    instances; None for an admin, who needs none."""
    require_authenticated(caller)
    if caller.is_admin:
        return None
    grant = caller.grant_for(project, deployment)
    if grant is None:
        raise Forbidden(f'Not authorized for deployment "{deployment}" in project '
                        f'"{project}"')
    if write:
        require_writable(grant)
    return grant


def require_writable(grant: Grant) -> None:
    if not grant.writable:
        raise Forbidden(f'Deployment key "{grant.key_name}" is read-only (role '
                        f'"{grant.role}"): it may not launch, delete or change instances')


def require_operation_access(caller: Caller, owner: str | None, *, write: bool) -> None:
    """Whether the caller may see (or, with `write`, cancel) an operation; the caller
    already knows it exists only if it may see it, so the refusal is a 404 elsewhere."""
    require_authenticated(caller)
    if caller.is_admin or not write:
        return
    grant = caller.grant_owning(owner)
    if grant is None or not grant.writable:
        raise Forbidden("Not authorized: cancelling an operation needs the rw key that "
                        "started it")
