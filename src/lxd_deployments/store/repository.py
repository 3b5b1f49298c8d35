"""Queries on the store, one function per question, all inside a caller's transaction.

Listing functions fetch children in bulk (one query per table, whatever the number of
objects) so that `recursion=1` over thousands of shapes stays a handful of queries.
Integrity violations are turned into domain errors here, at the edge of SQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import for_change, utcnow
from .rows import CertificateRow, DeploymentRow, InstanceRow, KeyRow, ShapeRow, instance_row
from .schema import (
    certificates,
    deployments,
    deployments_config,
    deployments_keys,
    deployments_shapes,
    deployments_shapes_config,
    deployments_shapes_instances,
)

# Ids per `IN (...)`: SQLite limits the parameters of a statement (999 before 3.32).
_CHUNK = 500


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


# --- config maps (deployments and shapes share the shape of their config tables) -------


def _configs_of(conn: Connection, table: Table, owner: str, ids: Iterable[int]
                ) -> dict[int, dict[str, str]]:
    ids = list(ids)
    configs: dict[int, dict[str, str]] = defaultdict(dict)
    owner_column = table.c[owner]
    for chunk in _chunks(ids):
        query = select(owner_column, table.c.key, table.c.value).where(
            owner_column.in_(chunk))
        for owner_id, key, value in conn.execute(query):
            configs[owner_id][key] = value
    return configs


def _replace_config(conn: Connection, table: Table, owner: str, owner_id: int,
                    config: Mapping[str, str]) -> None:
    conn.execute(delete(table).where(table.c[owner] == owner_id))
    if config:
        conn.execute(insert(table), [
            {owner: owner_id, "key": key, "value": value} for key, value in config.items()])


# --- deployments -----------------------------------------------------------------------


def _deployment_row(row, config: dict[str, str]) -> DeploymentRow:
    return DeploymentRow(id=row.id, project=row.project, name=row.name,
                         description=row.description,
                         governor_webhook_url=row.governor_webhook_url, config=config)


def list_deployments(conn: Connection, project: str | None) -> list[DeploymentRow]:
    """Deployments of one project (or of all when `project` is None), by name."""
    query = select(deployments).order_by(deployments.c.project, deployments.c.name)
    if project is not None:
        query = query.where(deployments.c.project == project)
    rows = conn.execute(query).all()
    configs = _configs_of(conn, deployments_config, "deployment_id", (r.id for r in rows))
    return [_deployment_row(r, configs.get(r.id, {})) for r in rows]


def get_deployment(conn: Connection, project: str, name: str, *,
                   details: bool = True) -> DeploymentRow | None:
    """The deployment; with `details=False` its row alone (an empty `config`), one query."""
    row = conn.execute(for_change(conn, select(deployments).where(
        deployments.c.project == project, deployments.c.name == name))).first()
    if row is None:
        return None
    if not details:
        return _deployment_row(row, {})
    configs = _configs_of(conn, deployments_config, "deployment_id", [row.id])
    return _deployment_row(row, configs.get(row.id, {}))


def insert_deployment(conn: Connection, project: str, name: str, description: str,
                      governor_webhook_url: str, config: Mapping[str, str]) -> int:
    try:
        deployment_id = conn.execute(insert(deployments).values(
            project=project, name=name, description=description,
            governor_webhook_url=governor_webhook_url, created_at=utcnow())).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Deployment "{name}" already exists') from err
    _replace_config(conn, deployments_config, "deployment_id", deployment_id, config)
    return deployment_id


def update_deployment(conn: Connection, deployment_id: int, description: str,
                      governor_webhook_url: str, config: Mapping[str, str]) -> None:
    conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(
        description=description, governor_webhook_url=governor_webhook_url))
    _replace_config(conn, deployments_config, "deployment_id", deployment_id, config)


def rename_deployment(conn: Connection, deployment_id: int, new_name: str) -> None:
    try:
        conn.execute(update(deployments).where(deployments.c.id == deployment_id)
                     .values(name=new_name))
    except IntegrityError as err:
        raise Conflict(f'Deployment "{new_name}" already exists') from err


def delete_deployment(conn: Connection, deployment_id: int) -> None:
    conn.execute(delete(deployments).where(deployments.c.id == deployment_id))


# --- shapes ----------------------------------------------------------------------------


def _instance_counts(conn: Connection, shape_ids: list[int]) -> dict[int, int]:
    column = deployments_shapes_instances.c.shape_id
    counts: dict[int, int] = {}
    for chunk in _chunks(shape_ids):
        counts.update(conn.execute(select(column, func.count()).where(column.in_(chunk))
                                   .group_by(column)).all())
    return counts


def outdated_counts(conn: Connection, shape_ids: Iterable[int]) -> dict[int, int]:
    """Per shape, its records made from an older template revision than its current."""
    table = deployments_shapes_instances
    rows = conn.execute(
        select(table.c.shape_id, func.count())
        .join(deployments_shapes, deployments_shapes.c.id == table.c.shape_id)
        .where(table.c.shape_id.in_(list(shape_ids)),
               table.c.revision < deployments_shapes.c.template_revision)
        .group_by(table.c.shape_id)).all()
    return {shape_id: number for shape_id, number in rows}


def list_shapes(conn: Connection, deployment_ids: Iterable[int]) -> dict[int, list[ShapeRow]]:
    """Shapes grouped by deployment id, each with its config and instance count."""
    deployment_ids = list(deployment_ids)
    grouped: dict[int, list[ShapeRow]] = defaultdict(list)
    if not deployment_ids:
        return grouped
    rows = []
    for chunk in _chunks(deployment_ids):
        rows += conn.execute(select(deployments_shapes)
                             .where(deployments_shapes.c.deployment_id.in_(chunk))).all()
    rows.sort(key=lambda r: r.name)
    ids = [r.id for r in rows]
    configs = _configs_of(conn, deployments_shapes_config, "shape_id", ids)
    counts = _instance_counts(conn, ids)
    outdated: dict[int, int] = {}
    for chunk in _chunks(ids):
        outdated.update(outdated_counts(conn, chunk))
    for r in rows:
        grouped[r.deployment_id].append(_shape_row(r, configs.get(r.id, {}), counts.get(r.id, 0),
                                                   outdated.get(r.id, 0)))
    return grouped


def shape_names(conn: Connection, deployment_id: int) -> list[str]:
    """The names of the deployment's shapes, sorted."""
    return list(conn.execute(select(deployments_shapes.c.name)
                             .where(deployments_shapes.c.deployment_id == deployment_id)
                             .order_by(deployments_shapes.c.name)).scalars())


def _shape_row(row, config: dict[str, str], count: int, outdated: int = 0) -> ShapeRow:
    return ShapeRow(id=row.id, deployment_id=row.deployment_id, name=row.name,
                    description=row.description, instance_template=row.instance_template,
                    scaling_minimum=row.scaling_minimum, scaling_maximum=row.scaling_maximum,
                    config=config, scaling_current=count,
                    template_revision=row.template_revision, instances_outdated=outdated)


def get_shape(conn: Connection, deployment_id: int, name: str, *,
              details: bool = True) -> ShapeRow | None:
    """The shape with its config and instance count; with `details=False` its row alone
    (an empty `config`, `scaling_current` 0: not counted), one query."""
    row = conn.execute(for_change(conn, select(deployments_shapes).where(
        deployments_shapes.c.deployment_id == deployment_id,
        deployments_shapes.c.name == name))).first()
    if row is None:
        return None
    if not details:
        return _shape_row(row, {}, 0)
    configs = _configs_of(conn, deployments_shapes_config, "shape_id", [row.id])
    counts = _instance_counts(conn, [row.id])
    outdated = outdated_counts(conn, [row.id])
    return _shape_row(row, configs.get(row.id, {}), counts.get(row.id, 0),
                      outdated.get(row.id, 0))


def shape_config(conn: Connection, shape_id: int) -> dict[str, str]:
    """One shape's config keys."""
    return _configs_of(conn, deployments_shapes_config, "shape_id", [shape_id]).get(shape_id, {})


# A deployment and one of its shapes in one query (every instance route starts with
# it), built once: building the statement costs more than running it.
_SHAPE_OF_DEPLOYMENT = (
    select(deployments, *(column.label(f"shape_{column.name}")
                          for column in deployments_shapes.c))
    .select_from(deployments.outerjoin(deployments_shapes, and_(
        deployments_shapes.c.deployment_id == deployments.c.id,
        deployments_shapes.c.name == bindparam("shape"))))
    .where(deployments.c.project == bindparam("project"),
           deployments.c.name == bindparam("deployment")))


def get_deployment_shape(conn: Connection, project: str, deployment: str, shape: str
                         ) -> tuple[DeploymentRow | None, ShapeRow | None]:
    """The deployment and its shape as `details=False` gives them (no config, the shape
    not counted), in one query; None for whichever does not exist."""
    row = conn.execute(_SHAPE_OF_DEPLOYMENT, {"project": project, "deployment": deployment,
                                              "shape": shape}).first()
    if row is None:
        return None, None
    if row.shape_id is None:
        return _deployment_row(row, {}), None
    return _deployment_row(row, {}), ShapeRow(
        id=row.shape_id, deployment_id=row.shape_deployment_id, name=row.shape_name,
        description=row.shape_description, instance_template=row.shape_instance_template,
        scaling_minimum=row.shape_scaling_minimum, scaling_maximum=row.shape_scaling_maximum,
        template_revision=row.shape_template_revision)


def insert_shape(conn: Connection, deployment_id: int, name: str, description: str,
                 instance_template: str, scaling_minimum: int, scaling_maximum: int,
                 config: Mapping[str, str]) -> int:
    try:
        shape_id = conn.execute(insert(deployments_shapes).values(
            deployment_id=deployment_id, name=name, description=description,
            instance_template=instance_template, scaling_minimum=scaling_minimum,
            scaling_maximum=scaling_maximum)).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Shape "{name}" already exists') from err
    _replace_config(conn, deployments_shapes_config, "shape_id", shape_id, config)
    return shape_id


def update_shape(conn: Connection, shape_id: int, description: str, instance_template: str,
                 scaling_minimum: int, scaling_maximum: int, config: Mapping[str, str]) -> None:
    """Write the shape; a changed template is a new template revision."""
    table = deployments_shapes
    conn.execute(update(table).where(table.c.id == shape_id).values(
        description=description, instance_template=instance_template,
        scaling_minimum=scaling_minimum, scaling_maximum=scaling_maximum,
        template_revision=case((table.c.instance_template != instance_template,
                                table.c.template_revision + 1),
                               else_=table.c.template_revision)))
    _replace_config(conn, deployments_shapes_config, "shape_id", shape_id, config)


def rename_shape(conn: Connection, shape_id: int, new_name: str) -> None:
    try:
        conn.execute(update(deployments_shapes).where(deployments_shapes.c.id == shape_id)
                     .values(name=new_name))
    except IntegrityError as err:
        raise Conflict(f'Shape "{new_name}" already exists') from err


def delete_shape(conn: Connection, shape_id: int) -> None:
    conn.execute(delete(deployments_shapes).where(deployments_shapes.c.id == shape_id))


# --- instances (records of what the service created in LXD) ---------------------------


def list_instances(conn: Connection, shape_ids: Iterable[int]) -> list[InstanceRow]:
    shape_ids = list(shape_ids)
    if not shape_ids:
        return []
    table = deployments_shapes_instances
    rows = conn.execute(select(table).where(table.c.shape_id.in_(shape_ids))
                        .order_by(table.c.instance_name)).all()
    return [instance_row(r) for r in rows]


# --- certificates ----------------------------------------------------------------------


def _certificate_row(row) -> CertificateRow:
    return CertificateRow(id=row.id, fingerprint=row.fingerprint, name=row.name, type=row.type,
                          certificate=row.certificate)


def list_certificates(conn: Connection) -> list[CertificateRow]:
    rows = conn.execute(select(certificates).order_by(certificates.c.name,
                                                      certificates.c.fingerprint)).all()
    return [_certificate_row(r) for r in rows]


def find_certificates(conn: Connection, fingerprint_prefix: str) -> list[CertificateRow]:
    """Certificates whose fingerprint starts with the prefix (LXD lets a prefix name one)."""
    escaped = fingerprint_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(select(certificates).where(
        certificates.c.fingerprint.like(f"{escaped}%", escape="\\")).limit(2)).all()
    return [_certificate_row(r) for r in rows]


def insert_certificate(conn: Connection, fingerprint: str, name: str, type_: str,
                       certificate_pem: str) -> int:
    try:
        return conn.execute(insert(certificates).values(
            fingerprint=fingerprint, name=name, type=type_, certificate=certificate_pem,
            created_at=utcnow())).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict("Certificate already in trust store") from err


def delete_certificate(conn: Connection, certificate_id: int) -> None:
    conn.execute(delete(certificates).where(certificates.c.id == certificate_id))


# --- keys ------------------------------------------------------------------------------


def _keys_query():
    return select(deployments_keys, certificates.c.fingerprint).join(
        certificates, certificates.c.id == deployments_keys.c.certificate_id)


def _key_row(row) -> KeyRow:
    return KeyRow(id=row.id, deployment_id=row.deployment_id, certificate_id=row.certificate_id,
                  name=row.name, description=row.description, role=row.role,
                  certificate_fingerprint=row.fingerprint)


def list_keys(conn: Connection, deployment_ids: Iterable[int]) -> list[KeyRow]:
    deployment_ids = list(deployment_ids)
    if not deployment_ids:
        return []
    rows = conn.execute(_keys_query().where(deployments_keys.c.deployment_id.in_(deployment_ids))
                        .order_by(deployments_keys.c.name)).all()
    return [_key_row(r) for r in rows]


def get_key(conn: Connection, deployment_id: int, name: str) -> KeyRow | None:
    row = conn.execute(_keys_query().where(deployments_keys.c.deployment_id == deployment_id,
                                           deployments_keys.c.name == name)).first()
    return _key_row(row) if row is not None else None


def insert_key(conn: Connection, deployment_id: int, certificate_id: int, name: str,
               description: str, role: str) -> int:
    exists = conn.execute(select(deployments_keys.c.name).where(
        deployments_keys.c.deployment_id == deployment_id,
        deployments_keys.c.certificate_id == certificate_id)).scalar_one_or_none()
    if exists is not None:
        raise Conflict(f'The certificate already has key "{exists}" in this deployment')
    try:
        return conn.execute(insert(deployments_keys).values(
            deployment_id=deployment_id, certificate_id=certificate_id, name=name,
            description=description, role=role)).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Deployment key "{name}" already exists') from err


def update_key(conn: Connection, key_id: int, description: str, role: str) -> None:
    conn.execute(update(deployments_keys).where(deployments_keys.c.id == key_id)
                 .values(description=description, role=role))


def rename_key(conn: Connection, key_id: int, new_name: str) -> None:
    try:
        conn.execute(update(deployments_keys).where(deployments_keys.c.id == key_id)
                     .values(name=new_name))
    except IntegrityError as err:
        raise Conflict(f'Deployment key "{new_name}" already exists') from err


def delete_key(conn: Connection, key_id: int) -> None:
    conn.execute(delete(deployments_keys).where(deployments_keys.c.id == key_id))
