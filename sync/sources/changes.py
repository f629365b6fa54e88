"""What changed in the data: the watermark, ids with new data, recent occurrences.

Smaller reads than a population's: whether the data moved (``watermark``),
which entities have new data since an instant (``changed_ids``: the ids a
daemon's tick evaluates), which action occurrences fall in an event window
(``occurrences``: the cycle's events) and which action rows the compiled SQL
leaves out (``unusable_actions``). Each runs in one read-only session of its
own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from sync.records import ActionOccurrence
from sync.sources.model import EntitySource, Query
from sync.sources.report import ReadReport
from sync.sources.sessions import ReadOnlyDatabase, SourceQueryError
from sync.sources.streams import BadId, Key, entity_key
from sync.sources.values import bind_instant, to_utc


def watermark(db: ReadOnlyDatabase, source: EntitySource, *, now: datetime) -> datetime | None:
    """The newest instant in the data: the ``watermark`` query, else the
    latest action instant. A daemon re-reads when this moves."""
    tz = ZoneInfo(source.naive_timezone)
    queries = [source.watermark] if source.watermark else [q for _, q in source.actions]
    latest: datetime | None = None
    with db.session(source) as conn:
        for query in queries:
            sql = (
                query.sql
                if query is source.watermark
                else (f"SELECT max(at) AS at FROM (\n{query.sql}\n) AS mailsync_q")
            )
            value = db.execute(conn, query, sql, db.now_params(query, now, tz)).scalar()
            try:
                instant = to_utc(value, tz)
            except ValueError as exc:
                raise SourceQueryError(f"{query.label}: {exc}") from None
            if instant is not None and (latest is None or instant > latest):
                latest = instant
    return latest


def changed_ids(
    db: ReadOnlyDatabase, source: EntitySource, *, since: datetime, now: datetime
) -> list[str]:
    """Ids of entities with new data after ``since``, sorted.

    Uses the ``changed`` query when given (it sees ``:since``), else every
    action query filtered on ``at > :since``. Feed the result to
    ``read_entities(ids=...)``.
    """
    tz = ZoneInfo(source.naive_timezone)
    keys: set[Key] = set()
    report = ReadReport(source.entity_type)
    queries = [source.changed] if source.changed else [q for _, q in source.actions]
    with db.session(source) as conn:
        for query in queries:
            if query is source.changed:
                sql = f"SELECT DISTINCT id FROM (\n{query.sql}\n) AS mailsync_q"
            else:
                sql = f"SELECT DISTINCT id FROM (\n{query.sql}\n) AS mailsync_q WHERE at > :since"
            params = db.now_params(query, now, tz)
            params["since"] = bind_instant(since, db.dialect, tz)
            result = db.execute(conn, query, sql, params)
            for (value,) in result:
                try:
                    keys.add(entity_key(source, value, query))
                except BadId as exc:
                    report.note(report.bad_ids, query.label, f"{query.label}: {exc}: row skipped")
    report.log()
    return [str(k) for k in sorted(keys)]


def occurrences(
    db: ReadOnlyDatabase,
    source: EntitySource,
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
    tz = ZoneInfo(source.naive_timezone)
    wanted = set(actions)
    found: dict[str, list[ActionOccurrence]] = {}
    report = ReadReport(source.entity_type)
    with db.session(source) as conn:
        for name, query in source.actions:
            if name not in wanted:
                continue
            sql = (
                f"SELECT id, at FROM (\n{query.sql}\n) AS mailsync_q"
                " WHERE at >= :mailsync_since AND at <= :now"
            )
            params = db.now_params(query, now, tz)
            params["now"] = bind_instant(now, db.dialect, tz)
            params["mailsync_since"] = bind_instant(since, db.dialect, tz)
            for row in db.execute(conn, query, sql, params):
                value, raw = tuple(row)
                try:
                    key = str(entity_key(source, value, query))
                except BadId as exc:
                    report.note(report.bad_ids, query.label, f"{query.label}: {exc}: row skipped")
                    continue
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


#: How many unusable rows of one action query are looked at (and counted).
UNUSABLE_SAMPLE = 100


def unusable_actions(db: ReadOnlyDatabase, source: EntitySource, *, now: datetime) -> ReadReport:
    """Action rows the compiled SQL leaves out, reported as the reader reports them.

    A row with a null id names no entity; an instant the database cannot
    place in time (SQLite text that is no date, such as ``'not a date'`` or
    ``2026-13-01``; PostgreSQL's ``'infinity'``) is no occurrence. The
    compiled SQL skips both without a word, being a join and arithmetic; this
    finds them (one filtered scan per action query, at most
    ``UNUSABLE_SAMPLE`` rows each) so that the cycle can say which query and
    which value; on SQLite, the facts rows whose id names no entity too. The
    report is logged by the caller.
    """
    report = ReadReport(source.entity_type)
    no_entity = "id IS NULL"
    if db.dialect == "postgresql":
        unreadable = "NOT isfinite(CAST(at AS timestamptz))"
    else:
        unreadable = "strftime('%s', at) IS NULL"
        if source.id_type == "integer":
            # Text that is not the integer it reads as ('02'): sql.inputs.entity_id.
            no_entity += (
                " OR (typeof(id) = 'text' AND CAST(CAST(id AS INTEGER) AS TEXT) <> id)"
                " OR typeof(id) NOT IN ('integer', 'text', 'real')"
            )
    with db.session(source) as conn:
        for _, query in source.actions:
            sql = (
                f"SELECT CAST(id AS TEXT) AS id, CAST(at AS TEXT) AS at FROM (\n{query.sql}\n)"
                f" AS mailsync_q WHERE {no_entity} OR (at IS NOT NULL AND {unreadable})"
                f" LIMIT {UNUSABLE_SAMPLE}"
            )
            params = db.now_params(query, now, ZoneInfo(source.naive_timezone))
            label = query.label
            for row in db.execute(conn, query, sql, params):
                ident, at = tuple(row)
                if ident is None:
                    example = f"{label}: null id (at {at!r}): row left out"
                    report.note(report.bad_ids, label, example)
                elif not _names_an_entity(source, ident, query):
                    example = f"{label}: id {ident!r} names no entity: row left out"
                    report.note(report.bad_ids, label, example)
                else:
                    example = f"{label}: id {ident}: instant {at!r}: row left out"
                    report.note(report.bad_values, label, example)
        if db.dialect == "sqlite" and source.id_type == "integer":
            # Facts rows whose text id is not the integer it reads as: the
            # compiled SQL gives them to no entity, as the reader does.
            for fact_query in source.facts:
                query = fact_query.query
                sql = (
                    f"SELECT CAST(id AS TEXT) AS id FROM (\n{query.sql}\n) AS mailsync_q"
                    f" WHERE id IS NOT NULL AND NOT ({_KNOWN_ID}) LIMIT {UNUSABLE_SAMPLE}"
                )
                params = db.now_params(query, now, ZoneInfo(source.naive_timezone))
                for (ident,) in db.execute(conn, query, sql, params):
                    example = f"{query.label}: id {ident!r} names no entity: row left out"
                    report.note(report.bad_ids, query.label, example)
    return report


#: SQLite: an id that names an integer entity (``sql.inputs.entity_id``).
_KNOWN_ID = (
    "typeof(id) = 'integer'"
    " OR (typeof(id) = 'text' AND CAST(CAST(id AS INTEGER) AS TEXT) = id)"
    " OR (typeof(id) = 'real' AND CAST(id AS INTEGER) = id)"
)


def _names_an_entity(source: EntitySource, ident: str, query: Query) -> bool:
    try:
        entity_key(source, ident, query)
    except BadId:
        return False
    return True
