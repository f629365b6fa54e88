"""Bulk loading of generated rows: COPY on PostgreSQL, executemany on SQLite.

Generators yield ``Batch``es in an order that respects foreign keys; this
writer appends each to its table as fast as the backend allows, inside one
transaction, so that a failed load leaves nothing half-written.

* PostgreSQL: ``COPY table (columns) FROM STDIN`` through psycopg 3's
  ``cursor.copy``, fed with ``write_row`` (adaptation done in C).
* SQLite: one prepared ``INSERT`` run with ``executemany`` per batch, with
  the journal and fsync switched off for the load (the file is either
  complete at commit or can be regenerated from the seed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from sync.demo.synthetic import Batch


class BulkWriter:
    """Appends batches to tables over one SQLAlchemy connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.counts: dict[str, int] = {}
        self._inserts: dict[str, str] = {}
        if self.dialect == "postgresql":
            # Instants are written as naive UTC text; make the server read them so.
            conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            conn.exec_driver_sql("SET synchronous_commit = off")
        elif self.dialect == "sqlite":
            for pragma in (
                "journal_mode = OFF",
                "synchronous = OFF",
                "cache_size = -200000",
                "temp_store = MEMORY",
            ):
                conn.exec_driver_sql(f"PRAGMA {pragma}")
        else:
            raise ValueError(f"demo data supports postgresql and sqlite, not {self.dialect}")

    def write_all(self, batches: Iterable[Batch]) -> dict[str, int]:
        for batch in batches:
            self.write(batch)
        return self.counts

    def write(self, batch: Batch) -> None:
        if not batch.rows:
            return
        if self.dialect == "postgresql":
            self._copy(batch)
        else:
            self._insert(batch)
        name = batch.table.name
        self.counts[name] = self.counts.get(name, 0) + len(batch.rows)

    def _columns(self, table: sa.Table) -> str:
        quote = self.conn.dialect.identifier_preparer.quote
        return ", ".join(quote(c.name) for c in table.columns)

    def _copy(self, batch: Batch) -> None:
        table = batch.table
        quote = self.conn.dialect.identifier_preparer.quote
        raw: Any = self.conn.connection.driver_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {quote(table.name)} ({self._columns(table)}) FROM STDIN") as copy,
        ):
            for row in batch.rows:
                copy.write_row(row)

    def _insert(self, batch: Batch) -> None:
        table = batch.table
        sql = self._inserts.get(table.name)
        if sql is None:
            quote = self.conn.dialect.identifier_preparer.quote
            marks = ", ".join("?" for _ in table.columns)
            sql = f"INSERT INTO {quote(table.name)} ({self._columns(table)}) VALUES ({marks})"
            self._inserts[table.name] = sql
        self.conn.exec_driver_sql(sql, list(batch.rows))
