"""The one clock the schedule-driven parts read (pets: notice, reclaim, offers' `until`).

Everything that decides by wall time takes a `Clock` rather than calling `datetime.now`,
so that tests drive a schedule without sleeping: unit tests use `ManualClock`, the
daemon `SystemClock`. `FileClock` is a testing aid for the real service (config key
`clock.file`): it reads the current time from a file the test writes, so an integration
test moves the service's time forward without waiting a week. Intervals between checks
still run on the monotonic clock; only "what time is it" goes through here.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

# A clock file larger than this is not read (a time stamp is a few dozen bytes).
MAX_CLOCK_FILE = 256


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (tests)."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = aware(start)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = aware(when)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


class FileClock:
    """The time written in a file (ISO 8601, with an offset or UTC), read on each call;
    the real time when the file is missing, empty or unreadable (a testing aid)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def now(self) -> datetime:
        try:
            with self.path.open("rb") as f:
                text = f.read(MAX_CLOCK_FILE + 1)
            if len(text) > MAX_CLOCK_FILE:
                raise ValueError("clock file too large")
            return aware(datetime.fromisoformat(text.decode().strip()))
        except (OSError, ValueError, UnicodeDecodeError):
            return datetime.now(UTC)


def aware(when: datetime) -> datetime:
    """`when` in UTC; a naive time is taken as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def iso(when: datetime) -> str:
    """The API's form of a time: UTC, seconds, `Z`."""
    return aware(when).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["Clock", "FileClock", "ManualClock", "SystemClock", "aware", "iso", "timedelta"]
