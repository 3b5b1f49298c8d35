"""Background operations as LXD has them: long work answers 202 at once with an operation
that callers poll, wait on, or cancel while it has not started.

The work runs on a bounded thread pool because the LXD adapter (pylxd) is synchronous.
Finished operations are kept for a while so a caller can still read how they ended.
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
from typing import Any

from ..errors import Conflict, DeploymentsError, NotFound
from .urls import DEFAULT_PROJECT, operation_url

logger = logging.getLogger(__name__)


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
    # A running operation that may be cancelled (a refresh): `cancel` sets
    # `cancel_requested`, and the work ends as cancelled at its next step.
    cancellable: bool = False
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _waiters_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
    """

    def __init__(self, max_workers: int = 16, keep_seconds: float = 300.0,
                 bulk_workers: int = DEFAULT_BULK_WORKERS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="operation")
        self._bulk_executor = ThreadPoolExecutor(max_workers=bulk_workers,
                                                 thread_name_prefix="bulk")
        self.bulk_workers = bulk_workers
        self._keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._operations: dict[str, Operation] = {}
        self._on_cancel: dict[str, Cleanup] = {}
        self._on_end: dict[str, Ended] = {}
        self._listeners: list[Listener] = []

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

    def start(self, description: str, resources: dict[str, list[str]], work: Work,
              *, owner: str | None = None, on_cancel: Cleanup | None = None,
              on_end: Ended | None = None, bulk: bool = False,
              project: str = DEFAULT_PROJECT, cancellable: bool = False) -> Operation:
        operation = Operation(description=description, resources=resources, owner=owner,
                              project=project, cancellable=cancellable)
        with self._lock:
            self._forget_old()
            self._operations[operation.id] = operation
            if on_cancel is not None:
                self._on_cancel[operation.id] = on_cancel
            if on_end is not None:
                self._on_end[operation.id] = on_end
        self._changed(operation)  # before the work can change it: events come in order
        try:
            (self._bulk_executor if bulk else self._executor).submit(self._run, operation,
                                                                     work)
        except RuntimeError:  # shut down: the operation never existed
            with self._lock:
                self._operations.pop(operation.id, None)
                self._on_cancel.pop(operation.id, None)
                self._on_end.pop(operation.id, None)
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
        with self._lock:
            self._forget_old()
            self._operations[operation.id] = operation
            if on_end is not None:
                self._on_end[operation.id] = on_end
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
            operation.status = Status.RUNNING
            operation.updated_at = _now()
            self._on_cancel.pop(operation.id, None)
        self._changed(operation)
        self._work(operation, work)

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
            operation.finished_at = time.monotonic()
            ended = self._on_end.pop(operation.id, None)
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
        """Replace an operation's metadata while it runs (progress of a batch)."""
        with self._lock:
            operation.metadata = metadata
            operation.updated_at = _now()
        self._changed(operation)

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self._keep_seconds
        for op_id in [i for i, op in self._operations.items()
                      if op.finished_at is not None and op.finished_at < cutoff]:
            del self._operations[op_id]

    def get(self, operation_id: str, owner: str | None = None) -> Operation:
        """The operation; a caller scoped to `owner` sees only its own (others: not found)."""
        with self._lock:
            operation = self._operations.get(operation_id)
        if operation is None or (owner is not None and operation.owner != owner):
            raise NotFound("Operation not found")
        return operation

    def list(self, owner: str | None = None) -> list[Operation]:
        with self._lock:
            self._forget_old()
            operations = list(self._operations.values())
        return [op for op in operations if owner is None or op.owner == owner]

    def wait(self, operation_id: str, timeout: float | None,
             owner: str | None = None) -> Operation:
        """Block until the operation ends or `timeout` seconds pass (-1 or None: no limit)."""
        operation = self.get(operation_id, owner)
        operation.done.wait(None if timeout is None or timeout < 0 else timeout)
        return operation

    def cancel(self, operation_id: str, owner: str | None = None) -> Operation:
        """Cancel a pending operation; one that has started cannot be (as in LXD)."""
        operation = self.get(operation_id, owner)
        with self._lock:
            if operation.status is Status.RUNNING and operation.cancellable:
                operation.cancel_requested.set()
                operation.updated_at = _now()
                return operation
            if operation.status is not Status.PENDING:
                raise Conflict("This operation can't be cancelled: it has started")
            operation.status = Status.CANCELLED
            operation.err = "Operation cancelled"
            operation.updated_at = _now()
            operation.finished_at = time.monotonic()
            cleanup = self._on_cancel.pop(operation.id, None)
            ended = self._on_end.pop(operation.id, None)
        if cleanup is not None:
            cleanup()
        self._ended(operation, ended)
        self._changed(operation)
        operation.mark_done()
        return operation

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._bulk_executor.shutdown(wait=False, cancel_futures=True)
