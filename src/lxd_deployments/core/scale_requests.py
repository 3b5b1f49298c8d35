"""Scale requests: the platform asks a governor for a number of instances of a shape.

Three causes: an admin asks (`POST .../shapes/{s}/scale-requests`, cause `admin`), the
shape is below its `scaling_minimum` (cause `below-minimum`, e.g. after an instance was
deleted behind the service's back), or the host is under memory pressure (cause
`capacity-pressure`). The service never scales by itself on a request: the governor
decides, and its launches and deletes stay within the bounds as always.

Event metadata: `shape`, `count` (the wanted number of instances), `current`, `minimum`,
`maximum`, `cause`, `reason` (words for a human), `shape_url`.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import Conflict, InvalidInput
from ..store import instances as records
from ..store.rows import ShapeRow
from . import events as ev
from .context import Core
from .deployments import require_deployment
from .shapes import require_shape
from .urls import shape_url

CAUSE_ADMIN = "admin"
CAUSE_BELOW_MINIMUM = "below-minimum"
CAUSE_CAPACITY_PRESSURE = "capacity-pressure"
MAX_REASON = 1024


def scale_request(project: str, deployment: str, shape: ShapeRow, *, count: int,
                  current: int, cause: str, reason: str, **extra: Any) -> ev.ScaleRequest:
    """The payload; `extra` are its optional fields (a pet's reclaim)."""
    return ev.ScaleRequest(shape=shape.name, count=count, current=current,
                           minimum=shape.scaling_minimum, maximum=shape.scaling_maximum,
                           cause=cause, reason=reason,
                           shape_url=shape_url(project, deployment, shape.name), **extra)


def current_count(conn, shape_id: int) -> int:
    """Instances that count for the governor: every record not on its way out."""
    return records.count(conn, shape_id, leaving_out=[records.DELETING])


def request_scale(core: Core, project: str, deployment: str, shape: str, count: int,
                  reason: str) -> dict[str, Any]:
    """An admin's scale request: published to the governor; returns the event."""
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"reason is longer than {MAX_REASON} characters")
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        s = require_shape(conn, d.id, shape)
        current = current_count(conn, s.id)
    if not s.scaling_minimum <= count <= s.scaling_maximum:
        raise InvalidInput(f"count ({count}) must be within the shape's bounds "
                           f"({s.scaling_minimum}..{s.scaling_maximum})")
    if core.events is None:
        raise Conflict("Events are not enabled in this service")
    event = core.events.publish(d.id, scale_request(
        project, d.name, s, count=count, current=current, cause=CAUSE_ADMIN,
        reason=reason or "asked by an admin"))
    if event is None:
        raise Conflict("The deployment was deleted meanwhile")
    return event.to_api()


class Debounce:
    """Remembers the last request of one cause per shape, so a lasting condition (a
    shape below its minimum, a host under pressure) is asked about once per new value,
    not on every check. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[Any, Any] = {}

    def should_send(self, key: Any, value: Any) -> bool:
        with self._lock:
            if self._sent.get(key) == value:
                return False
            self._sent[key] = value
            return True

    def record(self, key: Any, value: Any) -> None:
        with self._lock:
            self._sent[key] = value

    def clear(self, key: Any) -> None:
        with self._lock:
            self._sent.pop(key, None)

    def sent(self) -> list[Any]:
        with self._lock:
            return list(self._sent)


def below_minimum(debounce: Debounce, shape: ShapeRow, current: int, *,
                  news: bool = False) -> bool:
    """Whether to ask for the shape's minimum now: it is below it and was not asked at
    this count yet, or `news` (an instance just went: always worth telling). A shape
    back at its minimum is forgotten."""
    if current >= shape.scaling_minimum:
        debounce.clear(shape.id)
        return False
    if news:
        debounce.record(shape.id, current)
        return True
    return debounce.should_send(shape.id, current)


def below_minimum_reason(shape: ShapeRow, current: int) -> str:
    return (f'shape "{shape.name}" has {current} instance(s), below its scaling_minimum '
            f"({shape.scaling_minimum})")
