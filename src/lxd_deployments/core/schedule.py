"""A pet's weekly busy windows, in a readable form, and where a moment falls in them.

The form (our own small parser; `zoneinfo` for the timezone, no cron library is
installed): one or more windows separated by `;`, then an optional IANA timezone (UTC
when left out), e.g. `Mon-Fri 08:00-18:00 Europe/London` or
`Sat,Sun 00:00-24:00; Wed 22:00-02:00 UTC`. A window is days then `HH:MM-HH:MM`; days
are `Mon`..`Sun`, ranges (`Fri-Mon` wraps over the week end), lists with `,`, or
`daily`. An end at or before the start crosses midnight (it ends the next day, so
`Sun 22:00-02:00` ends on Monday: the week wraps). `24:00` is the end of the day.

Wall times are the timezone's: `08:00 Europe/London` is 07:00 UTC in summer and 08:00
in winter. A wall time that does not exist (the hour skipped when clocks go forward) is
taken with the offset before the change; one that happens twice (clocks go back) is the
first. Overlapping or touching windows merge into one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import InvalidInput
from .clock import aware

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SCHEDULE = 1024
MAX_WINDOWS = 32
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_WINDOW = re.compile(r"\s*(\S+)\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time | None  # None: 24:00
    crosses_midnight: bool


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...]
    timezone: ZoneInfo
    text: str

    def busy_intervals(self, around: datetime, days_before: int = 8,
                       days_after: int = 16) -> list[tuple[datetime, datetime]]:
        """The busy intervals (UTC, merged) that touch the days around `around`."""
        local = aware(around).astimezone(self.timezone).date()
        spans = []
        for offset in range(-days_before, days_after + 1):
            day = local + timedelta(days=offset)
            for window in self.windows:
                if day.weekday() in window.days:
                    spans.append(self._span(day, window))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def _span(self, day: date, window: Window) -> tuple[datetime, datetime]:
        start = self._utc(day, window.start)
        end_day = day + timedelta(days=1) if window.crosses_midnight or window.end is None \
            else day
        end = self._utc(end_day, window.end or time(0))
        return start, end

    def _utc(self, day: date, at: time) -> datetime:
        return aware(datetime.combine(day, at, tzinfo=self.timezone))

    def current_or_next(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The busy interval `now` is in, else the next one (None: the schedule never
        makes the pet busy)."""
        now = aware(now)
        for start, end in _intervals_around(self, now.astimezone(self.timezone).date()):
            if end > now:
                return start, end
        return None


@lru_cache(maxsize=512)
def _intervals_around(schedule: Schedule, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """The merged intervals around a local day (the same for every moment of that day),
    kept: placement asks for every launch."""
    return tuple(schedule.busy_intervals(datetime.combine(day, time(12), tzinfo=schedule.timezone)))


def _time(text: str, *, end: bool) -> time | None:
    match = _TIME.fullmatch(text)
    if not match:
        raise InvalidInput(f'Bad time "{text}" in schedule: use HH:MM')
    hour, minute = int(match.group(1)), int(match.group(2))
    if end and hour == 24 and minute == 0:
        return None
    if hour > 23 or minute > 59:
        raise InvalidInput(f'Bad time "{text}" in schedule')
    return time(hour, minute)


def _day(text: str) -> int:
    key = text.strip().lower()[:3]
    if key not in DAYS or text.strip().lower() not in (key, _FULL[key]):
        raise InvalidInput(f'Bad day "{text}" in schedule: use Mon..Sun')
    return DAYS.index(key)


_FULL = {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
         "fri": "friday", "sat": "saturday", "sun": "sunday"}


def _days(text: str) -> frozenset[int]:
    if text.lower() in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not dash:
            days.add(_day(first))
            continue
        a, b = _day(first), _day(last)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # Fri-Mon wraps
    return frozenset(days)


def parse(text: str) -> Schedule:
    """The schedule in `text`, or `InvalidInput` saying what is wrong."""
    if len(text) > MAX_SCHEDULE:
        raise InvalidInput(f"schedule is longer than {MAX_SCHEDULE} characters")
    body = text.strip()
    if not body:
        raise InvalidInput("schedule is empty: give at least one window, e.g. "
                           '"Mon-Fri 08:00-18:00 Europe/London"')
    zone_name = "UTC"
    last = body.rsplit(None, 1)
    if len(last) == 2 and last[1][0].isalpha() and ":" not in last[1]:
        zone_name, body = last[1], last[0]
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f'Unknown timezone "{zone_name}" in schedule') from None
    parts = [p for p in body.split(";") if p.strip()]
    if len(parts) > MAX_WINDOWS:
        raise InvalidInput(f"schedule has more than {MAX_WINDOWS} windows")
    windows = []
    for part in parts:
        match = _WINDOW.fullmatch(part)
        if not match:
            raise InvalidInput(f'Bad window "{part.strip()}" in schedule: use e.g. '
                               '"Mon-Fri 08:00-18:00"')
        start = _time(match.group(2), end=False)
        assert start is not None
        end = _time(match.group(3), end=True)
        crosses = end is not None and end <= start
        windows.append(Window(_days(match.group(1)), start, end, crosses))
    return Schedule(tuple(windows), zone, text)
