"""The real service with its launches' bound check timed, for bench/bound_check.py.

    python bench/_timed_service.py daemon --config FILE     (instead of -m lxd_deployments)

Run exactly as `python -m lxd_deployments daemon`, with two wrappers put in first:

- every write transaction of the store (`Database.write`) is timed from before it asks
  for SQLite's write lock (on PostgreSQL: for a pooled connection) to after its commit;
  a transaction in which the launch's bound is read (`store.instances.bound`) is written
  out as `bound_txn`: its wall time (waiting for the lock behind other writers included:
  that is what the invariant costs a launch), the part spent getting the lock (WAIT),
  and the CPU time of its thread (CPU: the work itself; the rest is time the thread was
  runnable but another had the GIL or a core); every other write transaction (the audit
  log's, the operations' settling their records, events...) likewise as `other_txn`, to
  see who else holds the lock;
- the synchronous part of a launch (`core.instances.launch`: the request's checks, the
  bound transaction, the operation's creation) is written out as `launch_sync`.

One line per measure, `KIND SECONDS OUTCOME WAIT CPU START` (START: the service's
`perf_counter` when it began, to compute rates), appended to the file named by
`$LXDD_BENCH_TIMINGS`. The wrappers cost a microsecond or two. The package comes from
`$PYTHONPATH` (the benchmarks put this checkout's `src` there).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from lxd_deployments.cli.main import main
from lxd_deployments.core import instances as core_instances
from lxd_deployments.store import instances as records
from lxd_deployments.store.database import Database

_out = open(os.environ["LXDD_BENCH_TIMINGS"], "a", buffering=1)  # noqa: SIM115
_out_lock = threading.Lock()
_local = threading.local()


def _record(kind: str, seconds: float, outcome: str, wait: float = 0.0,
            cpu: float = 0.0, start: float = 0.0) -> None:
    with _out_lock:
        _out.write(f"{kind} {seconds:.9f} {outcome} {wait:.9f} {cpu:.9f} {start:.9f}\n")


_write = Database.write.__wrapped__  # the generator under @contextmanager


@contextmanager
def _timed_write(self: Database):
    start = time.perf_counter()
    cpu_start = time.thread_time()
    locked = start
    _local.bound = False
    outcome = "committed"
    try:
        with contextmanager(_write)(self) as conn:
            locked = time.perf_counter()
            yield conn
    except BaseException as err:
        outcome = type(err).__name__
        raise
    finally:
        _record("bound_txn" if getattr(_local, "bound", False) else "other_txn",
                time.perf_counter() - start, outcome, locked - start,
                time.thread_time() - cpu_start, start)
        _local.bound = False


_bound = records.bound


def _flagged_bound(*args, **kwargs):
    _local.bound = True
    return _bound(*args, **kwargs)


_launch = core_instances.launch


def _timed_launch(*args, **kwargs):
    start = time.perf_counter()
    outcome = "accepted"
    try:
        return _launch(*args, **kwargs)
    except BaseException as err:
        outcome = type(err).__name__
        raise
    finally:
        _record("launch_sync", time.perf_counter() - start, outcome)


Database.write = _timed_write
records.bound = _flagged_bound
core_instances.launch = _timed_launch

if __name__ == "__main__":
    raise SystemExit(main())
