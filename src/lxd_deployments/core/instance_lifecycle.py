"""A governor's hold on one instance's lifecycle: its hook answers and its protection.

`GET .../instances/{i}/lifecycle` shows the record's status, template revision,
protection and hook; `POST` answers the hook (`continue`, `abandon`, `heartbeat`);
`PUT .../instances/{i}/protection` sets or lifts scale-in protection.
"""

from __future__ import annotations

from typing import Any

from ..errors import Forbidden, NotFound
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


def answer(core: Core, target: Target, name: str, action: str, *,
           by_instance: ReadyToken | None = None) -> dict[str, Any]:
    """Record the governor's answer (or, `by_instance`, the instance's own `continue`
    with its readiness token, which is used up in the same transaction: a refused
    answer, such as a 409 before the hook began, leaves the token for a retry); the
    timer (or this process's waiting removal) acts on it at once."""
    with core.db.write() as conn:
        record = _record(conn, target, name)
        if by_instance is not None:
            _check_self(conn, record, by_instance, action)
        done = lifecycle.answer(conn, record, repo.shape_config(conn, target.shape.id), action)
        if by_instance is not None and not records.use_ready_token(
                conn, record.id, by_instance[1]):
            raise Forbidden("Not authorized: this readiness token was used already")
    core.hooks.kick()
    return done


# (record id, token digest) of the readiness token an answer came with.
ReadyToken = tuple[int, str]


def _check_self(conn, record: InstanceRow, instance: ReadyToken, action: str) -> None:
    """What an instance may answer by its token: its own launching hook, `continue`."""
    if record.id != instance[0]:
        raise Forbidden("Not authorized: a readiness token only answers its own "
                        "instance's launching hook")
    if action != lifecycle.CONTINUE:
        raise Forbidden(f'Not authorized: an instance says only "{lifecycle.CONTINUE}" '
                        f'with its readiness token, not "{action}" (that is the '
                        "governor's to say)")
    if record.status != records.LAUNCHING and record.status != records.PENDING:
        raise Forbidden(f'Not authorized: instance "{record.instance_name}" is not '
                        "launching")


def set_protection(core: Core, target: Target, name: str, protected: bool) -> dict[str, Any]:
    with core.db.write() as conn:
        record = _record(conn, target, name)
        records.set_protected(conn, record.id, protected)
    return {"protected": protected}
