"""Background operations as LXD has them: long work answers 202 at once with an operation
that callers poll, wait on, or cancel while it has not started.

The work runs on a bounded thread pool because the LXD adapter (pylxd) is synchronous,
in the process that started it. The store holds the record (`store/operations.py`),
written on creation and on every change of status (progress at most every
`METADATA_INTERVAL` seconds), so that every process sharing the store (units behind a
load balancer, workers) reads, waits on and cancels any operation: waiting on one run
elsewhere polls its row; cancelling one flags it, and the runner honours the flag (before
a queued operation starts, and between the steps of a cancellable one). Finished
operations are kept `keep_seconds`, and at most `keep_rows` of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, DeploymentsError, NotFound
from ..store import operations as rows
from ..store.operations import OperationRow
from .urls import DEFAULT_PROJECT, operation_url

if TYPE_CHECKING:
    from ..store import Database

logger = logging.getLogger(__name__)

# Seconds between two looks at the store: for the cancels asked of this process's
# operations, and by a waiter on an operation another process runs.
POLL_INTERVAL = 0.1
# Seconds between two writes of a running operation's progress (its metadata).
METADATA_INTERVAL = 0.5
# Seconds a cancel asked of another process's pending operation waits for it to end.
REMOTE_CANCEL_WAIT = 5.0
# Seconds between two prunings of the store's finished operations (by each process).
PRUNE_INTERVAL = 30.0
# Finished operations the store keeps at most, however young.
KEEP_ROWS = 5000


class Status(Enum):
    """LXD's operation status codes (shared/api/status_code.go)."""

    PENDING = ("Pending", 105)
    RUNNING = ("Running", 103)
    SUCCESS = ("Success", 200)
    FAILURE = ("Failure", 400)
    CANCELLED = ("Cancelled", 401)

    @property
    def text(self) -> str:
        return self.value[0]

    @property
    def code(self) -> int:
        return self.value[1]

    @property
    def final(self) -> bool:
        return self in (Status.SUCCESS, Status.FAILURE, Status.CANCELLED)


STATUS_OF_TEXT = {status.text: status for status in Status}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Operation:
    """One unit of background work and how it ended; `owner` scopes who may see it."""

    description: str
    resources: dict[str, list[str]]
    owner: str | None = None
    # The LXD project of the work: its URL carries `?project=` outside the default one,
    # as LXD's own operation URLs do (a JWT names a deployment within the request's
    # project, so a governor following the URL must land in the same project).
    project: str = DEFAULT_PROJECT
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    status: Status = Status.PENDING
    metadata: dict[str, Any] = field(default_factory=dict)
    err: str = ""
    finished_at: float | None = None
    # The process running it (`Core.unit_id`).
    unit: str = ""
    # A running operation that may be cancelled (a refresh): `cancel` sets
    # `cancel_requested`, and the work ends as cancelled at its next step.
    cancellable: bool = False
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _waiters_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # When its metadata was last written to the store, and whether it changed since.
    _saved_at: float = field(default=0.0, repr=False)
    _dirty: bool = field(default=False, repr=False)
    # Held from reading the runner's view to its commit: two threads writing one
    # operation (a member's progress, the batch's end, the syncer) commit in the order
    # they read it, so a late progress write never puts back "Running" over the end.
    _save_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_row(cls, row: OperationRow) -> Operation:
        """What the store says of an operation (one another process may run): a snapshot,
        done when it has ended."""
        operation = cls(description=row.description, resources=row.resources,
                        owner=row.owner, project=row.project, id=row.id,
                        created_at=row.created_at, updated_at=row.updated_at,
                        status=STATUS_OF_TEXT[row.status], metadata=row.metadata, err=row.err,
                        finished_at=row.finished_at, unit=row.unit,
                        cancellable=row.cancellable)
        if row.cancel_requested:
            operation.cancel_requested.set()
        if operation.status.final:
            operation.done.set()
        return operation

    def row(self) -> OperationRow:
        return OperationRow(id=self.id, unit=self.unit, owner=self.owner,
                            project=self.project, description=self.description,
                            resources=self.resources, status=self.status.text,
                            metadata=self.metadata, err=self.err,
                            cancellable=self.cancellable,
                            cancel_requested=self.cancel_requested.is_set(),
                            created_at=self.created_at, updated_at=self.updated_at,
                            finished_at=self.finished_at)

    def mark_done(self) -> None:
        """Wake every waiter, threads and event loops alike."""
        with self._waiters_lock:
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    async def wait_async(self, timeout: float | None) -> None:
        """Wait on the event loop without holding a thread (many callers may wait)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))

        with self._waiters_lock:
            if self.done.is_set():
                return
            self._waiters.append(wake)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(future, None if timeout is None or timeout < 0 else timeout)

    @property
    def may_cancel(self) -> bool:
        return self.status is Status.PENDING or (
            self.status is Status.RUNNING and self.cancellable
            and not self.cancel_requested.is_set())

    def check_cancelled(self) -> None:
        """Raise `Cancelled` when a cancel was asked (call it between steps)."""
        if self.cancel_requested.is_set():
            raise Cancelled()

    @property
    def url(self) -> str:
        return operation_url(self.id, self.project)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "class": "task",
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status.text,
            "status_code": self.status.code,
            "resources": self.resources,
            "metadata": self.metadata,
            "may_cancel": self.may_cancel,
            "err": self.err,
            "location": "none",
        }


# What a work returns when something else ends its operation later (`end`): a launch
# waiting in its lifecycle hook holds no thread.
DEFERRED: dict[str, Any] = {"deferred": True}


class Cancelled(Exception):
    """Raised by a cancellable operation's work when it stops on a cancel."""


Work = Callable[[Operation], dict[str, Any] | None]
Cleanup = Callable[[], None]
Ended = Callable[[Operation], None]
# Told of every operation's creation and every change of its status or metadata, with
# the operation's API object as it was then and the operation (for its owner and
# project): the events stream turns these into LXD's `operation` events.
Listener = Callable[[dict[str, Any], Operation], None]

# Members of bulk operations run at most this many at once (Settings.bulk_concurrency).
DEFAULT_BULK_WORKERS = 3


class Operations:
    """Registry and runner of operations.

    `start` queues the work; its result becomes the operation's metadata, a
    `DeploymentsError` (or any exception) its `err`. `on_cancel` runs when a pending
    operation is cancelled, so a reservation made before queuing is released; `on_end`
    runs once the operation has ended, however it ended (cancelled too).

    Single operations run on a pool of `max_workers` threads; the members of a bulk
    operation (`start(..., bulk=True)`) on a pool of their own, `bulk_workers` threads
    for every batch together: a large batch is bounded, and never queues single launches
    behind its members. A batch itself holds no thread: `begin` registers it running,
    `end` finishes it (when its last member ends).

    The operations this process runs are kept here (their work, hooks and waiters);
    `attach` gives the store every operation is recorded in, under this process's id.
    """

    def __init__(self, max_workers: int = 16, keep_seconds: float = 300.0,
                 bulk_workers: int = DEFAULT_BULK_WORKERS, *, keep_rows: int = KEEP_ROWS,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="operation")
        self._bulk_executor = ThreadPoolExecutor(max_workers=bulk_workers,
                                                 thread_name_prefix="bulk")
        self.bulk_workers = bulk_workers
        self._keep_seconds = keep_seconds
        self._keep_rows = keep_rows
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._operations: dict[str, Operation] = {}
        self._on_cancel: dict[str, Cleanup] = {}
        self._on_end: dict[str, Ended] = {}
        self._listeners: list[Listener] = []
        self._db: Database | None = None
        self.unit_id = ""
        self._pruned_at = 0.0
        # The thread that looks for cancels asked elsewhere and writes throttled progress;
        # it runs only while this process has operations not ended (`_busy` wakes it).
        self._busy = threading.Event()
        self._stopping = threading.Event()
        self._syncer: threading.Thread | None = None

    def attach(self, db: Database, unit_id: str) -> None:
        """Record every operation in `db`, as run by process `unit_id`."""
        self._db = db
        self.unit_id = unit_id

    def listen(self, listener: Listener) -> None:
        """Call `listener` on every change of every operation (it must not block)."""
        self._listeners.append(listener)

    def _changed(self, operation: Operation) -> None:
        """Tell the listeners; a snapshot of the object, so later changes do not leak in."""
        if not self._listeners:
            return
        with self._lock:
            snapshot = operation.to_api()
        for listener in list(self._listeners):
            try:
                listener(snapshot, operation)
            except Exception:
                logger.exception("an operation listener failed")

    # --- the store ----------------------------------------------------------------------

    def _create(self, operation: Operation) -> None:
        """Record a new operation (before anyone can learn its id)."""
        if self._db is None:
            return
        operation._saved_at = time.monotonic()
        with self._db.write() as conn:
            rows.create(conn, operation.row())

    def _save(self, operation: Operation) -> None:
        """Write the runner's view; a store that fails is logged, the work goes on (the
        next write, or the recovery of a process that died, makes the record right)."""
        if self._db is None:
            return
        with operation._save_lock:
            with self._lock:
                operation._dirty = False
                operation._saved_at = time.monotonic()
                values = dict(status=operation.status.text, metadata=operation.metadata,
                              err=operation.err, updated_at=operation.updated_at,
                              finished_at=operation.finished_at)
            try:
                with self._db.write() as conn:
                    rows.save(conn, operation.id, **values)
            except Exception:
                logger.exception("cannot record operation %s in the store", operation.id)

    def _read(self, operation_id: str) -> Operation | None:
        if self._db is None:
            return None
        with self._db.read() as conn:
            row = rows.get(conn, operation_id)
        return None if row is None else Operation.from_row(row)

    def _prune(self) -> None:
        """Forget finished operations older than the keep time, here and in the store."""
        now = time.monotonic()
        cutoff = time.time() - self._keep_seconds
        with self._lock:
            for op_id in [i for i, op in self._operations.items()
                          if op.finished_at is not None and op.finished_at < cutoff]:
                del self._operations[op_id]
            if now - self._pruned_at < PRUNE_INTERVAL and self._pruned_at:
                return
            self._pruned_at = now
        if self._db is None:
            return
        try:
            with self._db.write() as conn:
                rows.prune(conn, cutoff, self._keep_rows)
        except Exception:
            logger.exception("cannot prune the finished operations")

    # --- the runner ---------------------------------------------------------------------

    def _register(self, operation: Operation, on_cancel: Cleanup | None,
                  on_end: Ended | None) -> None:
        self._prune()
        operation.unit = self.unit_id
        self._create(operation)
        with self._lock:
            self._operations[operation.id] = operation
            if on_cancel is not None:
                self._on_cancel[operation.id] = on_cancel
            if on_end is not None:
                self._on_end[operation.id] = on_end
        self._wake_syncer()

    def start(self, description: str, resources: dict[str, list[str]], work: Work,
              *, owner: str | None = None, on_cancel: Cleanup | None = None,
              on_end: Ended | None = None, bulk: bool = False,
              project: str = DEFAULT_PROJECT, cancellable: bool = False) -> Operation:
        operation = Operation(description=description, resources=resources, owner=owner,
                              project=project, cancellable=cancellable)
        self._register(operation, on_cancel, on_end)
        self._changed(operation)  # before the work can change it: events come in order
        try:
            (self._bulk_executor if bulk else self._executor).submit(self._run, operation,
                                                                     work)
        except RuntimeError:  # shut down: the operation never ran
            with self._lock:
                self._on_cancel.pop(operation.id, None)
                self._on_end.pop(operation.id, None)
            self._finish(operation, Status.FAILURE, err="The service is stopping")
            raise
        return operation

    def begin(self, description: str, resources: dict[str, list[str]], *,
              owner: str | None = None, metadata: dict[str, Any] | None = None,
              project: str = DEFAULT_PROJECT, on_end: Ended | None = None) -> Operation:
        """Register an operation that is running until `end` is called (a batch, whose
        work is done by other operations), or until the work `resume` gives it ends (a
        removal waiting in a lifecycle hook holds no thread)."""
        operation = Operation(description=description, resources=resources, owner=owner,
                              status=Status.RUNNING, metadata=dict(metadata or {}),
                              project=project)
        self._register(operation, None, on_end)
        self._changed(operation)
        return operation

    def resume(self, operation: Operation, work: Work, *, bulk: bool = False) -> None:
        """Run `work` on the pool for an operation made by `begin`; it ends with it."""
        (self._bulk_executor if bulk else self._executor).submit(self._work, operation, work)

    def end(self, operation: Operation, *, err: str = "",
            metadata: dict[str, Any] | None = None) -> None:
        """Finish an operation made by `begin`: a failure when `err` is given."""
        self._finish(operation, Status.FAILURE if err else Status.SUCCESS, err=err,
                     metadata=metadata)

    def _run(self, operation: Operation, work: Work) -> None:
        with self._lock:
            if operation.status is not Status.PENDING:
                return  # cancelled while queued
        if not self._claim(operation):
            self._cancel_pending(operation)  # asked by another process just before
            return
        with self._lock:
            if operation.status is not Status.PENDING:
                return
            operation.status = Status.RUNNING
            self._on_cancel.pop(operation.id, None)
        self._changed(operation)
        self._work(operation, work)

    def _claim(self, operation: Operation) -> bool:
        """Mark it running in the store unless a cancel was asked there first."""
        operation.updated_at = _now()
        if self._db is None:
            return True
        try:
            with self._db.write() as conn:
                return rows.set_running(conn, operation.id, operation.updated_at)
        except Exception:
            logger.exception("cannot record operation %s in the store", operation.id)
            return True

    def _work(self, operation: Operation, work: Work) -> None:
        try:
            result = work(operation)
        except Cancelled:
            self._finish(operation, Status.CANCELLED, err="Operation cancelled")
        except DeploymentsError as err:
            self._finish(operation, Status.FAILURE, err=str(err))
        except Exception as err:  # a bug: keep the operation honest, log the trace
            logger.exception("operation %s (%s) failed", operation.id, operation.description)
            self._finish(operation, Status.FAILURE, err=f"Internal error: {err}")
        else:
            if result is DEFERRED:
                return
            self._finish(operation, Status.SUCCESS, metadata=result)

    def _finish(self, operation: Operation, status: Status, *, err: str = "",
                metadata: dict[str, Any] | None = None) -> None:
        with self._lock:
            operation.status = status
            operation.err = err
            if metadata:
                # A new dict, never changed in place: readers may be serialising the old.
                operation.metadata = {**operation.metadata, **metadata}
            operation.updated_at = _now()
            operation.finished_at = time.time()
            ended = self._on_end.pop(operation.id, None)
        self._save(operation)
        self._ended(operation, ended)
        self._changed(operation)
        operation.mark_done()

    @staticmethod
    def _ended(operation: Operation, ended: Ended | None) -> None:
        if ended is None:
            return
        try:
            ended(operation)
        except Exception:
            logger.exception("the end hook of operation %s failed", operation.id)

    def set_metadata(self, operation: Operation, metadata: dict[str, Any]) -> None:
        """Replace an operation's metadata while it runs (progress of a batch); the
        store gets it at most every `METADATA_INTERVAL` seconds (the syncer writes what
        is left behind)."""
        with self._lock:
            operation.metadata = metadata
            operation.updated_at = _now()
            due = time.monotonic() - operation._saved_at >= METADATA_INTERVAL
            operation._dirty = not due
        if due:
            self._save(operation)
        self._changed(operation)

    # --- readers (any process's operations) ---------------------------------------------

    def _local(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._operations.get(operation_id)

    def get(self, operation_id: str, owner: str | None = None) -> Operation:
        """The operation; a caller scoped to `owner` sees only its own (others: not found).
        One this process runs is its live object; any other, what the store says now."""
        operation = self._local(operation_id) or self._read(operation_id)
        if operation is None or (owner is not None and operation.owner != owner):
            raise NotFound("Operation not found")
        return operation

    def list(self, owner: str | None = None) -> list[Operation]:
        """Every process's operations (this one's as they are here, the freshest)."""
        self._prune()
        with self._lock:
            local = dict(self._operations)
        if self._db is None:
            operations = list(local.values())
        else:
            with self._db.read() as conn:
                stored = rows.list_all(conn)
            operations = [local.get(row.id) or Operation.from_row(row) for row in stored]
        return [op for op in operations if owner is None or op.owner == owner]

    def wait(self, operation_id: str, timeout: float | None,
             owner: str | None = None) -> Operation:
        """Block until the operation ends or `timeout` seconds pass (-1 or None: no limit)."""
        operation = self.get(operation_id, owner)
        limit = None if timeout is None or timeout < 0 else timeout
        if self._local(operation_id) is operation:
            operation.done.wait(limit)
            return operation
        deadline = None if limit is None else time.monotonic() + limit
        while not operation.done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
            operation = self._read(operation_id) or operation
        return operation

    async def wait_async(self, operation_id: str, timeout: float | None,
                         owner: str | None = None) -> Operation:
        """`wait` on the event loop, holding no thread: a local operation wakes its
        waiters; one another process runs is polled in the store every `poll_interval`."""
        operation = await asyncio.to_thread(self.get, operation_id, owner)
        limit = None if timeout is None or timeout < 0 else timeout
        if self._local(operation_id) is operation:
            await operation.wait_async(limit)
            return operation
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        while not operation.done.is_set():
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            await asyncio.sleep(self.poll_interval if left is None
                                else min(self.poll_interval, left))
            operation = await asyncio.to_thread(self._read, operation_id) or operation
        return operation

    # --- cancels ------------------------------------------------------------------------

    def cancel(self, operation_id: str, owner: str | None = None) -> Operation:
        """Cancel a pending operation; one that has started cannot be (as in LXD), but a
        cancellable one is asked to stop at its next step."""
        operation = self.get(operation_id, owner)
        if self._local(operation_id) is not operation:
            return self._cancel_remote(operation)
        with self._lock:
            if operation.status is Status.RUNNING and operation.cancellable:
                operation.cancel_requested.set()
                operation.updated_at = _now()
                return operation
            if operation.status is not Status.PENDING:
                raise Conflict("This operation can't be cancelled: it has started")
        self._cancel_pending(operation)
        return operation

    def _cancel_pending(self, operation: Operation) -> None:
        """End a pending operation of this process as cancelled, releasing what it held."""
        with self._lock:
            if operation.status is not Status.PENDING:
                return
            operation.status = Status.CANCELLED
            operation.err = "Operation cancelled"
            operation.updated_at = _now()
            operation.finished_at = time.time()
            cleanup = self._on_cancel.pop(operation.id, None)
            ended = self._on_end.pop(operation.id, None)
        self._save(operation)
        if cleanup is not None:
            try:
                cleanup()
            except Exception:
                logger.exception("the cancel hook of operation %s failed", operation.id)
        self._ended(operation, ended)
        self._changed(operation)
        operation.mark_done()

    def _cancel_remote(self, operation: Operation) -> Operation:
        """Flag another process's operation; its runner honours the flag within
        `poll_interval`. A pending one is waited on (up to `REMOTE_CANCEL_WAIT`) so that
        the caller sees it cancelled, as it would here."""
        assert self._db is not None
        with self._db.write() as conn:
            flagged = rows.request_cancel(conn, operation.id)
        if not flagged:
            current = self._read(operation.id) or operation
            if current.cancel_requested.is_set() and not current.status.final:
                return current  # asked already
            raise Conflict("This operation can't be cancelled: it has started")
        if operation.status is Status.PENDING:
            return self.wait(operation.id, REMOTE_CANCEL_WAIT)
        return self._read(operation.id) or operation

    # --- the syncer: cancels asked elsewhere, progress left to write --------------------

    def _wake_syncer(self) -> None:
        if self._db is None:
            return
        with self._lock:
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._sync_loop,
                                                name="operations-sync", daemon=True)
                self._syncer.start()
        self._busy.set()

    def _sync_loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            self._busy.wait()
            if self._stopping.is_set():
                return
            try:
                if not self.sync():
                    self._busy.clear()
                    if self._unfinished():  # registered in between: look again
                        self._busy.set()
                failing = False
            except Exception:
                if not failing:
                    logger.exception("cannot look for cancels of operations in the store")
                failing = True
            self._stopping.wait(self.poll_interval)

    def _unfinished(self) -> list[Operation]:
        with self._lock:
            return [op for op in self._operations.values() if not op.done.is_set()]

    def sync(self) -> bool:
        """One look: honour the cancels asked of this process's operations, write the
        progress not written yet. True while it has operations not ended."""
        unfinished = self._unfinished()
        if not unfinished or self._db is None:
            return bool(unfinished)
        with self._db.read() as conn:
            asked = set(rows.cancel_requests(conn, self.unit_id,
                                             [op.id for op in unfinished]))
        for operation in unfinished:
            if operation.id in asked:
                if operation.status is Status.PENDING:
                    self._cancel_pending(operation)
                else:
                    operation.cancel_requested.set()
            elif operation._dirty and \
                    time.monotonic() - operation._saved_at >= METADATA_INTERVAL:
                self._save(operation)
        return True

    def shutdown(self) -> None:
        self._stopping.set()
        self._busy.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._bulk_executor.shutdown(wait=False, cancel_futures=True)
