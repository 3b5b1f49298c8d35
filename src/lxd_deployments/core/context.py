"""The handles every core operation needs, built once by the daemon (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Forbidden
from ..lxd import LXDAdapter
from ..store import Database
from .inflight import StateActions
from .operations import Operations

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Core:
    """The store, the LXD adapter and the operation runner; core functions take it first.

    `projects` is the set of LXD projects the service may work in (None: any), so a
    service can be a tenant of a few projects of a shared LXD. `service_id` is written
    on every instance the service creates, so that two services sharing an LXD never
    adopt each other's instances. `state_actions` holds the state changes the service is
    making itself, so that the watcher does not take their LXD events for outside changes.
    """

    db: Database
    lxd: LXDAdapter
    operations: Operations = field(default_factory=Operations)
    projects: frozenset[str] | None = None
    service_id: str = "lxd-deployments"
    state_actions: StateActions = field(default_factory=StateActions)

    def require_project_allowed(self, project: str) -> None:
        if self.projects is not None and project not in self.projects:
            raise Forbidden(f'Project "{project}" is not managed by this service')
