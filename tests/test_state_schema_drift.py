"""The state store's table definitions against the schema its migrations create.

The schema is created by the ``.sql`` files of ``sync/state/migrations/``; the
``Table`` objects of ``sync/state/tables.py`` only describe it for SQLAlchemy
queries, and nothing else ties the two. Here a fresh database (a SQLite file,
a fresh PostgreSQL schema; ``CI=true`` does not let the PostgreSQL half skip)
is migrated, reflected and compared with the definitions: same tables,
columns, column types (by kind: text, integer, boolean, timestamp), nullability,
primary keys, unique constraints and indexes.

How it fails: a new migration ``0010_push_note.sql`` holding

    ALTER TABLE push ADD COLUMN note TEXT;

without ``sa.Column("note", sa.Text)`` in ``push`` makes
``test_tables_match_migrations`` fail with

    push.note: created by the migrations, not in sync/state/tables.py

(``test_a_column_added_only_to_a_migration_is_caught`` does exactly that, and
``test_every_kind_of_drift_is_reported`` drifts a copy of the definitions).

Compared sensibly, not literally: SQLite has no timestamp type, so the
migrations' ``{{timestamp}}`` is TEXT there and ``UtcDateTime`` columns are
expected as text; PostgreSQL's BIGINT identity is an integer like
``sa.Integer``. The nullability of primary-key columns is checked through the
primary key (SQLite reports ``email TEXT PRIMARY KEY`` as nullable).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync.state.store import StateStore
from sync.state.tables import metadata

TABLES = "sync/state/tables.py"
MIGRATIONS = "the migrations"


def column_kind(type_: sa.types.TypeEngine[Any], dialect: str) -> str:
    """The kind of a column type on ``dialect``: what both sides must agree on."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, sa.Integer):
        return "integer"
    if isinstance(type_, sa.DateTime):
        # SQLite has no timestamp type: instants are stored as text there.
        if dialect == "sqlite":
            return "text"
        return "timestamp with time zone" if type_.timezone else "timestamp"
    if isinstance(type_, sa.String):
        return "text"
    return type(type_).__name__


def _columns(names: Any) -> tuple[str, ...]:
    return tuple(str(name) for name in names)


def _compare_columns(
    table: sa.Table, reflected: list[Any], dialect: str, primary_key: set[str]
) -> list[str]:
    drift: list[str] = []
    found = {str(column["name"]): column for column in reflected}
    for name in sorted(set(found) - set(table.c.keys())):
        drift.append(f"{table.name}.{name}: created by {MIGRATIONS}, not in {TABLES}")
    for column in table.columns:
        db = found.get(column.name)
        if db is None:
            drift.append(f"{table.name}.{column.name}: in {TABLES}, not created by {MIGRATIONS}")
            continue
        ours, theirs = column_kind(column.type, dialect), column_kind(db["type"], dialect)
        if ours != theirs:
            drift.append(
                f"{table.name}.{column.name}: {ours} in {TABLES}, {theirs} in {MIGRATIONS}"
            )
        in_key = column.name in primary_key or column.primary_key
        if not in_key and bool(column.nullable) != bool(db["nullable"]):
            drift.append(
                f"{table.name}.{column.name}: nullable={column.nullable} in {TABLES},"
                f" nullable={db['nullable']} in {MIGRATIONS}"
            )
    return drift


def _compare_keys(table: sa.Table, inspector: sa.Inspector) -> list[str]:
    drift: list[str] = []
    ours_pk = _columns(c.name for c in table.primary_key.columns)
    theirs_pk = _columns(inspector.get_pk_constraint(table.name)["constrained_columns"])
    if ours_pk != theirs_pk:
        drift.append(
            f"{table.name}: primary key {ours_pk} in {TABLES}, {theirs_pk} in {MIGRATIONS}"
        )
    ours_unique = {
        (str(c.name), _columns(col.name for col in c.columns))
        for c in table.constraints
        if isinstance(c, sa.UniqueConstraint)
    }
    theirs_unique = {
        (str(c["name"]), _columns(c["column_names"]))
        for c in inspector.get_unique_constraints(table.name)
    }
    ours_index = {
        (str(i.name), _columns(col.name for col in i.columns), bool(i.unique))
        for i in table.indexes
    }
    theirs_index = {
        (str(i["name"]), _columns(i["column_names"]), bool(i["unique"]))
        for i in inspector.get_indexes(table.name)
        # PostgreSQL lists the index behind a unique constraint too.
        if not i.get("duplicates_constraint")
    }
    for what, ours, theirs in (
        ("unique constraint", ours_unique, theirs_unique),
        ("index", ours_index, theirs_index),
    ):
        for item in sorted(ours - theirs):
            drift.append(f"{table.name}: {what} {item} in {TABLES}, not in {MIGRATIONS}")
        for item in sorted(theirs - ours):
            drift.append(f"{table.name}: {what} {item} in {MIGRATIONS}, not in {TABLES}")
    return drift


def schema_drift(described: sa.MetaData, engine: sa.Engine) -> list[str]:
    """How the tables ``described`` differ from the database behind ``engine``
    (its default schema); empty when they agree."""
    inspector = sa.inspect(engine)
    dialect = engine.dialect.name
    drift: list[str] = []
    existing = set(inspector.get_table_names())
    for name in sorted(existing - set(described.tables)):
        drift.append(f"{name}: a table created by {MIGRATIONS}, not in {TABLES}")
    for name, table in sorted(described.tables.items()):
        if name not in existing:
            drift.append(f"{name}: a table in {TABLES}, not created by {MIGRATIONS}")
            continue
        primary_key = set(inspector.get_pk_constraint(name)["constrained_columns"])
        drift += _compare_columns(table, inspector.get_columns(name), dialect, primary_key)
        drift += _compare_keys(table, inspector)
    return drift


@pytest.fixture
def migrated(db_url: str) -> Iterator[StateStore]:
    """A fresh database with every migration applied."""
    store = StateStore(db_url)
    store.migrate()
    yield store
    store.close()


def test_tables_match_migrations(migrated: StateStore) -> None:
    assert schema_drift(metadata, migrated.engine) == []


def test_a_column_added_only_to_a_migration_is_caught(migrated: StateStore) -> None:
    with migrated.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE push ADD COLUMN note TEXT")
    assert schema_drift(metadata, migrated.engine) == [
        f"push.note: created by {MIGRATIONS}, not in {TABLES}"
    ]


def test_a_table_created_only_by_a_migration_is_caught(migrated: StateStore) -> None:
    with migrated.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE member_note (email TEXT PRIMARY KEY)")
    assert schema_drift(metadata, migrated.engine) == [
        f"member_note: a table created by {MIGRATIONS}, not in {TABLES}"
    ]


def test_an_index_created_only_by_a_migration_is_caught(migrated: StateStore) -> None:
    with migrated.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX push_reason ON push (reason)")
    assert schema_drift(metadata, migrated.engine) == [
        f"push: index ('push_reason', ('reason',), False) in {MIGRATIONS}, not in {TABLES}"
    ]


def _drifted() -> sa.MetaData:
    """The definitions, with ``watermark`` drifted every way the test checks
    and a table the migrations never create."""
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        if table.name != "watermark":
            table.to_metadata(drifted)
    sa.Table(
        "watermark",
        drifted,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Integer, primary_key=True),  # TEXT, not in the key
        sa.Column("updated_at", sa.DateTime(timezone=True)),  # NOT NULL
        sa.Column("note", sa.Text),  # no such column
        sa.Index("watermark_value", "value"),  # no such index
        sa.UniqueConstraint("value", name="watermark_value_key"),  # nor constraint
    )
    sa.Table("ghost", drifted, sa.Column("id", sa.Integer, primary_key=True))
    return drifted


def test_every_kind_of_drift_is_reported(migrated: StateStore) -> None:
    drift = schema_drift(_drifted(), migrated.engine)
    assert drift == [
        f"ghost: a table in {TABLES}, not created by {MIGRATIONS}",
        f"watermark.value: integer in {TABLES}, text in {MIGRATIONS}",
        f"watermark.updated_at: nullable=True in {TABLES}, nullable=False in {MIGRATIONS}",
        f"watermark.note: in {TABLES}, not created by {MIGRATIONS}",
        f"watermark: primary key ('name', 'value') in {TABLES}, ('name',) in {MIGRATIONS}",
        f"watermark: unique constraint ('watermark_value_key', ('value',)) in {TABLES},"
        f" not in {MIGRATIONS}",
        f"watermark: index ('watermark_value', ('value',), False) in {TABLES}, not in {MIGRATIONS}",
    ]


@pytest.mark.parametrize(
    ("type_", "sqlite", "postgresql"),
    [
        (sa.Text(), "text", "text"),
        (sa.String(20), "text", "text"),
        (sa.Integer(), "integer", "integer"),
        (sa.BigInteger(), "integer", "integer"),
        (sa.Boolean(), "boolean", "boolean"),
        (sa.DateTime(timezone=True), "text", "timestamp with time zone"),
        (sa.DateTime(), "text", "timestamp"),
    ],
)
def test_column_kinds(type_: sa.types.TypeEngine[Any], sqlite: str, postgresql: str) -> None:
    assert column_kind(type_, "sqlite") == sqlite
    assert column_kind(type_, "postgresql") == postgresql
