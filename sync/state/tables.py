"""The state store's tables, described for SQLAlchemy Core queries.

The schema itself is created by the versioned ``.sql`` files in
``sync/state/migrations/`` (``sync.state.migrate`` applies them); these
``Table`` objects only describe it, and ``tests/test_state_schema_drift.py``
checks that the two say the same (tables, columns, types, nullability, keys,
indexes) on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from sync.records import require_aware


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no timezone-aware type: values are stored as naive UTC text (whose
    lexicographic order is chronological), and given back their UTC offset.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        utc = require_aware(value, "stored instant").astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)
entity_state = sa.Table(
    "entity_state",
    metadata,
    sa.Column("entity_type", sa.Text, primary_key=True),
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("base_status", sa.Text),
    sa.Column("base_entered_at", UtcDateTime),
    sa.Column("status_since", UtcDateTime),
    sa.Column("next_change_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    #: The evaluation as one text (``evaluation_digest``): the cycle compares it.
    sa.Column("eval_fp", sa.Text),
    #: Digest of the member contribution (merge fields, tags) Mailchimp last
    #: accepted from this entity; the cycle pushes when it differs.
    sa.Column("pushed_fp", sa.Text),
    #: Digest of the compiled SQL's row when the entity was last settled: a
    #: full pass that gets the same one leaves the entity alone.
    sa.Column("row_fp", sa.Text),
    sa.Index("entity_state_next_change_at", "next_change_at"),
    sa.Index("entity_state_due", "entity_type", "next_change_at"),
    sa.Index("entity_state_status", "entity_type", "status"),
    sa.Index("entity_state_email", "email"),
)
entity_baseline = sa.Table(
    "entity_baseline",
    metadata,
    sa.Column("entity_type", sa.Text, primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("entered_at", UtcDateTime, nullable=False),
)
reinit_generation = sa.Table(
    "reinit_generation",
    metadata,
    sa.Column("entity_type", sa.Text, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("reinit_at", UtcDateTime, nullable=False),
    sa.Column("committed_at", UtcDateTime, nullable=False),
)
member = sa.Table(
    "member",
    metadata,
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("pushed_at", UtcDateTime, nullable=False),
    # Merge tag -> the value Mailchimp last accepted, as one JSON object.
    sa.Column("fields_json", sa.Text, nullable=False, server_default="{}"),
)
member_tag = sa.Table(
    "member_tag",
    metadata,
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Column("pushed_at", UtcDateTime, nullable=False),
)
push = sa.Table(
    "push",
    metadata,
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("permanent", sa.Boolean, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failed_at", UtcDateTime, nullable=False),
    sa.Column("next_retry_at", UtcDateTime),
    sa.Index("push_state", "state", "permanent"),
)
event_sent = sa.Table(
    "event_sent",
    metadata,
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("event_key", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=False),
    sa.Column("signature", sa.Text),
    sa.UniqueConstraint("email", "event_key", name="event_sent_email_key"),
)
event_pending = sa.Table(
    "event_pending",
    metadata,
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("event_key", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("properties_json", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
)
# Version 13: ``/batches`` jobs a cycle left running (sync.state.jobs).
batch_running = sa.Table(
    "batch_running",
    metadata,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("operation_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("plan_json", sa.Text, nullable=False),
    sa.Column("submitted_at", UtcDateTime, nullable=False),
    sa.Index("batch_running_email", "email"),
)
audience_problem = sa.Table(
    "audience_problem",
    metadata,
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("members", sa.Integer, nullable=False),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
)
cycle = sa.Table(
    "cycle",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("ok", sa.Boolean),
    sa.Column("counts_json", sa.Text),
)
watermark = sa.Table(
    "watermark",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Version 7: what changed on Mailchimp's side (sync/mailchimp/changes.py).
mailchimp_member = sa.Table(
    "mailchimp_member",
    metadata,
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("status", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status_at", UtcDateTime),
    sa.Column("merges_json", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index("mailchimp_member_status", "status", "status_at"),
)
mailchimp_alias = sa.Table(
    "mailchimp_alias",
    metadata,
    sa.Column("old_email", sa.Text, primary_key=True),
    sa.Column("new_email", sa.Text, nullable=False),
    sa.Column("moved_at", UtcDateTime, nullable=False),
)
mailchimp_change = sa.Table(
    "mailchimp_change",
    metadata,
    sa.Column("change_key", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("old_email", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("fired_at", UtcDateTime, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index("mailchimp_change_email", "email", "fired_at"),
)

entity_link = sa.Table(
    "entity_link",
    metadata,
    sa.Column("dependent_type", sa.Text, primary_key=True),
    sa.Column("dependent_id", sa.Text, primary_key=True),
    sa.Column("dependency_type", sa.Text, primary_key=True),
    sa.Column("dependency_id", sa.Text, primary_key=True),
    sa.Index("entity_link_dependency", "dependency_type", "dependency_id"),
)

# The dashboard's history (migration 0008, written by sync.daemon.history).
status_history = sa.Table(
    "status_history",
    metadata,
    sa.Column("entity_type", sa.Text, primary_key=True),
    sa.Column("resolution", sa.Text, primary_key=True),
    sa.Column("bucket", UtcDateTime, primary_key=True),
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
transition_history = sa.Table(
    "transition_history",
    metadata,
    sa.Column("entity_type", sa.Text, primary_key=True),
    sa.Column("resolution", sa.Text, primary_key=True),
    sa.Column("bucket", UtcDateTime, primary_key=True),
    sa.Column("from_status", sa.Text, primary_key=True),
    sa.Column("to_status", sa.Text, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# The leader lease (migration 0003), written by sync.daemon.lock with its own
# SQL; described here so that the whole schema is in one place.
leader_lease = sa.Table(
    "leader_lease",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
)
