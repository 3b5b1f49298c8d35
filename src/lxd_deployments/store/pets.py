"""Pets: the cluster members lent to governors on a schedule, and their duty's state."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import for_change
from .repository import _configs_of, _replace_config
from .rows import PetRow
from .schema import pets, pets_config


def _row(r, config: dict[str, str]) -> PetRow:
    return PetRow(id=r.id, name=r.name, description=r.description, member=r.member,
                  cluster_group=r.cluster_group, schedule=r.schedule, lead_time=r.lead_time,
                  grace_period=r.grace_period, allow_vms=bool(r.allow_vms),
                  notice_for=r.notice_for, reclaimed_for=r.reclaimed_for, config=config)


def list_pets(conn: Connection) -> list[PetRow]:
    rows = conn.execute(select(pets).order_by(pets.c.name)).all()
    configs = _configs_of(conn, pets_config, "pet_id", (r.id for r in rows))
    return [_row(r, configs.get(r.id, {})) for r in rows]


def get_pet(conn: Connection, name: str) -> PetRow | None:
    row = conn.execute(for_change(conn, select(pets).where(pets.c.name == name))).first()
    if row is None:
        return None
    return _row(row, _configs_of(conn, pets_config, "pet_id", [row.id]).get(row.id, {}))


def _values(fields: Mapping) -> dict:
    return {key: fields[key] for key in ("description", "member", "cluster_group", "schedule",
                                         "lead_time", "grace_period", "allow_vms")}


def insert_pet(conn: Connection, name: str, fields: Mapping) -> int:
    try:
        pet_id = conn.execute(insert(pets).values(name=name, **_values(fields))
                              ).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Pet "{name}" already exists') from err
    _replace_config(conn, pets_config, "pet_id", pet_id, fields["config"])
    return pet_id


def update_pet(conn: Connection, pet_id: int, fields: Mapping) -> None:
    """Replace the writable fields (the duty's state stays: it names the busy start it
    was for, so a window the new schedule no longer has is forgotten at the next look)."""
    conn.execute(update(pets).where(pets.c.id == pet_id).values(**_values(fields)))
    _replace_config(conn, pets_config, "pet_id", pet_id, fields["config"])


def set_state(conn: Connection, pet_id: int, *, notice_for: str | None = None,
              reclaimed_for: str | None = None) -> None:
    values = {}
    if notice_for is not None:
        values["notice_for"] = notice_for
    if reclaimed_for is not None:
        values["reclaimed_for"] = reclaimed_for
    if values:
        conn.execute(update(pets).where(pets.c.id == pet_id).values(**values))


def delete_pet(conn: Connection, pet_id: int) -> None:
    conn.execute(delete(pets).where(pets.c.id == pet_id))


def rename_pet(conn: Connection, pet_id: int, new_name: str) -> None:
    try:
        conn.execute(update(pets).where(pets.c.id == pet_id).values(name=new_name))
    except IntegrityError as err:
        raise Conflict(f'Pet "{new_name}" already exists') from err
