"""A governor's hold on one instance's lifecycle: its hook answers and its protection.

`GET .../instances/{i}/lifecycle` shows the record's status, template revision,
protection and hook; `POST` answers the hook (`continue`, `abandon`, `heartbeat`);
`PUT .../instances/{i}/protection` sets or lifts scale-in protection.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..store import instances as records
from ..store import repository as repo
from ..store.rows import InstanceRow
from . import lifecycle
from .context import Core
from .target import Target


def _record(conn, target: Target, name: str) -> InstanceRow:
    row = records.get(conn, target.shape.id, name)
    if row is None:
        raise NotFound("Instance not found")
    return row


def show(core: Core, target: Target, name: str) -> dict[str, Any]:
    with core.db.read() as conn:
        record = _record(conn, target, name)
        current = repo.get_shape(conn, target.deployment.id, target.shape.name,
                                 details=False)
    shown = lifecycle.describe(record)
    if current is not None:
        shown["outdated"] = record.revision < current.template_revision
    return shown


def answer(core: Core, target: Target, name: str, action: str) -> dict[str, Any]:
    """Record the governor's answer; the timer (or this process's waiting removal)
    acts on it at once."""
    with core.db.write() as conn:
        record = _record(conn, target, name)
        done = lifecycle.answer(conn, record, repo.shape_config(conn, target.shape.id), action)
    core.hooks.kick()
    return done


def set_protection(core: Core, target: Target, name: str, protected: bool) -> dict[str, Any]:
    with core.db.write() as conn:
        record = _record(conn, target, name)
        records.set_protected(conn, record.id, protected)
    return {"protected": protected}
