"""Outside changes: LXD's lifecycle events make the records follow what happened to our
instances behind the service's back, and a periodic full reconcile catches what events
missed.

Handled events, for instances that have a settled (`ready` or `failed`) record:
- `instance-deleted`: the record is dropped (change `deleted`), once LXD confirms that no
  instance of ours has the name any more (the event may arrive late);
- `instance-renamed` (`context.old_name`): the record follows the instance to its new
  name (change `renamed`) when the renamed instance carries our keys for the record's
  shape; otherwise the record's instance was never ours and the record is dropped;
- `instance-stopped`/`instance-shutdown`, `instance-started`, `instance-restarted`,
  `instance-paused`, `instance-resumed`: a change is recorded (`stopped`, `started`,
  `restarted`, `frozen`, `unfrozen`); a start makes a `failed` record `ready`.

Changes the service makes itself are not outside changes: `pending` and `deleting`
records belong to the service's own launches and deletes, and the start/stop/... events
of its own state changes are recognised through `core.state_actions`.

`Watcher` runs it all on threads (pylxd is blocking, the API's event loop stays free):
one listening to LXD's events, one handling them in order, one reconciling every
`interval` seconds and after every (re)connection of the events stream. Event handling
and reconciles of a project are serialised by one lock.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .. import metrics_export as metrics
from ..errors import LXDUnavailable
from ..lxd import LifecycleEvent
from ..store import changes as log
from ..store import instances as records
from ..store.rows import InstanceRow
from . import placement_groups
from .context import Core
from .reconcile import (
    LXD_MOVE_PREFIX,
    SETTLED,
    Summary,
    belongs_to,
    projects_to_reconcile,
    reconcile_project,
)

logger = logging.getLogger(__name__)

STATE_CHANGES = {
    "instance-stopped": log.STOPPED,
    "instance-shutdown": log.STOPPED,
    "instance-started": log.STARTED,
    "instance-restarted": log.RESTARTED,
    "instance-paused": log.FROZEN,
    "instance-resumed": log.UNFROZEN,
}


def handle_event(core: Core, event: LifecycleEvent) -> bool:
    """Make the records follow one LXD lifecycle event; True when a change was recorded."""
    if core.projects is not None and event.project not in core.projects:
        return False
    if event.action == "instance-deleted":
        return _on_deleted(core, event)
    if event.action == "instance-renamed":
        return _on_renamed(core, event)
    if event.action in STATE_CHANGES:
        return _on_state(core, event, STATE_CHANGES[event.action])
    return False


def _settled_record(core: Core, project: str, name: str
                    ) -> tuple[InstanceRow, records.ShapeRef] | None:
    with core.db.read() as conn:
        record = records.find(conn, project, name)
        if record is None or record.status not in SETTLED:
            return None
        shape = records.shape_ref(conn, record.shape_id)
    return None if shape is None else (record, shape)


def _note(conn, shape: records.ShapeRef, name: str, change: str, **detail: Any) -> None:
    metrics.outside_change(shape.project, change)
    log.record(conn, shape.deployment_id, shape.shape_name, shape.project, name, change,
               detail)


def _on_deleted(core: Core, event: LifecycleEvent) -> bool:
    found = _settled_record(core, event.project, event.name)
    if found is None:
        return False
    record, shape = found
    if _still_there_or_moving(core, event.project, event.name, shape):
        return False
    with core.db.write() as conn:
        if records.find(conn, event.project, event.name) != record:
            return False
        records.release(conn, record.id)
        _note(conn, shape, event.name, log.DELETED, previous=record.status,
              event=event.action)
    logger.info("instance %s of %s/%s was deleted in LXD: record dropped", event.name,
                shape.deployment_name, shape.shape_name)
    return True


def _still_there_or_moving(core: Core, project: str, name: str,
                           shape: records.ShapeRef) -> bool:
    """Whether the deleted name is ours again (a late event), or LXD is moving one of the
    shape's instances to another cluster member (a copy named `lxd-move-of-...` of ours
    exists, renamed to the name once the original is gone: the reconcile settles it).

    Both from one listing: `lxc move --target` renames its copy right after the delete,
    so two separate looks could miss the copy in the first and the name in the second."""
    for instance in core.lxd.list_instances(project):
        instance_name = instance.get("name", "")
        if (instance_name == name or instance_name.startswith(LXD_MOVE_PREFIX)) \
                and belongs_to(core, instance, shape):
            return True
    return False


def _on_renamed(core: Core, event: LifecycleEvent) -> bool:
    old_name = event.context.get("old_name")
    if not old_name or old_name == event.name:
        return False
    found = _settled_record(core, event.project, old_name)
    if found is None:
        return False
    record, shape = found
    follow = belongs_to(core, core.lxd.get_instance(event.project, event.name), shape)
    with core.db.write() as conn:
        if records.find(conn, event.project, old_name) != record:
            return False
        holder = records.find(conn, event.project, event.name)
        if follow and holder is not None:
            if holder.status not in SETTLED:
                return False  # one of our operations holds the name: the reconcile decides
            # A stale record: LXD only renames onto a free name, so its instance is gone.
            holder_shape = records.shape_ref(conn, holder.shape_id)
            records.release(conn, holder.id)
            if holder_shape is not None:
                _note(conn, holder_shape, holder.instance_name, log.DELETED,
                      previous=holder.status, reason="not found in LXD")
        if follow:
            records.rename(conn, record.id, event.name)
            _note(conn, shape, event.name, log.RENAMED, old_name=old_name, new_name=event.name)
        else:
            records.release(conn, record.id)
            _note(conn, shape, old_name, log.DELETED, previous=record.status,
                  reason=f'renamed in LXD to "{event.name}", which is not an instance of '
                         "this shape")
    logger.info("instance %s of %s/%s was renamed in LXD to %s", old_name,
                shape.deployment_name, shape.shape_name, event.name)
    return True


def _on_state(core: Core, event: LifecycleEvent, change: str) -> bool:
    found = _settled_record(core, event.project, event.name)
    if found is None:
        return False
    if core.state_actions.explains(event.project, event.name, event.action):
        return False  # our own start/stop/...
    record, shape = found
    with core.db.write() as conn:
        current = records.find(conn, event.project, event.name)
        if current is None or current.id != record.id or current.status not in SETTLED:
            return False
        if change in (log.STARTED, log.RESTARTED) and current.status == records.FAILED:
            records.set_status(conn, current.id, records.READY)
        _note(conn, shape, event.name, change, event=event.action)
    logger.info("instance %s of %s/%s: %s in LXD", event.name, shape.deployment_name,
                shape.shape_name, change)
    return True


_STOP = object()


class Watcher:
    """The background side of outside changes: events, their handling, periodic reconciles."""

    def __init__(self, core: Core, *, interval: float = 30.0) -> None:
        self.core = core
        self.interval = interval
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._lock = threading.Lock()
        self._events: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # --- the work, callable directly (tests, the daemon's startup) ----------------------

    def reconcile(self, *, startup: bool = False) -> Summary:
        """A full reconcile, project by project, each under the lock events are handled by."""
        summary = Summary()
        try:
            projects = projects_to_reconcile(self.core)
        except Exception:
            logger.exception("cannot list the projects to reconcile")
            return summary
        for project in projects:
            with self._lock:
                try:
                    summary.add(reconcile_project(self.core, project, startup=startup))
                    # Records now say where LXD has the instances: any placement group
                    # broken by a move or a lost member is told to its governor.
                    placement_groups.check_project(self.core, project)
                except Exception as err:
                    logger.exception("reconcile of project %s failed", project)
                    summary.failed[project] = str(err)
        return summary

    def handle(self, event: LifecycleEvent) -> bool:
        with self._lock:
            try:
                return handle_event(self.core, event)
            except LXDUnavailable as err:
                logger.warning("cannot handle LXD event %s on %s: %s (the reconcile will)",
                               event.action, event.name, err)
                self._kick.set()
            except Exception:
                logger.exception("handling LXD event %s on %s failed", event.action, event.name)
                self._kick.set()
        return False

    # --- threads ------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        targets: list[tuple[str, Callable[[], None]]] = [
            ("lxd-events", self._listen), ("lxd-events-handler", self._handle_loop),
            ("reconciler", self._reconcile_loop)]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._kick.set()
        self._events.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("thread %s did not stop in %.0fs", thread.name, timeout)
        self._threads = []

    def kick(self) -> None:
        """Ask for a full reconcile soon (after the events stream (re)connects)."""
        self._kick.set()

    def settle(self) -> None:
        """Wait until every event received so far has been handled (for tests)."""
        self._events.join()

    def _listen(self) -> None:
        try:
            self.core.lxd.watch_events(self._events.put, self._stop, on_connect=self.kick,
                                       projects=self.core.projects)
        except Exception:
            logger.exception("the LXD events listener stopped; the periodic reconcile goes on")

    def _handle_loop(self) -> None:
        while True:
            event = self._events.get()
            try:
                if event is _STOP:
                    return
                self.handle(event)
            finally:
                self._events.task_done()

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.interval)
            if self._stop.is_set():
                return
            self._kick.clear()
            self.reconcile(startup=False)
