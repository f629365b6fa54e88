"""Each query of a read as a sorted stream of (entity id, payload).

Every query is wrapped as ``SELECT * FROM (<query>) AS q [WHERE id IN
:ids] ORDER BY id`` and streamed (server-side cursor on PostgreSQL,
``yield_per`` everywhere), so each query is a sorted stream of rows; its
values are converted to facts as they come (``sync.sources.values``), an
unusable one counted in the read's report. ``sync.sources.merge`` merges the
streams into records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from sync.records import FactValue
from sync.sources.model import Column, EntitySource, Query, RelationSource
from sync.sources.report import ReadReport
from sync.sources.rollups import RelationRow
from sync.sources.sessions import ReadOnlyDatabase, SourceQueryError, guarded_rows
from sync.sources.values import convert, to_utc

#: An entity id as compared while merging: ``int`` for ``id_type: integer``,
#: ``str`` for ``text``; one type per entity type, never mixed.
Key = Any


@dataclass(frozen=True)
class Stream:
    """One query as a sorted stream of (key, payload)."""

    label: str
    rows: Iterator[tuple[Key, Any]]


class BadId(ValueError):
    """A row's id that cannot name an entity of its type; the row is skipped."""


def entity_key(source: EntitySource, value: Any, query: Query) -> Key:
    """A row's id as the merge compares it (``int`` or ``str``, per ``id_type``).

    ``BadId`` when it cannot be one: null, not an integer, or an integer
    not written as one (``'007'``, ``' 7'``), which would otherwise be
    merged with the entity ``7``.
    """
    if value is None:
        raise BadId("null id")
    if source.id_type == "text":
        return value if isinstance(value, str) else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        key = int(value)
        if str(key) == value:
            return key
        raise BadId(
            f"id {value!r} is not written as the integer {key} (it would be merged with "
            f"entity {key}); fix the row, or set id_type: text for this entity"
        )
    raise BadId(f"id {value!r} is not an integer; set id_type: text for this entity")


def _keyed(source: EntitySource, value: Any, query: Query, report: ReadReport) -> Key | None:
    """``entity_key``, or None with the row reported when its id is bad."""
    try:
        return entity_key(source, value, query)
    except BadId as exc:
        report.note(report.bad_ids, query.label, f"{query.label}: {exc}: row skipped")
        return None


def _ordered(
    dialect: str, query: Query, source: EntitySource, ids: list[Key] | None, select: str = "*"
) -> sa.TextClause:
    """``query`` wrapped to return its rows sorted by id (only ``ids``, if given)."""
    where = " WHERE id IN :mailsync_ids" if ids is not None else ""
    order = "id"
    if source.id_type == "text":
        # Python compares str by code point; so do these collations (UTF-8
        # byte order), unlike a locale collation such as en_US.
        order = 'id COLLATE "C"' if dialect == "postgresql" else "id COLLATE BINARY"
    clause = sa.text(
        f"SELECT {select} FROM (\n{query.sql}\n) AS mailsync_q{where} ORDER BY {order}"
    )
    if ids is not None:
        clause = clause.bindparams(sa.bindparam("mailsync_ids", expanding=True))
    return clause


def _rows(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    query: Query,
    now: datetime,
    ids: list[Key] | None,
    required: Sequence[str],
) -> tuple[list[str], Iterator[Row[Any]]]:
    """``query``'s column names (lower case) and its rows sorted by id; a
    ``SourceQueryError`` when a ``required`` column is missing."""
    tz = ZoneInfo(source.naive_timezone)
    params = db.now_params(query, now, tz)
    if ids is not None:
        params["mailsync_ids"] = ids
    result = db.execute(conn, query, _ordered(db.dialect, query, source, ids), params)
    keys = [k.lower() for k in result.keys()]
    missing = [c for c in required if c not in keys]
    if missing:
        result.close()
        raise SourceQueryError(
            f"{query.label}: the query returns {', '.join(keys) or 'no columns'};"
            f" expected column(s) {', '.join(missing)}"
        )
    return keys, guarded_rows(result, query)


def list_stream(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    now: datetime,
    ids: list[Key] | None,
    report: ReadReport,
) -> Stream:
    """The entity list: (id, (email, identity columns as strings))."""
    query = source.list_query
    keys, rows = _rows(db, conn, source, query, now, ids, ("id", "email"))
    id_at, email_at = keys.index("id"), keys.index("email")
    identity = [(i, k) for i, k in enumerate(keys) if i not in (id_at, email_at)]

    def gen() -> Iterator[tuple[Key, Any]]:
        for row in rows:
            email = row[email_at]
            email = email.strip() or None if isinstance(email, str) else None
            key = _keyed(source, row[id_at], query, report)
            if key is None:
                continue
            values = {k: (None if row[i] is None else str(row[i])) for i, k in identity}
            yield key, (email, values)

    return Stream(query.label, gen())


def action_stream(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    order: int,
    name: str,
    query: Query,
    now: datetime,
    ids: list[Key] | None,
    report: ReadReport,
) -> Stream:
    """One action's occurrences: (id, (instant, declaration order, name));
    a row whose instant cannot be read is reported and skipped."""
    keys, rows = _rows(db, conn, source, query, now, ids, ("id", "at"))
    id_at, at_at = keys.index("id"), keys.index("at")
    tz = ZoneInfo(source.naive_timezone)

    def gen() -> Iterator[tuple[Key, Any]]:
        for row in rows:
            key = _keyed(source, row[id_at], query, report)
            if key is None:
                continue
            try:
                at = to_utc(row[at_at], tz)
            except ValueError as exc:
                report.note(report.bad_values, query.label, f"{query.label}: id {key!r}: {exc}")
                continue
            if at is None:
                report.note(
                    report.bad_values, query.label, f"{query.label}: id {key!r}: null instant"
                )
                continue
            yield key, (at, order, name)

    return Stream(query.label, gen())


def _typed_stream(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    query: Query,
    columns: Sequence[Column],
    now: datetime,
    ids: list[Key] | None,
    report: ReadReport,
    extra: Sequence[str] = (),
) -> tuple[list[str], Iterator[tuple[Key, Row[Any], dict[str, FactValue]]]]:
    """Rows with ``columns`` converted to their fact types; an unusable value
    is reported and read as null."""
    keys, rows = _rows(
        db, conn, source, query, now, ids, ("id", *extra, *(c.name for c in columns))
    )
    id_at = keys.index("id")
    positions = [(c, keys.index(c.name)) for c in columns]
    tz = ZoneInfo(source.naive_timezone)

    def gen() -> Iterator[tuple[Key, Row[Any], dict[str, FactValue]]]:
        for row in rows:
            key = _keyed(source, row[id_at], query, report)
            if key is None:
                continue
            values: dict[str, FactValue] = {}
            for column, at in positions:
                try:
                    values[column.name] = convert(row[at], column.type, tz)
                except ValueError as exc:
                    report.note(
                        report.bad_values,
                        query.label,
                        f"{query.label}: id {key!r}, {column.name}: {exc}",
                    )
                    values[column.name] = None
            yield key, row, values

    return keys, gen()


def fact_stream(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    query: Query,
    columns: Sequence[Column],
    now: datetime,
    ids: list[Key] | None,
    report: ReadReport,
) -> Stream:
    """One facts query: (id, {column: value})."""
    _, rows = _typed_stream(db, conn, source, query, columns, now, ids, report)
    return Stream(query.label, ((key, values) for key, _, values in rows))


def relation_stream(
    db: ReadOnlyDatabase,
    conn: Connection,
    source: EntitySource,
    relation: RelationSource,
    now: datetime,
    ids: list[Key] | None,
    report: ReadReport,
) -> Stream:
    """One relation's rows: (id, ``RelationRow``)."""
    keys, rows = _typed_stream(
        db, conn, source, relation.query, relation.columns, now, ids, report, extra=("related_id",)
    )
    related_at = keys.index("related_id")
    name = relation.name
    return Stream(
        relation.query.label,
        ((key, RelationRow(name, str(row[related_at]), values)) for key, row, values in rows),
    )
