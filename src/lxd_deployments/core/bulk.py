"""Bulk scaling: launch many instances of a shape in one call, or set its count.

A batch is checked and reserved whole, in one write transaction that counts the shape's
records (the bound invariant, as for a single launch): either every slot it asks for is
reserved, or none is (409), unless the caller asked for best effort, which takes what
fits. Each member is then an ordinary `pending` record with an ordinary launch (or
delete) operation of its own, run on the bulk pool (`bulk_concurrency` at once, for all
batches together); a member that fails releases its slot (a failed start keeps the
instance counted, `failed`, as a single launch does) and the others go on. The batch is
one more operation that ends when its last member ends: `Success` when they all
succeeded, else `Failure` with an `err` naming the members that failed; its metadata
says what was asked and granted, the members' names, operations and locations, and
each member's result as it ends.

Recovery needs nothing of its own: members are ordinary records, so a crash leaves
`pending` (or `deleting`) records that the startup reconcile settles. The batch
operation itself, like every operation, lives in memory only.
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection

from .. import metrics_export as metrics
from ..errors import BoundReached, Conflict, InvalidInput, NameTaken
from ..names import MAX_NAME_LENGTH, validate_name
from ..store import instances as records
from ..store import repository as repo
from ..store.rows import InstanceRow
from . import lifecycle
from .context import Core
from .instances import (
    delete_operation,
    launch_operation,
    mark_for_removal,
    name_taken,
    with_bound,
)
from .operations import Operation, Status
from .reservation import Reservation, reserve_launches
from .shapes import require_shape
from .target import Target
from .urls import instance_url, shape_instance_url, shape_url

logger = logging.getLogger(__name__)

# Generated names: `<deployment>-<shape>-<6 random letters or digits>`.
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
SUFFIX_LENGTH = 6
# Members named in a failed batch's `err` (the rest are in its metadata).
ERRORS_IN_MESSAGE = 5

LAUNCH = "launch"
DELETE = "delete"
NOTHING = "none"


def generate_names(deployment: str, shape: str, number: int, taken: set[str]) -> list[str]:
    """`number` new instance names, none of them in `taken` (nor twice)."""
    prefix = f"{deployment}-{shape}"[:MAX_NAME_LENGTH - SUFFIX_LENGTH - 1].rstrip("-")
    names: list[str] = []
    seen = set(taken)
    while len(names) < number:
        suffix = "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
        name = f"{prefix}-{suffix}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _check_names(names: list[str]) -> None:
    if not names:
        raise InvalidInput("instance_names must name at least one instance")
    seen: set[str] = set()
    for name in names:
        validate_name(name, "Instance")
        if name in seen:
            raise InvalidInput(f'Instance "{name}" is named more than once')
        seen.add(name)


@dataclass(frozen=True)
class Member:
    """One instance of a batch: its name and record, and where it goes."""

    name: str
    record: InstanceRow | None = None  # deletes: the record as it was before `deleting`
    record_id: int = 0
    location: str = ""


def _members(reservation: Reservation) -> list[Member]:
    return [Member(slot.name, record_id=slot.record_id, location=slot.location)
            for slot in reservation.slots]


def _check_room(shape: str, bound: records.Bound, asked: int, best_effort: bool) -> int:
    """How many of `asked` the bound grants (all, or with best effort what fits, at least
    one); BoundReached otherwise."""
    room = bound.scaling_maximum - bound.current
    if asked <= room:
        return asked
    if not best_effort or room <= 0:
        raise BoundReached(_room_message(shape, bound.scaling_maximum, room, asked))
    return room


def _room_message(shape: str, maximum: int, room: int, asked: int) -> str:
    if room <= 0:
        return (f'Shape "{shape}" is at its scaling_maximum ({maximum}): cannot launch '
                f'{"another instance" if asked == 1 else f"{asked} instances"}')
    return (f'Shape "{shape}" has room for {room} more instance(s) within its '
            f"scaling_maximum ({maximum}): cannot launch {asked}")


def launch_many(core: Core, target: Target, *, count: int | None = None,
                names: list[str] | None = None, best_effort: bool = False,
                owner: str | None = None) -> Operation:
    """Launch `count` instances (names generated) or the named ones, all or none within
    the shape's maximum (with `best_effort`: as many as fit, at least one)."""
    if (count is None) == (names is None):
        raise InvalidInput('Give either "count" or "instance_names"')
    if names is not None:
        _check_names(names)
        asked = len(names)
    else:
        assert count is not None
        if count < 1:
            raise InvalidInput("count must be at least 1")
        asked = count
    core.require_project_allowed(target.project)
    shape = target.shape
    admin = owner is None
    labels = (target.project, target.deployment.name, shape.name)
    in_lxd: set[str] = set()

    def ask(conn: Connection, bound: records.Bound) -> list[str]:
        granted = _check_room(shape.name, bound, asked, best_effort)
        if names is None:
            taken = in_lxd | records.names_in_project(conn, target.project)
            return generate_names(target.deployment.name, shape.name, granted, taken)
        chosen = names[:granted]
        for name in chosen:
            if name in in_lxd:  # the room grew since the first look
                raise name_taken(name, target.project, admin=admin)
        return chosen

    try:
        # The bound before the names (a first look; the reservation decides): a batch
        # past the room is refused whatever its names, and only the names that may be
        # granted are looked up, so a governor probes at most its room per request.
        with core.db.read() as conn:
            early = records.bound(conn, shape.id, shape.name)
        _check_room(shape.name, early, asked, best_effort)
        in_lxd |= core.lxd.instance_names(target.project)
        for name in (names or [])[:early.scaling_maximum - early.current]:
            if name in in_lxd:
                raise name_taken(name, target.project, admin=admin)
        reservation = reserve_launches(core, target, ask, best_effort=best_effort)
    except BoundReached:
        metrics.launch(*labels, metrics.REFUSED, asked)
        raise
    except NameTaken as err:
        # A governor is told no more than that one of its names is not available.
        raise (err if admin else Conflict("An instance name of the batch is not "
                                          "available: choose other names")) from None
    planned = _members(reservation)
    bound, granted = reservation.bound, len(planned)
    target = with_bound(target, bound, granted)
    logger.info("launching %d instance(s) (of %d asked) in shape %s/%s", granted, asked,
                target.deployment.name, shape.name)
    return _run(core, target, LAUNCH, planned, owner=owner, best_effort=best_effort,
                requested=asked,
                description=f"Launching {granted} instances of shape {shape.name}")


def scale(core: Core, target: Target, count: int, *, best_effort: bool = False,
          owner: str | None = None) -> Operation:
    """Bring the shape to `count` instances: launch the difference (names generated,
    placed as a batch) or delete it, the newest instances first.

    The count that matters is every instance but those being deleted (launches in flight
    included). A `count` outside the shape's bounds is refused (409), or brought within
    them with `best_effort`; so is a scale-in that would have to delete instances still
    being launched, or go below the minimum of instances that exist."""
    if count < 0:
        raise InvalidInput("count must not be negative")
    core.require_project_allowed(target.project)
    in_lxd = core.lxd.instance_names(target.project)
    # What the transaction found and decided, besides the launches it reserves.
    seen: dict[str, Any] = {"current": 0, "deletes": [], "action": NOTHING, "hook": None}

    def ask(conn: Connection, bound: records.Bound) -> list[str]:
        shape = require_shape(conn, target.deployment.id, target.shape.name, details=False)
        rows = records.list_all(conn, shape_ids=[shape.id])
        deleting = sum(r.status in records.LEAVING for r in rows)
        pending = sum(r.status == records.PENDING for r in rows)
        current = seen["current"] = len(rows) - deleting
        low, high = shape.scaling_minimum, shape.scaling_maximum
        wanted = count
        if not low <= wanted <= high:
            if not best_effort:
                raise BoundReached(f'Shape "{shape.name}" cannot have {count} instance(s): '
                                   f"its bounds are {low} to {high}")
            wanted = min(max(wanted, low), high)
        difference = abs(wanted - current)
        if wanted > current:
            seen["action"] = LAUNCH
            room = high - len(rows)  # instances being deleted still hold their slots
            number = difference
            if number > room:
                if not best_effort or room <= 0:
                    raise BoundReached(
                        f'Shape "{shape.name}" has room for {max(room, 0)} more instance(s) '
                        f"within its scaling_maximum ({high}; {deleting} being deleted): "
                        f"cannot launch {number}")
                number = room
            taken = in_lxd | records.names_in_project(conn, target.project)
            return generate_names(target.deployment.name, shape.name, number, taken)
        if wanted < current:
            seen["action"] = DELETE
            config = repo.shape_config(conn, shape.id)
            hook = seen["hook"] = lifecycle.terminate_hook(config)
            settled = records.removal_order(conn, shape.id, (records.READY, records.FAILED),
                                            lifecycle.termination_policy(config),
                                            unprotected=True)
            existing = sum(r.status in (records.READY, records.FAILED) for r in rows)
            # Launches in flight cannot be deleted yet, nor protected instances, and
            # only instances that exist count towards the minimum.
            removable = max(min(len(settled), existing - low), 0)
            protected = existing - len(settled)
            protected_note = f", {protected} protected" if protected else ""
            number = difference
            if number > removable:
                if not best_effort or removable == 0:
                    raise BoundReached(
                        f'Shape "{shape.name}" can lose {removable} instance(s) now '
                        f"(scaling_minimum {low}, {pending} being launched"
                        f"{protected_note}): "
                        f"cannot delete {number}")
                number = removable
            for record in settled[:number]:
                mark_for_removal(conn, record, hook, unit=core.unit_id)
                seen["deletes"].append(Member(record.instance_name, record=record,
                                              record_id=record.id,
                                              location=record.location))
        return []

    reservation = reserve_launches(core, target, ask, best_effort=best_effort)
    action, current, shape = seen["action"], seen["current"], target.shape
    planned = _members(reservation) if action == LAUNCH else seen["deletes"]
    bound = reservation.bound
    granted_count = current + len(planned) if action == LAUNCH else current - len(planned)
    if action == LAUNCH:
        target = with_bound(target, bound, len(planned))
    logger.info("scaling shape %s/%s from %d to %d instance(s) (%d asked)",
                target.deployment.name, shape.name, current, granted_count, count)
    return _run(core, target, action, planned, owner=owner, best_effort=best_effort,
                requested=abs(count - current), hook=seen["hook"],
                description=f"Scaling shape {shape.name} to {granted_count} instances",
                extra={"scaling_count": {"requested": count, "granted": granted_count,
                                         "previous": current}})


class _Batch:
    """Follows a batch's members and ends the batch operation with the last of them."""

    def __init__(self, core: Core, operation: Operation, action: str, members: list[Member],
                 metadata: dict[str, Any]) -> None:
        self._core = core
        self._operation = operation
        self._action = action
        self._members = members
        self._base = metadata
        self._lock = threading.Lock()
        self._operations: dict[str, str] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._ended = False

    def _metadata(self) -> dict[str, Any]:
        names = [member.name for member in self._members]
        return {**self._base,
                "operations": [self._operations[n] for n in names if n in self._operations],
                "results": {n: dict(self._results[n]) for n in names if n in self._results}}

    def started(self, name: str, operation: Operation) -> None:
        with self._lock:
            self._operations[name] = operation.url
            if self._ended:
                return  # every member ended already: the batch has its final metadata
            self._core.operations.set_metadata(self._operation, self._metadata())

    def member_ended(self, member: Member, operation: Operation) -> None:
        self._ended_with(member, {
            "status": operation.status.text, "status_code": operation.status.code,
            "err": operation.err, "operation": operation.url, "location": member.location},
            operation.url)

    def member_not_started(self, member: Member, err: str) -> None:
        self._ended_with(member, {
            "status": Status.FAILURE.text, "status_code": Status.FAILURE.code, "err": err,
            "operation": "", "location": member.location}, None)

    def _ended_with(self, member: Member, result: dict[str, Any], url: str | None) -> None:
        with self._lock:
            if url is not None:
                self._operations.setdefault(member.name, url)
            self._results[member.name] = result
            if len(self._results) < len(self._members):
                self._core.operations.set_metadata(self._operation, self._metadata())
                return
            if self._ended:
                return
            self._ended = True
            metadata = self._metadata()
        self._finish(metadata)

    def finish_if_empty(self) -> None:
        if not self._members:
            self._finish(self._metadata())

    def _finish(self, metadata: dict[str, Any]) -> None:
        failed = [(name, result) for name, result in metadata["results"].items()
                  if result["status_code"] != Status.SUCCESS.code]
        succeeded = len(metadata["results"]) - len(failed)
        metadata = {**metadata, "succeeded": succeeded, "failed": len(failed)}
        err = ""
        if failed:
            what = "launches" if self._action == LAUNCH else "deletes"
            listed = "; ".join(f"{name}: {result['err'] or result['status']}"
                               for name, result in failed[:ERRORS_IN_MESSAGE])
            more = "; ..." if len(failed) > ERRORS_IN_MESSAGE else ""
            err = f"{len(failed)} of {len(self._members)} {what} failed: {listed}{more}"
        self._core.operations.end(self._operation, err=err, metadata=metadata)


def _run(core: Core, target: Target, action: str, planned: list[Member], *,
         owner: str | None, best_effort: bool, requested: int, description: str,
         extra: dict[str, Any] | None = None, hook: lifecycle.Hook | None = None
         ) -> Operation:
    """The batch operation, then one operation per member on the bulk pool."""
    project, deployment, shape = target.project, target.deployment.name, target.shape.name
    names = [member.name for member in planned]
    metadata: dict[str, Any] = {
        "action": action, "requested": requested, "granted": len(planned),
        "best_effort": best_effort, "instances": names, **(extra or {})}
    if any(member.location for member in planned):
        metadata["locations"] = {member.name: member.location for member in planned}
    resources = {
        "instances": [instance_url(project, name) for name in names],
        "deployments": [shape_url(project, deployment, shape)]
        + [shape_instance_url(project, deployment, shape, name) for name in names]}
    batch = core.operations.begin(description, resources, owner=owner, metadata=metadata,
                                  project=project)
    tracker = _Batch(core, batch, action, planned, metadata)
    for member in planned:
        on_end = partial(tracker.member_ended, member)
        try:
            if action == LAUNCH:
                operation = launch_operation(core, target, member.name, member.record_id,
                                             member.location, owner=owner, on_end=on_end,
                                             bulk=True)
            else:
                assert member.record is not None
                operation = delete_operation(core, target, member.record, owner=owner,
                                             on_end=on_end, bulk=True, hook=hook,
                                             reason="scale-in")
        except Exception as err:  # no operation could be made (the service is stopping)
            logger.exception("cannot start the %s of %s", action, member.name)
            _undo(core, action, member)
            tracker.member_not_started(member, f"Internal error: {err}")
            continue
        tracker.started(member.name, operation)
    tracker.finish_if_empty()
    return batch


def _undo(core: Core, action: str, member: Member) -> None:
    """Give back what a member that never got an operation holds: its slot (a launch),
    its record's status (a delete)."""
    with core.db.write() as conn:
        if action == LAUNCH:
            records.release(conn, member.record_id)
        elif member.record is not None:
            records.set_status(conn, member.record_id, member.record.status)
