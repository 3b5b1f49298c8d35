"""A store with rows in every table, for the tests of copy-store (SQLite and PostgreSQL).

The rows are made to catch a copy that is not exact: ids with gaps (rows deleted, so a
copy that renumbers is seen), fractions of seconds in REAL columns, NULLs, text outside
ASCII, and a foreign key at every level. `every_row()` reads a store back for comparing.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from lxd_deployments.store import Database
from lxd_deployments.store.copy import copied_tables
from lxd_deployments.store.schema import (
    audit_log,
    certificates,
    deployments,
    deployments_config,
    deployments_instance_changes,
    deployments_keys,
    deployments_placement_groups,
    deployments_placement_groups_config,
    deployments_placement_reports,
    deployments_shapes,
    deployments_shapes_config,
    deployments_shapes_instances,
    deployments_warm_pool,
    deployments_webhook_deliveries,
    deployments_webhook_secrets,
    event_cursors,
    operations,
    pets,
    pets_config,
    units,
)

NOW = "2026-12-02T03:04:05.123456+00:00"


def fill(database: Database, *, scale: int = 1) -> None:
    """Rows in every table the copy copies; `scale` deployments' worth of them (x3)."""
    with database.write() as conn:
        conn.execute(delete(event_cursors))
        conn.execute(insert(event_cursors), [
            {"name": "instance-changes", "position": 41},
            {"name": "deliveries", "position": 7}])
        for n in range(scale * 3):
            certificate = conn.execute(insert(certificates).values(
                fingerprint=f"{n:064x}", name=f"gov-{n}", type="deployments",
                certificate=f"PEM {n}", created_at=NOW)).inserted_primary_key[0]
            deployment = conn.execute(insert(deployments).values(
                project="default" if n % 2 else "prod", name=f"web-{n}",
                description="déploiement ☃", governor_webhook_url=f"https://gov/{n}",
                created_at=NOW)).inserted_primary_key[0]
            conn.execute(insert(deployments_config).values(
                deployment_id=deployment, key="user.owner", value=f"team-{n}"))
            conn.execute(insert(deployments_keys).values(
                deployment_id=deployment, certificate_id=certificate, name=f"key-{n}",
                description="", role="rw" if n % 2 else "ro"))
            group = conn.execute(insert(deployments_placement_groups).values(
                deployment_id=deployment, name="spread", description="", policy="spread",
                rigor="strict", max_per_member=None if n % 2 else 2)).inserted_primary_key[0]
            conn.execute(insert(deployments_placement_groups_config).values(
                group_id=group, key="user.note", value="x"))
            conn.execute(insert(deployments_placement_reports).values(
                group_id=group, fingerprint=f"violations-{n}"))
            shape = conn.execute(insert(deployments_shapes).values(
                deployment_id=deployment, name="frontend", description="",
                instance_template='{"source": {"alias": "busybox"}}', scaling_minimum=0,
                scaling_maximum=5, template_revision=n + 1)).inserted_primary_key[0]
            conn.execute(insert(deployments_shapes_config).values(
                shape_id=shape, key="placement.group", value="spread"))
            for i in range(3):
                conn.execute(insert(deployments_shapes_instances).values(
                    shape_id=shape, project="default", instance_name=f"web-{n}-{i}",
                    status="ready", created_at=NOW, location=f"member{i}", revision=1,
                    protected=i % 2, hook_deadline=1796094245.25 + i, hook_result="",
                    hook_started=1796094240.125))
            conn.execute(insert(deployments_warm_pool).values(
                shape_id=shape, project="default", instance_name=f"warm-{n}", revision=1,
                status="stopped", created_at=NOW))
            conn.execute(insert(deployments_instance_changes).values(
                deployment_id=deployment, shape_name="frontend", project="default",
                instance_name=f"web-{n}-0", change="deleted", detail='{"by": "lxc"}',
                created_at=NOW))
            conn.execute(insert(deployments_webhook_secrets).values(
                deployment_id=deployment, secret=f"s3cret-{n}", previous_secret="",
                previous_valid_until=1796094245.5, created_at=NOW, rotated_at=""))
            conn.execute(insert(deployments_webhook_deliveries).values(
                uuid=f"00000000-0000-4000-8000-{n:012d}", deployment_id=deployment,
                event_id=f"e{n}", event_type="instance-deleted", payload="{}",
                status="failed" if n % 2 else "delivered", attempts=3, max_attempts=5,
                next_attempt_at=1796094299.75, last_error="timeout",
                last_status_code=None if n % 2 else 502, last_url="https://gov",
                redelivery_of="", created_at=NOW, updated_at=NOW, last_attempt_at=NOW,
                finished_at=NOW))
            conn.execute(insert(audit_log).values(
                created_at=NOW, auth_method="tls", caller_kind="governor",
                identity=f"gov-{n}", fingerprint=f"{n:064x}", deployment_key=f"key-{n}",
                method="POST", path="/1.0/deployments", project="default",
                status_code=201, operation="", error=""))
            pet = conn.execute(insert(pets).values(
                name=f"pet-{n}", description="", member=f"member{n}", cluster_group="",
                schedule="mon-fri 08:00-18:00", lead_time=300, grace_period=60,
                allow_vms=0, notice_for="", reclaimed_for="")).inserted_primary_key[0]
            conn.execute(insert(pets_config).values(pet_id=pet, key="user.a", value="b"))
            conn.execute(insert(units).values(
                unit_id=f"0000000{n}-unit", host="machine-0", pid=1000 + n, started_at=NOW,
                seen_at=1796094245.5 + n))
            conn.execute(insert(operations).values(
                id=f"00000000-0000-4000-9000-{n:012d}", unit=f"0000000{n}-unit",
                owner=None if n % 2 else f"{n:064x}", project="default",
                description="Creating instance", resources='{"instances": ["web-0-0"]}',
                status="Success" if n % 2 else "Running", metadata="{}", err="",
                cancellable=n % 2, cancel_requested=0, created_at=NOW, updated_at=NOW,
                finished_at=1796094250.75 if n % 2 else None))
        # Gaps: the first of each kind is gone (its children with it).
        conn.execute(delete(deployments).where(deployments.c.name == "web-0"))
        conn.execute(delete(certificates).where(certificates.c.name == "gov-0"))
        conn.execute(delete(pets).where(pets.c.name == "pet-0"))
        conn.execute(delete(audit_log).where(audit_log.c.identity == "gov-0"))


def every_row(database: Database) -> dict[str, list[tuple]]:
    """Each copied table's rows in primary key order."""
    with database.read() as conn:
        return {table.name: [tuple(r) for r in conn.execute(
                    select(table).order_by(*table.primary_key.columns))]
                for table in copied_tables()}
