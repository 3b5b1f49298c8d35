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
from .generations import ACCESS, TRUST, Generations
from .instance_locks import InstanceLocks
from .lifecycle import Hooks
from .operations import Operations
from .placement_reports import PlacementReports
from .readiness import LXDReadiness
from .state_actions import StateActions
from .urls import DEFAULT_PROJECT as DEFAULT_PROJECT  # where the rest of core finds it

if TYPE_CHECKING:
    from .event_bus import EventBus


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
    # The state changes in flight of every process (in the store: state_actions.py).
    state_actions: StateActions = field(init=False)
    # Orders the service's own changes of each instance, across processes
    # (instance_locks.py).
    instance_locks: InstanceLocks = field(init=False)
    # The placement violations last reported per placement group (in the store), so
    # that a lasting one is told once (by the launch that made it, or the check).
    placement_reports: PlacementReports = field(init=False)
    # The trust and access counters this process follows (generations.py).
    generations: Generations = field(init=False)
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
    # store; it names who runs an operation, who holds a pending/deleting record or
    # waits on its hook, and who makes a state change.
    unit_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        # Made from the store: what they hold is shared by every process on it.
        object.__setattr__(self, "state_actions", StateActions(self.db, self.unit_id))
        object.__setattr__(self, "instance_locks", InstanceLocks(self.db))
        object.__setattr__(self, "placement_reports", PlacementReports(self.db))
        object.__setattr__(self, "generations", Generations(self.db))
        # Operations are recorded in the store, under this process's id.
        self.operations.attach(self.db, self.unit_id)
        # The events stream carries LXD's `operation` events (LXD's clients wait on them).
        if self.events is not None:
            self.operations.listen(self.events.operation_changed)
            # What it logs for the other processes' streams is marked with this id.
            self.events.use_process_id(self.unit_id)

    def trust_changed(self) -> None:
        """The trust store changed here: tell this process's listeners, and the others
        through the store (`generations.py`)."""
        self._bump(TRUST)
        self.tell_trust_listeners()

    def access_changed(self) -> None:
        """An access was narrowed here: this process's streams and caller cache check at
        once, the other processes' through the store's counter (`generations.py`)."""
        self._bump(ACCESS)
        self.tell_access_listeners()

    def _bump(self, name: str) -> None:
        try:
            self.generations.bump(name)
        except Exception:  # the change is made; the others learn of it at their resync
            self.generations.note_local()
            logger.exception("cannot tell the other processes that %s changed", name)

    def tell_trust_listeners(self) -> None:
        for listener in list(self.trust_listeners):
            try:
                listener()
            except Exception:
                logger.exception("a trust store listener failed")

    def tell_access_listeners(self) -> None:
        for listener in list(self.access_listeners):
            try:
                listener()
            except Exception:
                logger.exception("an access listener failed")

    def require_project_allowed(self, project: str) -> None:
        if self.projects is not None and project not in self.projects:
            raise Forbidden(f'Project "{project}" is not managed by this service')
