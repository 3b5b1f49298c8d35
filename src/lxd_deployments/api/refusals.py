"""The budget of refused requests each caller has: a token bucket per certificate.

A caller that keeps asking for changes that are refused (an `ro` key launching, a bad
name, a bound reached) spends its budget, `burst` refusals at most, refilled at `rate`
a second. Once it is spent, the caller's changes are answered 429 at once (nothing is
run, and only the first of them is recorded in the audit log) until the budget has one
refusal again: one caller can neither fill the store with audit rows nor keep the
store's write lock busy. Of its 429s, one a minute at most is recorded
(`RECORD_429_EVERY`). Accepted requests cost nothing.

The budget is kept in the store (`StoredRefusalBudget`), shared by every process of
the service: a caller whose requests reach several workers or units has one budget.

An instance (its readiness token, `auth/instance_token.py`) has a bucket of its own
for its refused requests. Refused tokens (forged, used, shown on another route) are
counted apart, by the authentication middleware in a budget of its own keyed by the
record they name: a flood of forged tokens never spends the rightful instance's bucket.

The unix socket's admins have no budget (`budget_key` is None for them): whoever may
connect there may do anything anyway. Everything else is counted per certificate
fingerprint, all its keys (and its mTLS and JWT requests) together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..auth.caller import METHOD_UNIX, Caller
from ..store import Database
from ..store import refusal_budgets as rows

# Seconds between two recorded 429s of one caller.
RECORD_429_EVERY = 60.0
# Callers followed at most; full (idle) buckets go first past it, then the oldest.
MAX_CALLERS = rows.MAX_CALLERS


def budget_key(caller: Caller) -> str | None:
    if caller.instance is not None:
        # An instance's readiness token: its own bucket, the one its refused tokens
        # spend too (`auth/instance_token.budget_key`).
        return f"instance:{caller.instance.record_id}"
    if caller.method == METHOD_UNIX or not caller.fingerprint:
        return None
    return caller.fingerprint


@dataclass
class _Bucket:
    tokens: float
    updated: float
    recorded_429: float | None = None  # when a 429 of this caller was last recorded


def _refill(bucket: _Bucket, now: float, rate: float, burst: int) -> None:
    bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
    bucket.updated = now


def _verdict(bucket: _Bucket, rate: float) -> tuple[float, bool]:
    """(seconds until the caller may be refused again, whether this 429 is to be
    recorded); (0, False) when it has budget left. Notes a recorded 429."""
    if bucket.tokens >= 1.0:
        return 0.0, False
    record = bucket.recorded_429 is None or \
        bucket.updated - bucket.recorded_429 >= RECORD_429_EVERY
    if record:
        bucket.recorded_429 = bucket.updated
    return (1.0 - bucket.tokens) / rate, record


class RefusalBudget:
    """In memory, for one process. Not thread-safe on purpose: the ASGI middleware runs
    it on the event loop."""

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_CALLERS:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            _refill(bucket, now, self.rate, self.burst)
        return bucket

    def _evict(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full or sorted(self._buckets, key=lambda k: self._buckets[k].updated)[
                :max(1, len(self._buckets) // 10)]:
            del self._buckets[key]

    def check(self, key: str) -> tuple[float, bool]:
        """(seconds until the caller may be refused again, whether this 429 is to be
        recorded); (0, False) when it has budget left."""
        return _verdict(self._bucket(key), self.rate)

    def spend(self, key: str) -> None:
        """One refusal."""
        bucket = self._bucket(key)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)


class StoredRefusalBudget:
    """The same budget in the store (`store/refusal_budgets.py`), shared by every process
    of the service, so that workers and units do not each give a caller a budget of its
    own. Wall-clock times (shared by processes). Blocking: call it on a thread; `spend`
    joins the caller's transaction (the audit row's)."""

    def __init__(self, db: Database, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.rate = rate
        self.burst = burst
        self._clock = clock

    def _load(self, conn, key: str, now: float) -> _Bucket:
        found = rows.load(conn, key)
        if found is None:
            return _Bucket(float(self.burst), now)
        bucket = _Bucket(*found)
        _refill(bucket, now, self.rate, self.burst)
        return bucket

    def check(self, key: str) -> tuple[float, bool]:
        """As `RefusalBudget.check`: a read, and a write only to note a recorded 429."""
        now = self._clock()
        with self.db.read() as conn:
            bucket = self._load(conn, key, now)
        if bucket.tokens >= 1.0:
            return 0.0, False
        with self.db.write() as conn:
            bucket = self._load(conn, key, now)
            wait, record = _verdict(bucket, self.rate)
            if record:
                rows.save(conn, key, bucket.tokens, bucket.updated, bucket.recorded_429,
                          rate=self.rate, burst=self.burst)
        return wait, record

    def spend(self, conn, key: str) -> None:
        """One refusal, in the write transaction `conn`."""
        bucket = self._load(conn, key, self._clock())
        rows.save(conn, key, max(0.0, bucket.tokens - 1.0), bucket.updated,
                  bucket.recorded_429, rate=self.rate, burst=self.burst)
