"""The state store's connection to its database, shared by every concern.

Opens the engine (a SQLite file by default, or PostgreSQL, possibly in a schema
of its own), applies the migrations, and writes in bulk: one transaction per
call, ``INSERT .. ON CONFLICT`` with the rows sent by the driver's
executemany on SQLite and by ``COPY`` on PostgreSQL (``stage``). The concerns of
the store (``sync.state.entities``, ``ledger``, ``events``...) extend
``StoreBase``; ``sync.state.store.StateStore`` gathers them.
"""

from __future__ import annotations

import hashlib
import operator
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from sync.database_faults import driver_errors, label_engine
from sync.exceptions import ConfigurationError
from sync.records import require_aware
from sync.state.migrate import PLACEHOLDERS, applied_versions, apply_migrations
from sync.state.tables import UtcDateTime

DEFAULT_SQLITE_FILE = "mailsync-state.sqlite"

#: Rows per executemany / IN list; keeps SQLite under its parameter limit.
CHUNK = 500

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def utc_now() -> datetime:
    return datetime.now(UTC)


def names(columns: Iterable[str]) -> str:
    """Column names, quoted, for SQL written here."""
    return ", ".join(f'"{c}"' for c in columns)


def placeholder(dialect: str) -> str:
    """The driver's parameter mark, for SQL handed to it directly
    (``exec_driver_sql``): sqlite3's ``?``, psycopg's ``%s``."""
    return "?" if dialect == "sqlite" else "%s"


def stage(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> str:
    """PostgreSQL: write ``rows`` (values of ``columns`` of ``table``, in that
    order) by ``COPY`` into a temporary table of this connection's session,
    and return its name, for a statement that reads it (``INSERT .. SELECT``,
    ``UPDATE .. FROM``, ``DELETE .. USING``) in the same transaction.

    The table is created once per session and per column list, and emptied
    at each commit. Through ``COPY`` the driver converts a row in a few
    microseconds; its ``executemany`` took four times the CPU, and the
    server's work per row is less too (benchmarks/README.md, "The state
    store's bulk writes by COPY")."""
    digest = hashlib.sha1(",".join(columns).encode()).hexdigest()[:8]
    name = f"mailsync_stage_{table.name}_{digest}"
    conn.exec_driver_sql(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS'
        f' AS SELECT {names(columns)} FROM "{table.name}" WITH NO DATA'
    )
    # Emptied first: it may have been filled earlier in this transaction.
    conn.exec_driver_sql(f'DELETE FROM "{name}"')
    statement = f'COPY "{name}" ({names(columns)}) FROM STDIN'
    with driver_errors(conn, statement):
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
    return name


class StoreBase:
    """The engine and the bulk writes; ``migrate()`` once before use (idempotent)."""

    def __init__(self, url: str | None = None, *, schema: str | None = None) -> None:
        self.url = url or f"sqlite:///{DEFAULT_SQLITE_FILE}"
        self.engine = sa.create_engine(self.url)
        # Its errors then name this file or URL, and say retriable or fatal.
        label_engine(self.engine, "state store")
        self.dialect = self.engine.dialect.name
        if self.dialect not in PLACEHOLDERS:
            raise ConfigurationError(
                f"state store: unsupported database {self.dialect!r} "
                "(use sqlite:///FILE or postgresql+psycopg://...)"
            )
        self.schema = schema
        #: (table, columns, keys, merged columns, keep) -> upsert statement, converters
        self._statements: dict[
            tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...], bool],
            tuple[str, str, list[Callable[[Any], Any]]],
        ] = {}
        if schema is not None:
            if self.dialect != "postgresql":
                raise ConfigurationError("state store: a schema can only be set on PostgreSQL")
            if not _IDENTIFIER.match(schema):
                raise ConfigurationError(f"state store: invalid schema name {schema!r}")
            self._use_schema(schema)
        if self.dialect == "sqlite":
            self._real_sqlite_transactions()

    def __repr__(self) -> str:
        # The URL may carry a password: show the backend only.
        return f"StateStore(dialect={self.dialect!r}, schema={self.schema!r})"

    def close(self) -> None:
        self.engine.dispose()

    @property
    def shared_across_threads(self) -> bool:
        """Whether every thread of this process sees the same database: not
        so for an in-memory SQLite database, one per connection."""
        database = self.engine.url.database
        return self.dialect != "sqlite" or database not in (None, "", ":memory:")

    # -- setup -------------------------------------------------------------

    def _use_schema(self, schema: str) -> None:
        # The listener goes first, so that no pooled connection escapes it.
        @sa.event.listens_for(self.engine, "connect", insert=True)
        def _set_search_path(dbapi_conn: Any, _record: Any) -> None:
            # Outside a transaction, so that it lasts for the whole session.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            with dbapi_conn.cursor() as cursor:
                cursor.execute(f'SET SESSION search_path TO "{schema}"')
            dbapi_conn.autocommit = autocommit

        with self.engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

    def _real_sqlite_transactions(self) -> None:
        # pysqlite does not BEGIN before DDL; take transactions over so that a
        # migration (DDL + its schema_version row) is all or nothing.
        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA busy_timeout = 10000")

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def migrate(self, *, up_to: int | None = None) -> list[int]:
        """Apply the migrations not applied yet (up to version ``up_to``),
        each in its own transaction; returns the versions applied now."""
        if self.dialect == "sqlite":
            self._require_sqlite_json()
        return apply_migrations(self.engine, up_to=up_to)

    def _require_sqlite_json(self) -> None:
        # Members' merge values are JSON objects merged by json_patch: built
        # into SQLite since 3.38, and into most builds since 3.9 (JSON1).
        with self.engine.connect() as conn:
            try:
                conn.exec_driver_sql("SELECT json_patch('{}', '{}')")
            except sa.exc.OperationalError as error:
                raise ConfigurationError(
                    f"state store {self.url}: this Python's SQLite ({sqlite3.sqlite_version})"
                    " has no JSON functions (json_patch), which the state store needs;"
                    " use a Python built with SQLite 3.38 or later, or a PostgreSQL state store"
                ) from error

    def schema_versions(self) -> list[int]:
        return applied_versions(self.engine)

    # -- helpers -------------------------------------------------------------

    @cached_property
    def ids_per_statement(self) -> int:
        """Ids per ``IN`` list: 5,000, or fewer when the SQLite library
        allows fewer parameters (999 before SQLite 3.32)."""
        if self.dialect != "sqlite":
            return 5000
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return min(5000, limit - 1)

    @staticmethod
    def _has_rows(conn: sa.Connection, table: sa.Table) -> bool:
        """Whether ``table`` holds any row: look-ups by ``IN`` lists of
        thousands of ids are skipped on an empty table (going live at 1M
        users, thousands of queries that find nothing)."""
        one = sa.select(sa.literal(1)).select_from(table).limit(1)
        return conn.execute(one).first() is not None

    def _among(self, column: sa.Column[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """``column IN values``, for the look-ups by lists of thousands of
        addresses or ids. On PostgreSQL, one array parameter (``= ANY``): an
        ``IN`` list there is a parameter per value, rendered by SQLAlchemy
        and parsed again by psycopg at every statement: a fifth of the
        daemon's CPU in a profile of its benchmark at 100k users, most of it
        going live (benchmarks/README.md, "Look-ups by one array
        parameter")."""
        if self.dialect == "postgresql":
            array = sa.bindparam(None, list(values), type_=pg_dialect.ARRAY(column.type))
            return column == sa.any_(array)
        return column.in_(values)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    def _upsert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
        *,
        merge: Mapping[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        """Insert or update ``rows``. Rows sharing a key are collapsed (the last
        wins) first: PostgreSQL refuses to touch one row twice in one statement.
        A stored row takes the new values, except the columns of ``merge``,
        which take its SQL expression (of the stored row and ``excluded``);
        with ``keep``, a stored row stays as it is (the first write wins).

        The statement is rendered once per (table, columns) and the values
        converted here, then handed to the driver: on SQLite to its
        ``executemany`` (through SQLAlchemy's per-row parameter processing,
        recording what Mailchimp accepted for 10,000 new members took several
        seconds), on PostgreSQL to ``COPY`` (``stage``) and one statement."""
        if not rows:
            return
        key_of = operator.itemgetter(*keys)
        unique = list({key_of(row): row for row in rows}.values())
        columns = tuple(unique[0])
        merged = tuple(sorted((merge or {}).items()))
        into, conflict, converters = self._upsert_statement(
            table, columns, tuple(keys), merged, keep
        )
        # Column by column (a comprehension per column, not a call per cell).
        # Most instants of one call are the same (the instant of the push):
        # each distinct one is converted once.
        instants: dict[Any, Any] = {}
        by_column: list[list[Any]] = []
        for c, convert in zip(columns, converters, strict=True):
            raw = [row[c] for row in unique]
            if convert is not _same:
                for v in set(raw) - instants.keys():
                    instants[v] = convert(v)
                raw = [instants[v] for v in raw]
            by_column.append(raw)
        values = list(zip(*by_column, strict=True))
        if self.dialect == "postgresql":
            staged = stage(conn, table, columns, values)
            conn.exec_driver_sql(f'{into} SELECT {names(columns)} FROM "{staged}" {conflict}')
            return
        marks = ", ".join([placeholder(self.dialect)] * len(columns))
        for chunk in chunks(values, 5000):
            conn.exec_driver_sql(f"{into} VALUES ({marks}) {conflict}", list(chunk))

    def _upsert_statement(
        self,
        table: sa.Table,
        columns: tuple[str, ...],
        keys: tuple[str, ...],
        merge: tuple[tuple[str, str], ...],
        keep: bool = False,
    ) -> tuple[str, str, list[Callable[[Any], Any]]]:
        """The upsert of ``columns`` of ``table`` in two parts, ``INSERT INTO``
        and ``ON CONFLICT``, for its rows to go between them (``VALUES``, or a
        ``SELECT`` of a staged table); and the converters of the values."""
        cache_key = (table.name, columns, keys, merge, keep)
        cached = self._statements.get(cache_key)
        if cached is None:
            conflict = ", ".join(f'"{k}"' for k in keys)
            new_value = {c: f'excluded."{c}"' for c in columns} | dict(merge)
            updates = ", ".join(f'"{c}" = {new_value[c]}' for c in columns if c not in keys)
            action = f"DO UPDATE SET {updates}" if updates and not keep else "DO NOTHING"
            into = f'INSERT INTO "{table.name}" ({names(columns)})'
            on_conflict = f"ON CONFLICT ({conflict}) {action}"
            converters: list[Callable[[Any], Any]] = [
                self._instant_value if isinstance(table.c[c].type, UtcDateTime) else _same
                for c in columns
            ]
            cached = self._statements[cache_key] = (into, on_conflict, converters)
        return cached

    def _instant_value(self, value: Any) -> Any:
        """An instant as ``UtcDateTime`` stores it: naive UTC text on SQLite
        (SQLAlchemy's storage format, so the table reads back the same),
        an aware UTC datetime on PostgreSQL."""
        if value is None:
            return None
        utc = require_aware(value, "stored instant").astimezone(UTC)
        if self.dialect == "sqlite":
            return utc.replace(tzinfo=None).isoformat(" ", "microseconds")
        return utc
