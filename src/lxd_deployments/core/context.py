"""The handles every core operation needs, built once by the daemon (or a test)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import Forbidden
from ..lxd import LXDAdapter
from ..store import Database
from .clock import Clock, SystemClock
from .inflight import InstanceLocks, Reported, StateActions
from .lifecycle import Hooks
from .operations import Operations
from .readiness import LXDReadiness
from .urls import DEFAULT_PROJECT as DEFAULT_PROJECT  # where the rest of core finds it

if TYPE_CHECKING:
    from ..webhooks.events import EventBus


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Core:
    """The store, the LXD adapter and the operation runner; core functions take it first.

    `projects` is the set of LXD projects the service may work in (None: any), so a
    service can be a tenant of a few projects of a shared LXD. `service_id` is written
    on every instance the service creates, so that two services sharing an LXD never
    adopt each other's instances. `state_actions` holds the state changes the service is
    making itself, so that the watcher does not take their LXD events for outside changes;
    `instance_locks` makes the changes of one instance (state changes, deletes) go one
    after the other.
    `events` publishes events to governors (webhooks, events stream); None: no events.
    """

    db: Database
    lxd: LXDAdapter
    operations: Operations = field(default_factory=Operations)
    projects: frozenset[str] | None = None
    service_id: str = "lxd-deployments"
    state_actions: StateActions = field(default_factory=StateActions)
    # Orders the service's own changes of each instance (see inflight.py).
    instance_locks: InstanceLocks = field(default_factory=InstanceLocks)
    # The placement violations last reported per placement group, so that a lasting one
    # is told once (by the launch that made it, or the check that found it).
    placement_reports: Reported = field(default_factory=Reported)
    events: EventBus | None = None
    # Called (with no argument) after the trust store changed: the HTTPS server reloads
    # its trusted certificates then. A listener must not raise.
    trust_listeners: list[Callable[[], None]] = field(default_factory=list)
    # Called (with no argument) after an access was taken away or narrowed (a key deleted
    # or changed, a certificate removed, a deployment deleted): long-lived connections
    # (the events stream) check their caller again then. A listener must not block.
    access_listeners: list[Callable[[], None]] = field(default_factory=list)
    # The host path of the in-instance socket, which governor-socket proxy devices connect
    # to (None: the service serves none).
    instance_socket: str | None = None
    # The lifecycle hooks this process waits on (see `lifecycle.py`).
    hooks: Hooks = field(default_factory=Hooks)
    # Set when a launch took a warm pool instance: the refiller wakes (`warm_pool.py`).
    warm_pool_wakeup: threading.Event = field(default_factory=threading.Event)
    # Whether LXD answered and the startup reconcile ran (the daemon starts without
    # LXD and waits for it; in tests a core is ready from the start).
    lxd_readiness: LXDReadiness = field(default_factory=LXDReadiness)
    # The one wall clock of schedule-driven work (pets); tests give a manual one.
    clock: Clock = field(default_factory=SystemClock)
    # This process's id (made at start): several processes (units, workers) share one
    # store; it names who runs an operation and who holds a pending/deleting record.
    unit_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        # Operations are recorded in the store, under this process's id.
        self.operations.attach(self.db, self.unit_id)
        # The events stream carries LXD's `operation` events (LXD's clients wait on them).
        if self.events is not None:
            self.operations.listen(self.events.operation_changed)

    def trust_changed(self) -> None:
        for listener in list(self.trust_listeners):
            try:
                listener()
            except Exception:
                logger.exception("a trust store listener failed")

    def access_changed(self) -> None:
        for listener in list(self.access_listeners):
            try:
                listener()
            except Exception:
                logger.exception("an access listener failed")

    def require_project_allowed(self, project: str) -> None:
        if self.projects is not None and project not in self.projects:
            raise Forbidden(f'Project "{project}" is not managed by this service')
