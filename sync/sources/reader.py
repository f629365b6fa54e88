"""Reading the application's database: read-only sessions, streamed rows, merged records.

``sources.py`` says *which* queries to run; this module runs them and turns
their rows into ``EntityRecord``s for the engine, without ever holding a
whole population in memory:

* every query is wrapped as ``SELECT * FROM (<query>) AS q [WHERE id IN
  :ids] ORDER BY id`` and streamed (server-side cursor on PostgreSQL,
  ``yield_per`` everywhere), so each query is a sorted stream of rows;
* the entity list is the driving stream and the action, fact and relation
  streams are merged into it by entity id (a k-way merge join): memory is
  one entity plus one buffered batch per query, whatever the population;
* rows whose id is not in the list (an action of a deleted user, say) are
  counted and reported, never silently attached to someone else; a query
  that is not ordered the way the reader expects fails loudly.

Sessions are read-only: a PostgreSQL transaction opened ``READ ONLY``
(REPEATABLE READ, so every query of one read sees the same snapshot), a
SQLite file opened with ``mode=ro`` plus ``PRAGMA query_only``. A mistaken
``UPDATE`` in sources.yaml is refused by the database itself.

Instants come back timezone-aware in UTC. Databases that store naive
timestamps (SQLite always does, PostgreSQL ``timestamp without time zone``)
are read as wall-clock times in the source's ``naive_timezone`` (UTC unless
configured).
"""

from __future__ import annotations

import heapq
import logging
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from sync.exceptions import ConfigurationError, RetriableError
from sync.records import ActionOccurrence, EntityRecord, FactValue
from sync.sources.model import Column, EntitySource, FactType, Query, RelationSource, SourcesConfig
from sync.sources.rollups import RelationRow, StatusLookup, compute_rollups

log = logging.getLogger("sync.sources.model")

#: Rows fetched per round trip from a server-side cursor.
DEFAULT_BATCH = 5000
#: Entity ids per ``IN (...)`` list; SQLite's variable limit is the smaller one.
_IDS_PER_QUERY = {"sqlite": 900, "postgresql": 10000}
#: How many examples of each reported anomaly to keep.
_EXAMPLES = 5

#: An entity id as compared while merging: ``int`` for ``id_type: integer``,
#: ``str`` for ``text``; one type per entity type, never mixed.
Key = Any


class SourceQueryError(ConfigurationError):
    """A query of sources.yaml failed or returned the wrong columns: fix the file."""


class SourceUnavailableError(RetriableError):
    """The application database could not be reached; try again later."""


# --------------------------------------------------------------------------
# Read-only engines


_CURSORS = "mailsync_cursors"


def read_only_engine(
    url: str | sa.URL, *, statement_timeout: timedelta | None = None, **kwargs: Any
) -> Engine:
    """An engine whose every session refuses writes.

    PostgreSQL: each transaction begins ``READ ONLY`` at ``REPEATABLE READ``
    (one consistent snapshot per read) and the session default is read-only
    too, so even a ``COMMIT`` smuggled into a query cannot open a writable
    transaction. SQLite: the file is opened through a ``mode=ro`` URI, and
    ``PRAGMA query_only`` covers in-memory databases.

    ``statement_timeout`` (PostgreSQL) makes the server cancel any statement
    of these sessions that runs longer, so that a hanging query cannot stall
    the daemon; the cycle fails and the next one tries again.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(_sqlite_read_only_url(parsed), **kwargs)
        sa.event.listen(engine, "connect", _sqlite_query_only)
        return engine
    if backend == "postgresql":
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        engine = sa.create_engine(parsed, execution_options=options, **kwargs)
        sa.event.listen(engine, "connect", _pg_session_read_only)
        sa.event.listen(engine, "before_cursor_execute", _remember_cursor)
        if statement_timeout is not None:
            milliseconds = max(1, int(statement_timeout.total_seconds() * 1000))

            @sa.event.listens_for(engine, "connect")
            def _statement_timeout(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"SET SESSION statement_timeout = {milliseconds}")
                cursor.close()
                dbapi_connection.commit()

        return engine
    raise ConfigurationError(
        f"unsupported database {backend!r} for sources (supported: postgresql, sqlite)"
    )


def _sqlite_read_only_url(url: sa.URL) -> sa.URL:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri") == "true":
        if url.query.get("uri") == "true" and "mode" not in url.query:
            return url.update_query_dict({"mode": "ro"})
        return url
    # A URI filename lets SQLite itself enforce read-only (mode=ro); quote the
    # path because '?' or '#' in a file name would otherwise start the query.
    return url.set(database="file:" + urllib.parse.quote(database)).update_query_dict(
        {"mode": "ro", "uri": "true"}
    )


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def _remember_cursor(
    conn: Connection, cursor: Any, _statement: Any, _params: Any, _context: Any, _many: bool
) -> None:
    # A streamed query cancelled (statement timeout, SIGTERM) aborts the
    # transaction, and SQLAlchemy drops its server-side cursors (this one and
    # the other streams of the read) without closing them; psycopg then
    # complains when they are garbage-collected. The session closes them.
    conn.info.setdefault(_CURSORS, []).append(cursor)


def close_cursors(info: dict[Any, Any]) -> None:
    """Close the cursors of this session's queries still open.

    ``info`` is the session connection's ``info``, taken when the session
    began: once the connection is lost, SQLAlchemy no longer lets it be read
    through the connection, yet the cursors must still be closed (psycopg
    complains when it finds them open at garbage collection).
    """
    for cursor in info.pop(_CURSORS, []):
        if not getattr(cursor, "closed", True):
            try:
                cursor.close()
            except Exception as exc:
                log.debug("closing the cursor of a failed query: %s", exc)


def _pg_session_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


# --------------------------------------------------------------------------
# Values


def to_utc(value: Any, naive_tz: ZoneInfo) -> datetime | None:
    """An instant from whatever the driver returned, aware and in UTC.

    Naive values (SQLite text, ``timestamp without time zone``) are wall-clock
    times in ``naive_tz``. Raises ``ValueError`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ValueError(f"not an instant: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=naive_tz)
    try:
        instant: datetime = value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01 in a zone east of UTC has no UTC instant: a bad value of
        # this one row, like any other, not a reason to stop the read.
        raise ValueError(f"instant out of range in UTC: {value!r}") from None
    return instant


_TRUE = {"t", "true", "1", "y", "yes"}
_FALSE = {"f", "false", "0", "n", "no"}


def convert(value: Any, type_: FactType, naive_tz: ZoneInfo) -> FactValue:
    """A database value as a fact of ``type_``; ``ValueError`` when it is not one."""
    if value is None:
        return None
    if type_ == "instant":
        return to_utc(value, naive_tz)
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | Decimal) and value in (0, 1):
            return bool(value)  # SQLite has no boolean type: 0/1
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"not a boolean: {value!r}")
    if type_ == "number":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float):
            return value
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return float(value)
        raise ValueError(f"not a number: {value!r}")
    return value if isinstance(value, str) else str(value)


def bind_instant(value: datetime, dialect: str, naive_tz: ZoneInfo) -> Any:
    """``:now`` / ``:since`` as the database compares them best.

    PostgreSQL gets an aware datetime (the session time zone is the source's
    naive time zone, so ``timestamp`` columns compare as wall-clock times
    there). SQLite compares text, so it gets the wall-clock time in
    SQLAlchemy's storage format, ``YYYY-MM-DD HH:MM:SS.ffffff``.
    """
    if value.tzinfo is None:
        raise ValueError("bound instants must be timezone-aware")
    if dialect == "sqlite":
        local = value.astimezone(naive_tz).replace(tzinfo=None)
        return local.isoformat(" ", timespec="microseconds")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------
# Reports


@dataclass
class ReadReport:
    """What was odd in one read; logged as warnings when the read ends."""

    entity_type: str
    entities: int = 0
    orphans: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    bad_values: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def note(self, counter: dict[str, int], label: str, example: str) -> None:
        counter[label] = counter.get(label, 0) + 1
        if len(self.examples) < _EXAMPLES * 4:
            self.examples.append(example)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.duplicates or self.bad_values)

    def log(self) -> None:
        for title, counter in (
            ("rows for ids not in the entity list", self.orphans),
            ("duplicate rows (first kept)", self.duplicates),
            ("unusable values (read as null / row skipped)", self.bad_values),
        ):
            for label, count in counter.items():
                log.warning("%s: %d %s in %s", self.entity_type, count, title, label)
        for example in self.examples:
            log.warning("  e.g. %s", example)


# --------------------------------------------------------------------------
# The reader


@dataclass(frozen=True)
class _Stream:
    """One query as a sorted stream of (key, payload)."""

    label: str
    rows: Iterator[tuple[Key, Any]]


class _Cursor:
    """A peekable sorted stream that checks its own ordering as it goes."""

    _DONE = object()

    def __init__(self, stream: _Stream, report: ReadReport, *, orphans: bool) -> None:
        self.label = stream.label
        self.rows = stream.rows
        self.report = report
        self.count_orphans = orphans
        self.head: Any = self._DONE
        self.last: Key | None = None
        self._advance()

    def _advance(self) -> None:
        item: Any = next(self.rows, self._DONE)
        if item is not self._DONE:
            key = item[0]
            if self.last is not None and key < self.last:
                raise SourceQueryError(
                    f"{self.label}: rows are not ordered by id ({key!r} came after"
                    f" {self.last!r}); make the query return ids of the entity's id_type"
                )
            self.last = key
        self.head = item

    def take(self, key: Key) -> list[Any]:
        """Payloads for ``key``; rows for smaller keys are orphans."""
        while self.head is not self._DONE and self.head[0] < key:
            self._orphan()
        found = []
        while self.head is not self._DONE and self.head[0] == key:
            found.append(self.head[1])
            self._advance()
        return found

    def drain(self) -> None:
        while self.head is not self._DONE:
            self._orphan()

    def _orphan(self) -> None:
        if self.count_orphans:
            self.report.note(
                self.report.orphans,
                self.label,
                f"{self.label}: id {self.head[0]!r} is not in the entity list",
            )
        self._advance()


class SourceReader:
    """Runs the queries of a ``SourcesConfig`` against one application database.

    ``with SourceReader(config, url) as reader: for record in
    reader.read_entities("user", now=now): ...`` Each read is one read-only
    transaction; reads may be consumed one after the other or interleaved.
    """

    def __init__(
        self,
        config: SourcesConfig,
        url: str | sa.URL,
        *,
        batch_size: int = DEFAULT_BATCH,
        engine_options: Mapping[str, Any] | None = None,
        statement_timeout: timedelta | None = None,
    ) -> None:
        self.config = config
        self.engine = read_only_engine(
            url, statement_timeout=statement_timeout, **dict(engine_options or {})
        )
        self.dialect = self.engine.dialect.name
        self.batch_size = batch_size
        #: Driver connections running a query now, for ``cancel``.
        self._busy: set[Any] = set()
        self._busy_lock = threading.Lock()

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tracked(self, conn: Connection) -> Iterator[None]:
        """Count a connection opened elsewhere on this reader's engine (the
        compiled SQL's) among the running queries that ``cancel`` stops."""
        driver = conn.connection.dbapi_connection
        with self._busy_lock:
            self._busy.add(driver)
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy.discard(driver)

    def cancel(self) -> int:
        """Cancel the queries running now (from another thread: the daemon's
        stop path); each fails in its reader with a retriable error. Returns
        how many were cancelled."""
        with self._busy_lock:
            busy = list(self._busy)
        for connection in busy:
            # psycopg: a cancel request on a side channel; sqlite3: interrupt.
            stop = getattr(connection, "cancel", None) or getattr(connection, "interrupt", None)
            if stop is not None:
                try:
                    stop()
                except Exception as exc:  # the query may have just ended
                    log.debug("cancelling a source query: %s", exc)
        return len(busy)

    # -- public reads ------------------------------------------------------

    def read_entities(
        self,
        entity_type: str,
        *,
        now: datetime,
        ids: Iterable[str] | None = None,
        related_statuses: Mapping[str, StatusLookup] | None = None,
        report: ReadReport | None = None,
    ) -> Iterator[EntityRecord]:
        """Every entity of ``entity_type`` (or only ``ids``), in id order.

        ``now`` is bound as ``:now``. With ``related_statuses`` (relation
        name -> related id -> evaluated status) the relation rows are read
        and the rollup facts filled in; without it, rollup facts are absent.
        Pass a ``ReadReport`` to inspect what was odd; it is logged anyway.
        """
        source = self.config.entity(entity_type)
        report = report if report is not None else ReadReport(entity_type)
        if ids is None:
            yield from self._read(source, now, None, related_statuses, report)
        else:
            for chunk in self._id_chunks(source, ids):
                yield from self._read(source, now, chunk, related_statuses, report)
        report.log()

    def read_relations(
        self, entity_type: str, *, now: datetime, ids: Iterable[str] | None = None
    ) -> Iterator[tuple[str, tuple[RelationRow, ...]]]:
        """(entity id, its relation rows) for entities that have any, in id order."""
        source = self.config.entity(entity_type)
        report = ReadReport(entity_type)
        chunks: Iterable[list[Key] | None] = [None] if ids is None else self._id_chunks(source, ids)
        for chunk in chunks:
            with self._session(source) as conn:
                streams = [
                    self._relation_stream(conn, source, rel, now, chunk, report)
                    for rel in source.relations
                ]
                merged = heapq.merge(*(s.rows for s in streams), key=lambda item: item[0])
                current: Key | None = None
                rows: list[RelationRow] = []
                for key, row in merged:
                    if key != current and rows:
                        yield str(current), tuple(rows)
                        rows = []
                    current = key
                    rows.append(row)
                if rows:
                    yield str(current), tuple(rows)
        report.log()

    def identity_columns(self, entity_type: str, *, now: datetime) -> list[str]:
        """Names of the list query's identity columns (all but id and email),
        found by running it with no rows: they become string facts."""
        source = self.config.entity(entity_type)
        keys = self.query_columns(source, source.list_query, now=now)
        return [k for k in keys if k not in ("id", "email")]

    def query_columns(self, source: EntitySource, query: Query, *, now: datetime) -> list[str]:
        """The columns ``query`` returns, found by running it for no rows in
        its own read-only transaction (a refused query aborts only that one).
        Raises ``SourceQueryError`` naming the query when the database refuses it."""
        sql = f"SELECT * FROM (\n{query.sql}\n) AS mailsync_q WHERE 1 = 0"
        zone = ZoneInfo(source.naive_timezone)
        params = self._params(query, now, zone)
        if "since" in query.params:
            params["since"] = bind_instant(now, self.dialect, zone)
        with self._session(source) as conn:
            result = self._execute(conn, query, sql, params)
            keys = list(result.keys())
            result.close()
        return keys

    def watermark(self, entity_type: str, *, now: datetime) -> datetime | None:
        """The newest instant in the data: the ``watermark`` query, else the
        latest action instant. A daemon re-reads when this moves."""
        source = self.config.entity(entity_type)
        tz = ZoneInfo(source.naive_timezone)
        queries = [source.watermark] if source.watermark else [q for _, q in source.actions]
        latest: datetime | None = None
        with self._session(source) as conn:
            for query in queries:
                sql = (
                    query.sql
                    if query is source.watermark
                    else (f"SELECT max(at) AS at FROM (\n{query.sql}\n) AS mailsync_q")
                )
                value = self._execute(conn, query, sql, self._params(query, now, tz)).scalar()
                try:
                    instant = to_utc(value, tz)
                except ValueError as exc:
                    raise SourceQueryError(f"{query.label}: {exc}") from None
                if instant is not None and (latest is None or instant > latest):
                    latest = instant
        return latest

    def changed_ids(self, entity_type: str, *, since: datetime, now: datetime) -> list[str]:
        """Ids of entities with new data after ``since``, sorted.

        Uses the ``changed`` query when given (it sees ``:since``), else every
        action query filtered on ``at > :since``. Feed the result to
        ``read_entities(ids=...)``.
        """
        source = self.config.entity(entity_type)
        tz = ZoneInfo(source.naive_timezone)
        keys: set[Key] = set()
        queries = [source.changed] if source.changed else [q for _, q in source.actions]
        with self._session(source) as conn:
            for query in queries:
                if query is source.changed:
                    sql = f"SELECT DISTINCT id FROM (\n{query.sql}\n) AS mailsync_q"
                else:
                    sql = (
                        f"SELECT DISTINCT id FROM (\n{query.sql}\n) AS mailsync_q WHERE at > :since"
                    )
                params = self._params(query, now, tz)
                params["since"] = bind_instant(since, self.dialect, tz)
                result = self._execute(conn, query, sql, params)
                for (value,) in result:
                    keys.add(self._key(source, value, query))
        return [str(k) for k in sorted(keys)]

    def occurrences(
        self,
        entity_type: str,
        actions: Iterable[str],
        *,
        since: datetime,
        now: datetime,
    ) -> dict[str, list[ActionOccurrence]]:
        """Occurrences of ``actions`` at or after ``since`` and at or before
        ``now``, by entity id: the daemon's event window. One range query per
        action (``at`` is indexed in a well-kept application database); the
        instants are converted exactly as ``read_entities`` converts them, so
        the idempotency keys built from them are the engine's. A row whose
        instant cannot be read is reported and skipped, as when reading."""
        source = self.config.entity(entity_type)
        tz = ZoneInfo(source.naive_timezone)
        wanted = set(actions)
        found: dict[str, list[ActionOccurrence]] = {}
        report = ReadReport(entity_type)
        with self._session(source) as conn:
            for name, query in source.actions:
                if name not in wanted:
                    continue
                sql = (
                    f"SELECT id, at FROM (\n{query.sql}\n) AS mailsync_q"
                    " WHERE at >= :mailsync_since AND at <= :now"
                )
                params = self._params(query, now, tz)
                params["now"] = bind_instant(now, self.dialect, tz)
                params["mailsync_since"] = bind_instant(since, self.dialect, tz)
                for row in self._execute(conn, query, sql, params):
                    value, raw = tuple(row)
                    key = str(self._key(source, value, query))
                    try:
                        at = to_utc(raw, tz)
                    except ValueError as exc:
                        label = query.label
                        report.note(report.bad_values, label, f"{label}: id {key}: {exc}")
                        continue
                    if at is None or at < since or at > now:
                        continue
                    found.setdefault(key, []).append(ActionOccurrence(at, name))
        report.log()
        return found

    # -- internals ---------------------------------------------------------

    def _id_chunks(self, source: EntitySource, ids: Iterable[str]) -> Iterator[list[Key]]:
        keys = sorted({self._key(source, i, source.list_query) for i in ids})
        size = _IDS_PER_QUERY.get(self.dialect, 900)
        for start in range(0, len(keys), size):
            yield keys[start : start + size]

    def _session(self, source: EntitySource) -> _Session:
        return _Session(self.engine, source, self._busy, self._busy_lock)

    def _read(
        self,
        source: EntitySource,
        now: datetime,
        ids: list[Key] | None,
        related_statuses: Mapping[str, StatusLookup] | None,
        report: ReadReport,
    ) -> Iterator[EntityRecord]:
        with self._session(source) as conn:
            entities = self._list_stream(conn, source, now, ids, report)
            actions = [
                _Cursor(
                    self._action_stream(conn, source, order, name, q, now, ids, report),
                    report,
                    orphans=True,
                )
                for order, (name, q) in enumerate(source.actions)
            ]
            facts = [
                (
                    fq.columns,
                    _Cursor(
                        self._fact_stream(conn, source, fq.query, fq.columns, now, ids, report),
                        report,
                        orphans=True,
                    ),
                )
                for fq in source.facts
            ]
            relations: list[_Cursor] = []
            if related_statuses is not None and source.rollups:
                relations = [
                    _Cursor(
                        self._relation_stream(conn, source, rel, now, ids, report),
                        report,
                        orphans=True,
                    )
                    for rel in source.relations
                ]
            previous: Key | None = None
            for key, (email, identity) in entities.rows:
                if previous is not None and key <= previous:
                    if key == previous:
                        report.note(
                            report.duplicates,
                            source.list_query.label,
                            f"{source.list_query.label}: id {key!r} listed twice",
                        )
                        continue
                    raise SourceQueryError(
                        f"{entities.label}: rows are not ordered by id ({key!r} came after"
                        f" {previous!r}); make the query return ids of the entity's id_type"
                    )
                previous = key
                facts_of: dict[str, FactValue] = dict(identity)
                for columns, cursor in facts:
                    rows = cursor.take(key)
                    if len(rows) > 1:
                        report.note(
                            report.duplicates,
                            cursor.label,
                            f"{cursor.label}: {len(rows)} rows for id {key!r}",
                        )
                    values = rows[0] if rows else {}
                    for column in columns:
                        facts_of[column.name] = (
                            values.get(column.name, column.default) if rows else column.default
                        )
                occurrences: list[tuple[datetime, int, str]] = []
                for cursor in actions:
                    occurrences.extend(cursor.take(key))
                occurrences.sort()
                related: list[RelationRow] = []
                if relations and related_statuses is not None:
                    for cursor in relations:
                        related.extend(cursor.take(key))
                    facts_of.update(compute_rollups(source.rollups, related, related_statuses))
                report.entities += 1
                yield EntityRecord(
                    source.entity_type,
                    str(key),
                    email,
                    facts_of,
                    tuple(ActionOccurrence(at, name) for at, _, name in occurrences),
                    tuple(dict.fromkeys((row.relation, row.related_id) for row in related)),
                )
            for cursor in [*actions, *(c for _, c in facts), *relations]:
                cursor.drain()

    def _key(self, source: EntitySource, value: Any, query: Query) -> Key:
        if value is None:
            raise SourceQueryError(f"{query.label}: a row has a null id")
        if source.id_type == "text":
            return value if isinstance(value, str) else str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise SourceQueryError(
            f"{query.label}: id {value!r} is not an integer; set id_type: text for this entity"
        )

    def _params(self, query: Query, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if "now" in query.params:
            params["now"] = bind_instant(now, self.dialect, tz)
        return params

    def _ordered(
        self, query: Query, source: EntitySource, ids: list[Key] | None, select: str = "*"
    ) -> sa.TextClause:
        where = " WHERE id IN :mailsync_ids" if ids is not None else ""
        order = "id"
        if source.id_type == "text":
            # Python compares str by code point; so do these collations (UTF-8
            # byte order), unlike a locale collation such as en_US.
            order = 'id COLLATE "C"' if self.dialect == "postgresql" else "id COLLATE BINARY"
        clause = sa.text(
            f"SELECT {select} FROM (\n{query.sql}\n) AS mailsync_q{where} ORDER BY {order}"
        )
        if ids is not None:
            clause = clause.bindparams(sa.bindparam("mailsync_ids", expanding=True))
        return clause

    def _execute(
        self, conn: Connection, query: Query, sql: str | sa.TextClause, params: Mapping[str, Any]
    ) -> sa.CursorResult[Any]:
        statement = sa.text(sql) if isinstance(sql, str) else sql
        try:
            return conn.execute(
                statement.execution_options(yield_per=self.batch_size), dict(params)
            )
        except sa.exc.DBAPIError as exc:
            if _transient(exc):
                raise SourceUnavailableError(f"{query.label}: {exc.orig}") from exc
            raise SourceQueryError(
                f"{query.label}: the database refused the query: {exc.orig}"
            ) from exc

    def _rows(
        self,
        conn: Connection,
        source: EntitySource,
        query: Query,
        now: datetime,
        ids: list[Key] | None,
        required: Sequence[str],
    ) -> tuple[list[str], Iterator[Row[Any]]]:
        tz = ZoneInfo(source.naive_timezone)
        params = self._params(query, now, tz)
        if ids is not None:
            params["mailsync_ids"] = ids
        result = self._execute(conn, query, self._ordered(query, source, ids), params)
        keys = [k.lower() for k in result.keys()]
        missing = [c for c in required if c not in keys]
        if missing:
            result.close()
            raise SourceQueryError(
                f"{query.label}: the query returns {', '.join(keys) or 'no columns'};"
                f" expected column(s) {', '.join(missing)}"
            )
        return keys, _guarded(result, query)

    def _list_stream(
        self,
        conn: Connection,
        source: EntitySource,
        now: datetime,
        ids: list[Key] | None,
        report: ReadReport,
    ) -> _Stream:
        query = source.list_query
        keys, rows = self._rows(conn, source, query, now, ids, ("id", "email"))
        id_at, email_at = keys.index("id"), keys.index("email")
        identity = [(i, k) for i, k in enumerate(keys) if i not in (id_at, email_at)]

        def gen() -> Iterator[tuple[Key, Any]]:
            for row in rows:
                email = row[email_at]
                email = email.strip() or None if isinstance(email, str) else None
                values = {k: (None if row[i] is None else str(row[i])) for i, k in identity}
                yield self._key(source, row[id_at], query), (email, values)

        return _Stream(query.label, gen())

    def _action_stream(
        self,
        conn: Connection,
        source: EntitySource,
        order: int,
        name: str,
        query: Query,
        now: datetime,
        ids: list[Key] | None,
        report: ReadReport,
    ) -> _Stream:
        keys, rows = self._rows(conn, source, query, now, ids, ("id", "at"))
        id_at, at_at = keys.index("id"), keys.index("at")
        tz = ZoneInfo(source.naive_timezone)

        def gen() -> Iterator[tuple[Key, Any]]:
            for row in rows:
                key = self._key(source, row[id_at], query)
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

        return _Stream(query.label, gen())

    def _typed_stream(
        self,
        conn: Connection,
        source: EntitySource,
        query: Query,
        columns: Sequence[Column],
        now: datetime,
        ids: list[Key] | None,
        report: ReadReport,
        extra: Sequence[str] = (),
    ) -> tuple[list[str], Iterator[tuple[Key, Row[Any], dict[str, FactValue]]]]:
        keys, rows = self._rows(
            conn, source, query, now, ids, ("id", *extra, *(c.name for c in columns))
        )
        id_at = keys.index("id")
        positions = [(c, keys.index(c.name)) for c in columns]
        tz = ZoneInfo(source.naive_timezone)

        def gen() -> Iterator[tuple[Key, Row[Any], dict[str, FactValue]]]:
            for row in rows:
                key = self._key(source, row[id_at], query)
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

    def _fact_stream(
        self,
        conn: Connection,
        source: EntitySource,
        query: Query,
        columns: Sequence[Column],
        now: datetime,
        ids: list[Key] | None,
        report: ReadReport,
    ) -> _Stream:
        _, rows = self._typed_stream(conn, source, query, columns, now, ids, report)
        return _Stream(query.label, ((key, values) for key, _, values in rows))

    def _relation_stream(
        self,
        conn: Connection,
        source: EntitySource,
        relation: RelationSource,
        now: datetime,
        ids: list[Key] | None,
        report: ReadReport,
    ) -> _Stream:
        keys, rows = self._typed_stream(
            conn, source, relation.query, relation.columns, now, ids, report, extra=("related_id",)
        )
        related_at = keys.index("related_id")
        name = relation.name
        return _Stream(
            relation.query.label,
            ((key, RelationRow(name, str(row[related_at]), values)) for key, row, values in rows),
        )


#: SQLite reports everything as OperationalError; these ones pass with time.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "interrupted")


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """Whether retrying later may help: a lost connection, a locked file.

    Everything else (unknown table, syntax, a write refused by the read-only
    session) is the query's fault and is reported as a configuration error.
    """
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return any(word in str(orig).lower() for word in _SQLITE_TRANSIENT)
    # psycopg raises OperationalError for connection failures and also for a
    # few server states (e.g. cancelled statements); SQLSTATE class 08 is
    # the connection class, 57 operator intervention (shutdown, cancel).
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate[:2] in ("", "08", "57", "53")


def _guarded(result: sa.CursorResult[Any], query: Query) -> Iterator[Row[Any]]:
    """Rows of ``result``, with fetch-time database errors named after the query."""
    try:
        yield from result
    except sa.exc.DBAPIError as exc:
        if _transient(exc):
            raise SourceUnavailableError(f"{query.label}: {exc.orig}") from exc
        raise SourceQueryError(
            f"{query.label}: the database failed while reading: {exc.orig}"
        ) from exc
    finally:
        result.close()


class _Session:
    """One read-only transaction, with the source's naive time zone in force."""

    def __init__(
        self,
        engine: Engine,
        source: EntitySource,
        busy: set[Any] | None = None,
        busy_lock: threading.Lock | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.conn: Connection | None = None
        self.busy = busy if busy is not None else set()
        self.busy_lock = busy_lock or threading.Lock()
        self.driver: Any = None
        self.info: dict[Any, Any] = {}

    def __enter__(self) -> Connection:
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise SourceUnavailableError(
                f"cannot connect to the source database: {exc.orig}"
            ) from exc
        self.conn = conn
        self.info = conn.info
        self.driver = conn.connection.dbapi_connection
        with self.busy_lock:
            self.busy.add(self.driver)
        try:
            self._begin(conn)
        except BaseException as exc:
            # Lost while the session began (the pool handed out a connection
            # whose server had gone): closed here, since __exit__ will not run.
            self.__exit__(type(exc))
            if isinstance(exc, sa.exc.DBAPIError):
                raise SourceUnavailableError(
                    f"the source database's connection was lost: {exc.orig}"
                ) from exc
            raise
        return conn

    def _begin(self, conn: Connection) -> None:
        conn.begin()
        if conn.dialect.name == "postgresql":
            # Local to this transaction: `timestamp` values and :now then
            # compare as wall-clock times of the source's zone.
            conn.execute(
                sa.text("SELECT set_config('TimeZone', :tz, true)"),
                {"tz": self.source.naive_timezone},
            )
        elif conn.dialect.name == "sqlite":
            # pysqlite opens no transaction for SELECTs; BEGIN makes every
            # query of this read see one snapshot, as on PostgreSQL.
            conn.exec_driver_sql("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self.conn is not None
        with self.busy_lock:
            self.busy.discard(self.driver)
        try:
            close_cursors(self.info)
            self.conn.rollback()  # read-only: nothing to commit, ever
        except (sa.exc.DBAPIError, sa.exc.PendingRollbackError):
            if exc_type is None:
                raise
            # The read failed already (cancelled: SQLite then interrupts the
            # rollback too; connection lost, when SQLAlchemy refuses to touch
            # the connection at all): that error is the one to report, and
            # this connection is not reused.
            self.conn.invalidate()
        finally:
            self.conn.close()
