"""Pets: cluster members (or an LXD cluster group) with their own job on a weekly
schedule, lent to governors while idle and taken back before they are needed.

A pet is `idle` outside its busy windows and their notice, `notice` from `busy start -
lead_time` to the start, `busy` in a window. Shapes opt in with `placement.pets=allow`;
while a pet is idle its members are placement candidates for opted-in shapes
(containers only, unless the pet has `allow_vms`); during notice and busy they are not
(`filter_candidates`, called by `placement.candidates` inside the one reservation path).
An instance recorded on a pet's member is "borrowed". The duty that sends the notice and
takes the members back is `pet_duty.py`; this module is the resource (admin-only CRUD,
its public object with the state, the next change and the borrowed instances).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from ..errors import Conflict, InvalidInput, NotFound
from ..lxd import ClusterMember
from ..models import PetPatch, PetPut, PetsPost
from ..names import validate_config, validate_name
from ..store import instances as records
from ..store import pets as store
from ..store import repository as repo
from ..store.rows import InstanceRow, PetRow
from . import schedule as sched
from .clock import aware, iso
from .context import Core
from .etag import check_if_match, etag_of
from .urls import instance_url, shape_url

PETS_KEY = "placement.pets"
ALLOW = "allow"
DENY = "deny"
PETS_VALUES = (ALLOW, DENY)
IDLE, NOTICE, BUSY = "idle", "notice", "busy"
PET_CONFIG_KEYS: frozenset[str] = frozenset()


def pet_url(name: str) -> str:
    return f"/1.0/pets/{name}"


@lru_cache(maxsize=256)
def schedule_of(text: str) -> sched.Schedule:
    return sched.parse(text)


@dataclass(frozen=True)
class PetState:
    """Where a moment falls in a pet's schedule."""

    state: str
    window: tuple[datetime, datetime] | None  # the busy window now or next
    next_change: datetime | None
    next_state: str | None

    @property
    def deadline(self) -> datetime | None:
        return self.window[0] if self.window else None

    def to_api(self) -> dict[str, Any]:
        return {"state": self.state,
                "next_change": iso(self.next_change) if self.next_change else None,
                "next_state": self.next_state,
                "busy_window": ({"start": iso(self.window[0]), "end": iso(self.window[1])}
                                if self.window else None)}


def state_at(pet: PetRow, now: datetime) -> PetState:
    now = aware(now)
    window = schedule_of(pet.schedule).current_or_next(now)
    if window is None:
        return PetState(IDLE, None, None, None)
    start, end = window
    notice_at = start - timedelta(seconds=pet.lead_time)
    if start <= now:
        return PetState(BUSY, window, end, IDLE)
    if notice_at <= now:
        return PetState(NOTICE, window, start, BUSY)
    return PetState(IDLE, window, notice_at, NOTICE if pet.lead_time else BUSY)


def members_of(pet: PetRow, cluster: Iterable[ClusterMember] | None) -> list[str]:
    """The cluster members the pet lends (by name)."""
    if pet.member:
        return [pet.member]
    return sorted(m.name for m in cluster or () if pet.cluster_group in m.groups)


# --- placement --------------------------------------------------------------------------


def opted_in(config: dict[str, str]) -> bool:
    return config.get(PETS_KEY) == ALLOW


def check_shape_key(config: dict[str, str]) -> None:
    """`placement.pets` is `allow` or `deny` (400 otherwise), checked when set."""
    value = config.get(PETS_KEY)
    if value is not None and value not in PETS_VALUES:
        raise InvalidInput(f'{PETS_KEY} must be "allow" or "deny", not "{value}"')


def filter_candidates(core: Core, members: list[ClusterMember], online: list[str], *,
                      config: dict[str, str], instance_type: str) -> list[str]:
    """The candidate members left once pets are taken out where this shape may not go:
    a pet's members stay only while it is idle, for a shape with `placement.pets=allow`,
    and for a VM only when the pet has `allow_vms`. Raises `Conflict` saying why when no
    candidate is left because of pets."""
    with core.db.read() as conn:
        pets = store.list_pets(conn)
    if not pets:
        return online
    now = core.clock.now()
    refused: dict[str, str] = {}
    for pet in pets:
        for member in members_of(pet, members):
            if member not in online or member in refused:
                continue
            state = state_at(pet, now).state
            if state != IDLE:
                refused[member] = f'pet "{pet.name}" is {state}'
            elif not opted_in(config):
                refused[member] = f'pet "{pet.name}" (the shape has no {PETS_KEY}={ALLOW})'
            elif instance_type == "virtual-machine" and not pet.allow_vms:
                refused[member] = f'pet "{pet.name}" takes containers only'
    left = [m for m in online if m not in refused]
    if not left and refused:
        raise Conflict("No cluster member may take the instance: " + "; ".join(
            f"{m}: {why}" for m, why in sorted(refused.items())))
    return left


# --- borrowed instances -----------------------------------------------------------------


def pet_of_members(core: Core) -> dict[str, str]:
    """Cluster member -> the pet it belongs to (empty when there are no pets)."""
    with core.db.read() as conn:
        rows = store.list_pets(conn)
    if not rows:
        return {}
    cluster = core.lxd.cluster_members()
    return {member: pet.name for pet in rows for member in members_of(pet, cluster)}


def mark_borrowed(core: Core, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LXD's instance objects, those on a pet's member with `borrowed_from` (the pet's
    name) added, so that a governor sees which of its instances are borrowed."""
    on = pet_of_members(core)
    if not on:
        return objects
    return [{**o, "borrowed_from": on[o["location"]]} if o.get("location") in on else o
            for o in objects]


@dataclass(frozen=True)
class Borrowed:
    record: InstanceRow
    project: str
    deployment_id: int
    deployment: str
    shape: str

    def to_api(self) -> dict[str, Any]:
        return {"name": self.record.instance_name, "project": self.project,
                "deployment": self.deployment, "shape": self.shape,
                "location": self.record.location, "status": self.record.status,
                "url": instance_url(self.project, self.record.instance_name),
                "shape_url": shape_url(self.project, self.deployment, self.shape)}


def borrowed_on(conn: Connection, members: Iterable[str]) -> list[Borrowed]:
    """Every recorded instance on those members (leaving ones left out)."""
    members = set(members)
    if not members:
        return []
    deployments = {d.id: d for d in repo.list_deployments(conn, None)}
    shapes = {s.id: (d, s) for d_id, group in repo.list_shapes(conn, list(deployments)).items()
              for s in group for d in [deployments[d_id]]}
    found = []
    for row in records.list_all(conn):
        if row.location in members and row.status != records.DELETING and row.shape_id in shapes:
            d, s = shapes[row.shape_id]
            found.append(Borrowed(row, d.project, d.id, d.name, s.name))
    return sorted(found, key=lambda b: (b.project, b.record.instance_name))


# --- the resource -----------------------------------------------------------------------


def writable(row: PetRow) -> dict[str, Any]:
    return {"description": row.description, "member": row.member,
            "cluster_group": row.cluster_group, "schedule": row.schedule,
            "lead_time": row.lead_time, "grace_period": row.grace_period,
            "allow_vms": row.allow_vms, "config": row.config}


def _put_of(row: PetRow) -> PetPut:
    return PetPut(**writable(row))


def normalise(core: Core, put: PetPut) -> PetPut:
    """Check the fields together: one of member and cluster group, which LXD knows, and
    a schedule that parses."""
    validate_config(put.config, "pet", PET_CONFIG_KEYS)
    if bool(put.member) == bool(put.cluster_group):
        raise InvalidInput('Give either "member" or "cluster_group"')
    schedule_of(put.schedule)
    members = core.lxd.cluster_members()
    if members is None:
        raise InvalidInput("LXD is not clustered: a pet is a cluster member")
    if put.member and put.member not in {m.name for m in members}:
        raise InvalidInput(f'Cluster member "{put.member}" does not exist')
    if put.cluster_group:
        groups = core.lxd.cluster_groups() or set()
        if put.cluster_group not in groups:
            raise InvalidInput(f'Cluster group "{put.cluster_group}" does not exist in LXD')
    return put


def require_pet(conn: Connection, name: str) -> PetRow:
    row = store.get_pet(conn, name)
    if row is None:
        raise NotFound("Pet not found")
    return row


def present(core: Core, conn: Connection, pet: PetRow, cluster: list[ClusterMember] | None,
            now: datetime) -> dict[str, Any]:
    members = members_of(pet, cluster)
    return {"name": pet.name, **writable(pet), "members": members,
            **state_at(pet, now).to_api(),
            "notice_sent_for": pet.notice_for or None,
            "reclaimed_for": pet.reclaimed_for or None,
            "borrowed": [b.to_api() for b in borrowed_on(conn, members)]}


def list_pet_urls(core: Core) -> list[str]:
    with core.db.read() as conn:
        return [pet_url(p.name) for p in store.list_pets(conn)]


def list_pets(core: Core) -> list[dict[str, Any]]:
    cluster, now = core.lxd.cluster_members(), core.clock.now()
    with core.db.read() as conn:
        return [present(core, conn, p, cluster, now) for p in store.list_pets(conn)]


def get_pet(core: Core, name: str) -> tuple[dict[str, Any], str]:
    cluster, now = core.lxd.cluster_members(), core.clock.now()
    with core.db.read() as conn:
        pet = require_pet(conn, name)
        return present(core, conn, pet, cluster, now), etag_of(writable(pet))


def create_pet(core: Core, request: PetsPost) -> None:
    validate_name(request.name, "Pet")
    put = normalise(core, PetPut(**request.model_dump(exclude={"name"})))
    with core.db.write() as conn:
        store.insert_pet(conn, request.name, put.model_dump())


def _update(core: Core, name: str, if_match: str | None,
            merge: Callable[[PetRow], PetPut]) -> None:
    with core.db.read() as conn:
        before = require_pet(conn, name)
    normalise(core, merge(before))  # LXD is asked outside the write transaction
    with core.db.write() as conn:
        row = require_pet(conn, name)
        check_if_match(if_match, writable(row))
        new = merge(row)
        schedule_of(new.schedule)
        store.update_pet(conn, row.id, new.model_dump())


def replace_pet(core: Core, name: str, request: PetPut, if_match: str | None) -> None:
    _update(core, name, if_match, lambda _row: request)


def patch_pet(core: Core, name: str, request: PetPatch, if_match: str | None) -> None:
    def merge(row: PetRow) -> PetPut:
        config = dict(row.config)
        for key, value in (request.config or {}).items():
            if value == "":
                config.pop(key, None)
            else:
                config[key] = value
        changes = request.model_dump(exclude_none=True, exclude={"config"})
        if changes.get("member"):
            changes.setdefault("cluster_group", "")
        if changes.get("cluster_group"):
            changes.setdefault("member", "")
        return PetPut(**{**_put_of(row).model_dump(), **changes, "config": config})

    _update(core, name, if_match, merge)


def delete_pet(core: Core, name: str) -> None:
    """Delete the pet: its members become regular members (borrowed instances stay)."""
    with core.db.write() as conn:
        row = require_pet(conn, name)
        store.delete_pet(conn, row.id)


def rename_pet(core: Core, name: str, new_name: str) -> None:
    validate_name(new_name, "Pet")
    with core.db.write() as conn:
        row = require_pet(conn, name)
        store.rename_pet(conn, row.id, new_name)


# --- offers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lendable:
    """An idle pet as offers show it: its members and until when it takes instances."""

    pet: PetRow
    members: list[str]
    state: PetState

    @property
    def until(self) -> datetime | None:
        """When new instances stop landing there (the notice), None: never."""
        if self.state.window is None:
            return None
        return self.state.window[0] - timedelta(seconds=self.pet.lead_time)

    def takes(self, config: dict[str, str], instance_type: str) -> bool:
        return opted_in(config) and (instance_type != "virtual-machine" or self.pet.allow_vms)

    def to_api(self) -> dict[str, Any]:
        return {"members": self.members, "until": iso(self.until) if self.until else None,
                "busy_window": self.state.to_api()["busy_window"]}


def lendable(core: Core) -> list[Lendable]:
    """The idle pets with at least one online member."""
    with core.db.read() as conn:
        rows = store.list_pets(conn)
    if not rows:
        return []
    cluster = core.lxd.cluster_members() or []
    online = {m.name for m in cluster if m.online}
    now = core.clock.now()
    found = []
    for pet in rows:
        state = state_at(pet, now)
        members = [m for m in members_of(pet, cluster) if m in online]
        if state.state == IDLE and members:
            found.append(Lendable(pet, members, state))
    return found
