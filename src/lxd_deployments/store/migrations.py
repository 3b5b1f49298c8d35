"""Versioned schema migrations: each step runs once, in order, in its own transaction.

As in LXD's own `updates` list, a step is never edited once released; a new step is
appended instead, so that an upgrade from any earlier version reaches the same schema
without losing rows. `schema.py` describes the result for queries; a test checks
that both agree.
"""

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from sqlalchemy import Connection, text


def _create_initial_schema(conn: Connection) -> None:
    statements = [
        """CREATE TABLE certificates (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fingerprint TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            type TEXT NOT NULL CHECK (type IN ('client', 'deployments')),
            certificate TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE deployments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            governor_webhook_url TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            UNIQUE (project, name)
        )""",
        """CREATE TABLE deployments_config (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            UNIQUE (deployment_id, key)
        )""",
        """CREATE TABLE deployments_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            certificate_id INTEGER NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL CHECK (role IN ('rw', 'ro')),
            UNIQUE (deployment_id, name),
            UNIQUE (deployment_id, certificate_id)
        )""",
        """CREATE TABLE deployments_shapes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            instance_template TEXT NOT NULL,
            scaling_minimum INTEGER NOT NULL CHECK (scaling_minimum >= 0),
            scaling_maximum INTEGER NOT NULL CHECK (scaling_maximum >= scaling_minimum),
            UNIQUE (deployment_id, name)
        )""",
        """CREATE TABLE deployments_shapes_config (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            shape_id INTEGER NOT NULL REFERENCES deployments_shapes (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            UNIQUE (shape_id, key)
        )""",
        """CREATE TABLE deployments_shapes_instances (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            shape_id INTEGER NOT NULL REFERENCES deployments_shapes (id) ON DELETE CASCADE,
            project TEXT NOT NULL,
            instance_name TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (project, instance_name)
        )""",
        "CREATE INDEX deployments_keys_certificate ON deployments_keys (certificate_id)",
        "CREATE INDEX deployments_shapes_instances_shape "
        "ON deployments_shapes_instances (shape_id)",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_instance_changes(conn: Connection) -> None:
    """The change log: what happened to a deployment's instances outside the service's own
    requests (deleted, renamed, stopped or started straight through LXD) or on recovery
    (re-attached, reservations released), kept for the governor to read later."""
    statements = [
        """CREATE TABLE deployments_instance_changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            shape_name TEXT NOT NULL,
            project TEXT NOT NULL,
            instance_name TEXT NOT NULL,
            change TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX deployments_instance_changes_deployment "
        "ON deployments_instance_changes (deployment_id, id)",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_webhooks(conn: Connection) -> None:
    """Webhooks to governors: each deployment's signing secret (the previous one stays
    valid for a grace period after a rotation), the durable delivery queue that is also
    the delivery log, and the change log cursor up to which changes became events."""
    statements = [
        """CREATE TABLE deployments_webhook_secrets (
            deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id) ON DELETE CASCADE,
            secret TEXT NOT NULL,
            previous_secret TEXT NOT NULL DEFAULT '',
            previous_valid_until REAL NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            rotated_at TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE deployments_webhook_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            next_attempt_at REAL NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            last_status_code INTEGER,
            last_url TEXT NOT NULL DEFAULT '',
            redelivery_of TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_attempt_at TEXT NOT NULL DEFAULT '',
            finished_at TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX deployments_webhook_deliveries_due "
        "ON deployments_webhook_deliveries (status, next_attempt_at)",
        "CREATE INDEX deployments_webhook_deliveries_deployment "
        "ON deployments_webhook_deliveries (deployment_id, id)",
        """CREATE TABLE event_cursors (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL
        )""",
        # Changes recorded before this version are history, not news: start after them.
        "INSERT INTO event_cursors (name, position) "
        "SELECT 'instance-changes', coalesce(max(id), 0) FROM deployments_instance_changes",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_audit_log(conn: Connection) -> None:
    """The audit log: every change asked of the API (and every refused attempt by an
    authenticated caller), who asked (how they authenticated, their certificate, the
    deployment key used) and how it ended (HTTP status, operation). Never a body, a
    key or a token."""
    statements = [
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            auth_method TEXT NOT NULL,
            caller_kind TEXT NOT NULL,
            identity TEXT NOT NULL,
            fingerprint TEXT NOT NULL DEFAULT '',
            deployment_key TEXT NOT NULL DEFAULT '',
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            project TEXT NOT NULL DEFAULT '',
            status_code INTEGER NOT NULL,
            operation TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT ''
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_instance_location(conn: Connection) -> None:
    """Where each instance lives in a clustered LXD (the cluster member's name; empty when
    LXD is not clustered or it is not known yet), so that new instances of a shape are
    spread over the members by their count of that shape's instances."""
    conn.execute(text("ALTER TABLE deployments_shapes_instances "
                      "ADD COLUMN location TEXT NOT NULL DEFAULT ''"))


def _add_placement_groups(conn: Connection) -> None:
    """Placement groups (assigned migration 8): a deployment's affinity (`compact`) and
    anti-affinity (`spread`) rules over cluster members, which shapes join with their
    `placement.group` config key. `max_per_member` is NULL when not set (1 applies to
    spread groups then)."""
    statements = [
        """CREATE TABLE deployments_placement_groups (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            policy TEXT NOT NULL CHECK (policy IN ('spread', 'compact')),
            rigor TEXT NOT NULL CHECK (rigor IN ('strict', 'permissive')),
            max_per_member INTEGER CHECK (max_per_member IS NULL OR max_per_member >= 1),
            UNIQUE (deployment_id, name)
        )""",
        """CREATE TABLE deployments_placement_groups_config (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            group_id INTEGER NOT NULL REFERENCES deployments_placement_groups (id)
                ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            UNIQUE (group_id, key)
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))


_CERTIFICATE_TYPES_V9 = "('client', 'deployments', 'metrics')"


def _add_metrics_certificates(conn: Connection) -> None:
    """Migration 7: certificates of type `metrics`, which may only scrape `/1.0/metrics`.

    PostgreSQL changes the CHECK in place. SQLite cannot, and rebuilding `certificates`
    would cascade (or re-point) the keys' foreign keys; a CHECK that only admits more
    values changes nothing stored, so the table's definition is edited in the schema
    table, as SQLite's own ALTER TABLE documentation describes for such changes."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE certificates DROP CONSTRAINT IF EXISTS "
                          "certificates_type_check"))
        conn.execute(text("ALTER TABLE certificates ADD CONSTRAINT certificates_type_check "
                          f"CHECK (type IN {_CERTIFICATE_TYPES_V9})"))
        return
    old = "CHECK (type IN ('client', 'deployments'))"
    new = f"CHECK (type IN {_CERTIFICATE_TYPES_V9})"
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        conn.exec_driver_sql("UPDATE sqlite_master SET sql = replace(sql, ?, ?) "
                             "WHERE type = 'table' AND name = 'certificates'", (old, new))
        conn.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema=OFF")
    if new not in conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                       "AND name = 'certificates'").scalar_one():
        raise RuntimeError("migration 7: the certificates table has an unexpected definition")


def _add_lifecycle(conn: Connection) -> None:
    """Lifecycle (migration 8): template revisions (a shape's counter, bumped
    by every template change, and the one each instance was made from), scale-in
    protection per instance, the terminating/launching hook's deadline (epoch seconds)
    and answer and start, and the warm pool's stopped instances (not records of the shape: they
    do not count towards its bounds)."""
    statements = [
        "ALTER TABLE deployments_shapes "
        "ADD COLUMN template_revision INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE deployments_shapes_instances "
        "ADD COLUMN revision INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE deployments_shapes_instances "
        "ADD COLUMN protected INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deployments_shapes_instances "
        "ADD COLUMN hook_deadline REAL NOT NULL DEFAULT 0",
        "ALTER TABLE deployments_shapes_instances "
        "ADD COLUMN hook_result TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE deployments_shapes_instances "
        "ADD COLUMN hook_started REAL NOT NULL DEFAULT 0",
        """CREATE TABLE deployments_warm_pool (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            shape_id INTEGER NOT NULL REFERENCES deployments_shapes (id) ON DELETE CASCADE,
            project TEXT NOT NULL,
            instance_name TEXT NOT NULL,
            revision INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (project, instance_name)
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_pets(conn: Connection) -> None:
    """Pets (issue 17): cluster members (or an LXD cluster group) lent to governors while
    their weekly schedule leaves them idle. `notice_for` and `reclaimed_for` hold the
    start (UTC, ISO) of the busy window whose notice was sent and whose reclaim ended,
    so a restart in the middle of either resumes it rather than starting over."""
    statements = [
        """CREATE TABLE pets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            member TEXT NOT NULL DEFAULT '',
            cluster_group TEXT NOT NULL DEFAULT '',
            schedule TEXT NOT NULL,
            lead_time INTEGER NOT NULL CHECK (lead_time >= 0),
            grace_period INTEGER NOT NULL CHECK (grace_period >= 0),
            allow_vms INTEGER NOT NULL DEFAULT 0,
            notice_for TEXT NOT NULL DEFAULT '',
            reclaimed_for TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE pets_config (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pet_id INTEGER NOT NULL REFERENCES pets (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            UNIQUE (pet_id, key)
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_operations_and_units(conn: Connection) -> None:
    """Several service processes (units, workers) share one store (issue 14): operations
    live here so that any process reads, waits on and cancels them; `units` lists the
    processes (their liveness is a lock each holds, see `store/presence.py`); and an
    instance record names the process whose launch or delete holds it `pending` or
    `deleting` (`unit`, "" before this step), so that recovery settles only the records
    of processes that died."""
    statements = [
        """CREATE TABLE operations (
            id TEXT PRIMARY KEY,
            unit TEXT NOT NULL,
            owner TEXT,
            project TEXT NOT NULL,
            description TEXT NOT NULL,
            resources TEXT NOT NULL,
            status TEXT NOT NULL,
            metadata TEXT NOT NULL,
            err TEXT NOT NULL DEFAULT '',
            cancellable INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at REAL
        )""",
        "CREATE INDEX operations_unit ON operations (unit, finished_at)",
        "CREATE INDEX operations_finished ON operations (finished_at)",
        """CREATE TABLE units (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            unit_id TEXT NOT NULL UNIQUE,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            seen_at REAL NOT NULL
        )""",
        "ALTER TABLE deployments_shapes_instances ADD COLUMN unit TEXT NOT NULL DEFAULT ''",
    ]
    for statement in statements:
        conn.execute(text(statement))


def _add_store_identity(conn: Connection) -> None:
    """The store's own identity, and the record of a store copied into it (copy-store).

    `store_identity` holds one row (id 1): a UUID made when the store is created (or
    first migrated to this version), naming this store and no other, even when several
    stores belong to one application (its units' SQLite stores). `store_copies` is the
    marker copy-store writes in the same transaction as the rows it copies: the source
    store's identity, so that running it again is a no-op, and another store's copy is
    told apart from ours. It is written only into an empty store, so it holds one row
    at most."""
    statements = [
        """CREATE TABLE store_identity (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            store_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE store_copies (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source_store_id TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            row_count INTEGER NOT NULL,
            copied_at TEXT NOT NULL
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))
    conn.execute(text("INSERT INTO store_identity (id, store_id, created_at) "
                      "VALUES (1, :store_id, :created_at)"),
                 {"store_id": str(uuid.uuid4()),
                  "created_at": datetime.now(timezone.utc).isoformat()})


def _add_event_log(conn: Connection) -> None:
    """The events of every process sharing the store, for each other's events streams
    (issue 14): a process appends what it publishes, every process tails what the others
    appended. `origin` is the publishing process and `seq` its own count of what it
    logged (the order it published in); `kind` says `event`, `operation` or
    `access` (an access was narrowed: streams check their caller again). Pruned by age
    and row count. `event_listeners` says which deployments each process has stream
    clients for, so a publisher logs only what some other process's client may want."""
    statements = [
        """CREATE TABLE event_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            origin TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX event_log_created_at ON event_log (created_at)",
        """CREATE TABLE event_listeners (
            process_id TEXT PRIMARY KEY,
            deployment_ids TEXT,
            seen_at REAL NOT NULL
        )""",
    ]
    for statement in statements:
        conn.execute(text(statement))


# Index + 1 is the schema version a step brings the store to.
MIGRATIONS: Sequence[Callable[[Connection], None]] = (
    _create_initial_schema,
    _add_instance_changes,
    _add_webhooks,
    _add_audit_log,
    _add_instance_location,
    _add_placement_groups,
    _add_metrics_certificates,
    _add_lifecycle,
    _add_pets,
    _add_operations_and_units,
    _add_store_identity,
    _add_event_log,
)

SCHEMA_VERSION = len(MIGRATIONS)
