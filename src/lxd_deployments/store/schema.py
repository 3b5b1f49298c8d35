"""The tables as SQLAlchemy Core sees them, for building queries (migrations create them).

Integers are BigInteger: the models allow 64-bit numbers, and on PostgreSQL (BIGINT
columns) the driver casts each parameter to its column's type here.
"""

from sqlalchemy import BigInteger, Column, Float, ForeignKey, MetaData, Table, Text

metadata = MetaData()

schema_versions = Table(
    "schema",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("applied_at", Text, nullable=False),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("fingerprint", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("certificate", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("project", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("governor_webhook_url", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

deployments_config = Table(
    "deployments_config",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE")),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
)

deployments_keys = Table(
    "deployments_keys",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE")),
    Column("certificate_id", BigInteger, ForeignKey("certificates.id", ondelete="CASCADE")),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("role", Text, nullable=False),
)

deployments_shapes = Table(
    "deployments_shapes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE")),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("instance_template", Text, nullable=False),
    Column("scaling_minimum", BigInteger, nullable=False),
    Column("scaling_maximum", BigInteger, nullable=False),
    Column("template_revision", BigInteger, nullable=False),
)

deployments_shapes_config = Table(
    "deployments_shapes_config",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("shape_id", BigInteger, ForeignKey("deployments_shapes.id", ondelete="CASCADE")),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
)

deployments_placement_groups = Table(
    "deployments_placement_groups",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE")),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("policy", Text, nullable=False),
    Column("rigor", Text, nullable=False),
    Column("max_per_member", BigInteger),
)

deployments_placement_groups_config = Table(
    "deployments_placement_groups_config",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("group_id", BigInteger,
           ForeignKey("deployments_placement_groups.id", ondelete="CASCADE")),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
)

deployments_shapes_instances = Table(
    "deployments_shapes_instances",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("shape_id", BigInteger, ForeignKey("deployments_shapes.id", ondelete="CASCADE")),
    Column("project", Text, nullable=False),
    Column("instance_name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("protected", BigInteger, nullable=False),
    Column("hook_deadline", Float, nullable=False),
    Column("hook_result", Text, nullable=False),
    Column("hook_started", Float, nullable=False),
    Column("unit", Text, nullable=False),
)

deployments_warm_pool = Table(
    "deployments_warm_pool",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("shape_id", BigInteger, ForeignKey("deployments_shapes.id", ondelete="CASCADE")),
    Column("project", Text, nullable=False),
    Column("instance_name", Text, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

deployments_instance_changes = Table(
    "deployments_instance_changes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE"),
           nullable=False),
    Column("shape_name", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("instance_name", Text, nullable=False),
    Column("change", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

deployments_webhook_secrets = Table(
    "deployments_webhook_secrets",
    metadata,
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE"),
           primary_key=True),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=False),
    Column("previous_valid_until", Float, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("rotated_at", Text, nullable=False),
)

deployments_webhook_deliveries = Table(
    "deployments_webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("uuid", Text, nullable=False, unique=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id", ondelete="CASCADE"),
           nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("max_attempts", BigInteger, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("last_status_code", BigInteger),
    Column("last_url", Text, nullable=False),
    Column("redelivery_of", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("last_attempt_at", Text, nullable=False),
    Column("finished_at", Text, nullable=False),
)

event_cursors = Table(
    "event_cursors",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("created_at", Text, nullable=False),
    Column("auth_method", Text, nullable=False),
    Column("caller_kind", Text, nullable=False),
    Column("identity", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("deployment_key", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("status_code", BigInteger, nullable=False),
    Column("operation", Text, nullable=False),
    Column("error", Text, nullable=False),
)

pets = Table(
    "pets",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("member", Text, nullable=False),
    Column("cluster_group", Text, nullable=False),
    Column("schedule", Text, nullable=False),
    Column("lead_time", BigInteger, nullable=False),
    Column("grace_period", BigInteger, nullable=False),
    Column("allow_vms", BigInteger, nullable=False),
    Column("notice_for", Text, nullable=False),
    Column("reclaimed_for", Text, nullable=False),
)

pets_config = Table(
    "pets_config",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("pet_id", BigInteger, ForeignKey("pets.id", ondelete="CASCADE")),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
)

operations = Table(
    "operations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("unit", Text, nullable=False),
    Column("owner", Text),
    Column("project", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("resources", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("err", Text, nullable=False),
    Column("cancellable", BigInteger, nullable=False),
    Column("cancel_requested", BigInteger, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("finished_at", Float),
)

units = Table(
    "units",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("unit_id", Text, nullable=False, unique=True),
    Column("host", Text, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("started_at", Text, nullable=False),
    Column("seen_at", Float, nullable=False),
)

store_identity = Table(
    "store_identity",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("store_id", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

store_copies = Table(
    "store_copies",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("source_store_id", Text, nullable=False, unique=True),
    Column("source", Text, nullable=False),
    Column("schema_version", BigInteger, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("copied_at", Text, nullable=False),
)

event_log = Table(
    "event_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("origin", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

event_listeners = Table(
    "event_listeners",
    metadata,
    Column("process_id", Text, primary_key=True),
    Column("deployment_ids", Text, nullable=True),
    Column("seen_at", Float, nullable=False),
)
