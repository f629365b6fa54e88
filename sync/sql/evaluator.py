"""Running the compiled SQL: whole populations, sets of ids, incremental steps.

``sync.sql.compiler`` builds the statement for an entity type; this module
runs it against the application database, streams and decodes the rows
(``SqlEvaluation``), and offers the incremental step (``keys_since`` +
``evaluate(keys=...)``, combined with ``later_keys``). See docs/sql.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.compiler import SQLCompiler

from sync.exceptions import ConfigurationError
from sync.rules.model import Mode, Ruleset
from sync.sources.model import EntitySource, SourcesConfig
from sync.sources.sessions import read_only_engine
from sync.sources.values import bind_instant
from sync.sql.actions import Baselines
from sync.sql.compiled import ActionKeys, CompiledEntity, SqlEvaluation
from sync.sql.compiler import PG_SETTINGS, compile_entity, compile_reinit
from sync.sql.expr import to_micros
from sync.sql.inputs import CKEYS, IDS, KEYS_JSON, NOW_US, REINIT_US, SINCE, SKEYS, UNSETTLED
from sync.sql.keys import compile_keys_since

log = logging.getLogger(__name__)


class SqlEvaluator:
    """Evaluates whole populations of one application database in SQL.

    ``with SqlEvaluator(rules, sources, url) as ev: for result in
    ev.evaluate("user", now=now): ...`` Each call is one read-only
    transaction (the sources' engine rules: ``READ ONLY`` on PostgreSQL,
    ``mode=ro`` on SQLite), streamed in batches of ``batch_size`` rows.
    """

    def __init__(
        self,
        ruleset: Ruleset,
        sources: SourcesConfig,
        url: str | sa.URL,
        *,
        batch_size: int = 5000,
        engine: Engine | None = None,
        pg_settings: Mapping[str, str] | None = None,
        track: Callable[[Connection], AbstractContextManager[None]] | None = None,
        stored: sa.TableClause | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.sources = sources
        self.engine = engine if engine is not None else read_only_engine(url)
        self.dialect = self.engine.dialect.name
        self.batch_size = batch_size
        self.pg_settings = dict(PG_SETTINGS if pg_settings is None else pg_settings)
        self._compiled: dict[tuple[Any, ...], CompiledEntity] = {}
        self._since: dict[str, sa.Select[Any] | None] = {}
        self._reinit: dict[str, sa.Select[Any]] = {}
        self._support: dict[str, str | None] = {}
        #: Registers each connection while it runs (the daemon's SIGTERM
        #: cancels running queries: ``SourceReader.tracked``).
        self._track = track
        self.stored = stored  # entity_state, joined when in this database
        #: Statements compiled for the driver (``_stream`` on PostgreSQL).
        self._driver_sql: dict[sa.Select[Any], SQLCompiler] = {}

    def __enter__(self) -> SqlEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()

    def compile(
        self,
        conn: Connection,
        entity_type: str,
        *,
        with_ids: bool = False,
        given_keys: bool = False,
        baselines: Baselines | None = None,
        ordered: bool = True,
        fingerprint: bool = False,
        skip_settled: bool = False,
        digests: bool = False,
    ) -> CompiledEntity:
        """The entity type's statement for these options (built once each);
        with ``fingerprint`` on PostgreSQL, each row also carries its digest
        (``SqlEvaluation.fp``) and, with ``stored``, the state store's row;
        with ``skip_settled`` too, the settled entities' rows are left out.
        ``digests``: only ids and digests (``CompiledEntity.digests``)."""
        baselines = baselines or Baselines()
        fingerprint = fingerprint and self.dialect == "postgresql"
        skip_settled = skip_settled and fingerprint and self.stored is not None and not with_ids
        cache: tuple[Any, ...] = (entity_type, with_ids, given_keys, baselines.reinit)
        cache += (baselines.table, ordered, fingerprint, skip_settled, digests)
        if cache in self._compiled:
            return self._compiled[cache]
        source = self.sources.entity(entity_type)
        _check_dialect(self.dialect, entity_type, source)
        compiled = compile_entity(
            self.ruleset,
            self.sources,
            entity_type,
            self.dialect,
            identity=identity_columns(conn, source),
            baselines=baselines,
            with_ids=with_ids,
            given_keys=given_keys,
            ordered=ordered,
        )
        if digests:
            md5 = not _hashable(conn, compiled, with_ids=with_ids)
            compiled = compiled.digests(md5=md5)
        elif fingerprint:
            md5 = not _hashable(conn, compiled, with_ids=with_ids)
            compiled = compiled.with_fingerprint(
                ordered=ordered, stored=self.stored, md5=md5, skip_settled=skip_settled
            )
        self._compiled[cache] = compiled
        return compiled

    def supports(self, entity_type: str) -> str | None:
        """None when ``entity_type`` can be evaluated in SQL here, else why not
        (the daemon then evaluates that type with the Python engine)."""
        if entity_type not in self._support:
            source = self.sources.entity(entity_type)
            reason: str | None = None
            try:
                with self._transaction(source) as conn:
                    self.compile(conn, entity_type, with_ids=False)
            except (ConfigurationError, NotImplementedError) as exc:
                reason = str(exc)
            except sa.exc.DBAPIError as exc:
                reason = f"the database refused the compiled query: {exc.orig}"
            self._support[entity_type] = reason
        return self._support[entity_type]

    def evaluate(
        self,
        entity_type: str,
        *,
        now: datetime,
        ids: Iterable[str] | None = None,
        baselines: Baselines | None = None,
        reinit_at: datetime | None = None,
        ordered: bool = True,
        keys: Mapping[str, ActionKeys] | None = None,
        fingerprint: bool = False,
    ) -> Iterator[SqlEvaluation]:
        """Every entity of ``entity_type`` (or only ``ids``) at ``now``, by id
        (in no particular order with ``ordered=False``, which saves a sort).

        ``keys`` (instead of ``ids``): evaluate exactly these entities, their
        latest actions being the given keys rather than read from the action
        queries: an incremental evaluation (see ``keys_since``).

        ``fingerprint``: on PostgreSQL, each result carries its row's digest
        (``SqlEvaluation.fp``; None elsewhere)."""
        for compiled, row in self.rows(
            entity_type,
            now=now,
            ids=ids,
            baselines=baselines,
            reinit_at=reinit_at,
            ordered=ordered,
            keys=keys,
            fingerprint=fingerprint,
        ):
            yield compiled.decode(row)

    def rows(
        self,
        entity_type: str,
        *,
        now: datetime,
        ids: Iterable[str] | None = None,
        baselines: Baselines | None = None,
        reinit_at: datetime | None = None,
        ordered: bool = True,
        keys: Mapping[str, ActionKeys] | None = None,
        fingerprint: bool = False,
        unsettled: Collection[str] | None = None,
    ) -> Generator[tuple[CompiledEntity, Sequence[Any]], None, None]:
        """The raw result rows (for callers that decode lazily); ``close()``
        ends the query's transaction when the caller stops early.

        ``unsettled`` (with ``fingerprint``, for the whole population, the
        state store joined): leave out the rows of settled entities but
        these ids (``CompiledEntity.with_fingerprint(skip_settled=True)``).
        Whether it did is ``compiled.skips_settled``."""
        if keys is not None:
            if ids is not None:
                raise ValueError("evaluate: give ids or keys, not both")
            if self.ruleset.entity(entity_type).mode is Mode.CONDITIONS:
                raise ValueError(f"{entity_type}: statuses chosen by conditions have no keys")
            ids = keys
        if reinit_at is not None:
            baselines = Baselines(table=baselines.table if baselines else None, reinit=True)
        source = self.sources.entity(entity_type)
        with self._transaction(source) as conn:
            compiled = self.compile(
                conn,
                entity_type,
                with_ids=ids is not None,
                given_keys=keys is not None,
                baselines=baselines,
                ordered=ordered,
                fingerprint=fingerprint,
                skip_settled=unsettled is not None,
            )
            params = compiled.params(now, reinit_at=reinit_at)
            if compiled.skips_settled and unsettled:
                params[UNSETTLED] = sorted(unsettled)
            chunks: list[list[Any] | None] = [None]
            if ids is not None:
                wanted = sorted({_key(source, i) for i in ids})
                # One array parameter on PostgreSQL; SQLite binds each id.
                size = 100_000 if self.dialect == "postgresql" else 900
                chunks = [wanted[i : i + size] for i in range(0, len(wanted), size)]
            for chunk in chunks:
                if chunk is not None:
                    params[IDS] = chunk
                if keys is not None and chunk is not None:
                    params.update(_key_params(self.dialect, chunk, keys))
                for row in self._stream(conn, compiled.select, params):
                    yield compiled, row

    def digests(self, entity_type: str, *, now: datetime) -> Generator[tuple[str, str]]:
        """``(id, row digest)`` of every entity at ``now``, in the byte order
        of the ids (PostgreSQL only): the digests ``rows(fingerprint=True)``
        gives, without the rows (``CompiledEntity.digests``)."""
        if self.dialect != "postgresql":
            raise NotImplementedError("row digests are computed by PostgreSQL only")
        source = self.sources.entity(entity_type)
        with self._transaction(source) as conn:
            compiled = self.compile(conn, entity_type, ordered=False, digests=True)
            for row in self._stream(conn, compiled.select, compiled.params(now)):
                yield row[0], row[1]

    def digest_basis(self, entity_type: str) -> str:
        """``CompiledEntity.basis`` of the statement ``digests`` runs."""
        with self._transaction(self.sources.entity(entity_type)) as conn:
            return self.compile(conn, entity_type, ordered=False, digests=True).basis

    def keys_since(
        self, entity_type: str, *, since: datetime, now: datetime
    ) -> dict[str, ActionKeys]:
        """The entities with action occurrences in (``since``, ``now``], and
        the keys of their latest ones among those occurrences alone.

        With the keys of an evaluation at ``since`` (``SqlEvaluation.keys``),
        ``later_keys(before, new)`` gives each entity's keys at ``now``, and
        ``evaluate(keys=...)`` its status, without reading its older
        occurrences again: one range scan per action query (on an indexed
        instant column) instead of a look-up per entity and action. It sees
        what the daemon's watermark sees: an occurrence written later with an
        instant at or before ``since`` is not counted.
        """
        entity, source = self.ruleset.entity(entity_type), self.sources.entity(entity_type)
        _check_dialect(self.dialect, entity_type, source)
        if entity.mode is Mode.CONDITIONS:
            raise ValueError(f"{entity_type}: statuses chosen by conditions have no keys")
        if entity_type not in self._since:
            self._since[entity_type] = compile_keys_since(entity, source, self.dialect)
        query = self._since[entity_type]
        if query is None:
            return {}
        tz = ZoneInfo(source.naive_timezone)
        params: dict[str, Any] = {
            "now": bind_instant(now, self.dialect, tz),
            NOW_US: to_micros(now),
        }
        params[SINCE] = (
            bind_instant(since, self.dialect, tz)
            if self.dialect == "postgresql"
            else to_micros(since)
        )
        with self._transaction(source) as conn:
            return {
                str(ident): (skey, ckey) for ident, skey, ckey in self._stream(conn, query, params)
            }

    def reinit_states(self, entity_type: str, *, at: datetime) -> Iterator[tuple[str, str | None]]:
        """``(id, state)`` of every entity: the state a re-initialisation at
        ``at`` gives from current facts (None when no line of ``reinit:``
        holds), as ``engine.reinit_state`` gives it entity by entity."""
        entity, source = self.ruleset.entity(entity_type), self.sources.entity(entity_type)
        _check_dialect(self.dialect, entity_type, source)
        if entity_type not in self._reinit:
            self._reinit[entity_type] = compile_reinit(
                self.ruleset, self.sources, entity_type, self.dialect
            )
        names = list(entity.states)
        tz = ZoneInfo(source.naive_timezone)
        params = {"now": bind_instant(at, self.dialect, tz), REINIT_US: to_micros(at)}
        with self._transaction(source) as conn:
            for ident, state in self._stream(conn, self._reinit[entity_type], params):
                yield str(ident), None if state is None else names[state]

    def _tracking(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext() if self._track is None else self._track(conn)

    @contextmanager
    def _transaction(self, source: EntitySource) -> Iterator[Connection]:
        """A read-only transaction with the evaluating settings, rolled back."""
        with self.engine.connect() as conn, self._tracking(conn):
            conn.begin()
            if self.dialect == "postgresql":
                # As in the reader: naive timestamps are wall-clock times there.
                settings = {"TimeZone": source.naive_timezone, **self.pg_settings}
                calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(settings)))
                values: dict[str, str] = {}
                for i, (name, value) in enumerate(settings.items()):
                    values[f"n{i}"], values[f"v{i}"] = name, value
                conn.execute(sa.text(f"SELECT {calls}"), values)
            yield conn
            conn.rollback()

    def _stream(
        self, conn: Connection, statement: sa.Select[Any], params: dict[str, Any]
    ) -> Iterator[Sequence[Any]]:
        return _stream(
            conn, statement, params, batch_size=self.batch_size, driver_sql=self._driver_sql
        )


def _stream(
    conn: Connection,
    statement: sa.Select[Any],
    params: dict[str, Any],
    *,
    batch_size: int,
    driver_sql: dict[sa.Select[Any], SQLCompiler],
) -> Iterator[Sequence[Any]]:
    """The result rows, ``batch_size`` at a time (``driver_sql``: the
    statements already compiled for the driver).

    On PostgreSQL (with libpq 17 or later) the rows come as the server
    produces them (libpq's chunked-rows mode, through psycopg's
    ``stream``), not through a server-side cursor: a query run by
    ``DECLARE … CURSOR`` cannot use parallel workers, and each ``FETCH``
    leaves the server idle while this process decodes the previous batch.
    Streamed, the server computes the next rows while these are decoded
    (measured at 1M users: 10.9 s with a cursor, 7.9 s streamed;
    ``benchmarks/README.md``). Elsewhere, SQLAlchemy's ``yield_per``.
    """
    if conn.dialect.name == "postgresql" and psycopg.pq.version() >= 170000:
        sql = driver_sql.get(statement)
        if sql is None:
            compiled = statement.compile(dialect=conn.dialect)
            assert isinstance(compiled, SQLCompiler)
            sql = driver_sql[statement] = compiled
        # IN lists of the rules' own values become plain parameters.
        expanded = sql.construct_expanded_state(params)
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        # Binary results: integers and instants are read without parsing
        # text (0.7 instead of 1.3 µs a row at 1M users).
        with driver.cursor(binary=True) as cursor:
            yield from cursor.stream(
                expanded.statement,
                _integer_arrays_as_text(expanded.parameters),
                size=batch_size,
            )
        return
    yield from conn.execute(statement.execution_options(yield_per=batch_size), params)


def identity_columns(conn: Connection, source: EntitySource) -> tuple[str, ...]:
    """The list query's columns besides id and email (asks the database,
    reading no row: the reader only learns them by running the query)."""
    probe = sa.text(f"SELECT * FROM (\n{source.list_query.sql}\n) AS m_probe WHERE 1 = 0")
    tz = ZoneInfo(source.naive_timezone)
    params = {"now": bind_instant(datetime.now().astimezone(), conn.dialect.name, tz)}
    names = conn.execute(probe, params if "now" in source.list_query.params else {}).keys()
    return tuple(n.lower() for n in names if n.lower() not in ("id", "email"))


def _check_dialect(dialect: str, entity_type: str, source: EntitySource) -> None:
    if dialect == "sqlite" and source.naive_timezone != "UTC":
        raise ConfigurationError(
            f"{entity_type}: SQLite has no time-zone database, so the compiled SQL"
            f" reads naive instants as UTC only (naive_timezone is"
            f" {source.naive_timezone}); use the Python evaluator"
        )


def _hashable(conn: Connection, compiled: CompiledEntity, *, with_ids: bool) -> bool:
    """Whether PostgreSQL can hash every result column of ``compiled``
    (``hash_record_extended``; a ``json`` column cannot be). The statement
    is run with ``LIMIT 0`` for its column types, then a row of nulls of
    those types is hashed inside a savepoint."""
    params: dict[str, Any] = compiled.params(datetime.now().astimezone())
    if with_ids:
        params[IDS] = []
    result = conn.execute(compiled.select.limit(0), params)
    oids = [column[1] for column in result.cursor.description]
    result.close()
    names = conn.execute(
        sa.text("SELECT format_type(t, NULL) FROM unnest(CAST(:oids AS oid[])) AS t"),
        {"oids": oids},
    ).scalars()
    nulls = ", ".join(f"CAST(NULL AS {name})" for name in names)
    try:
        with conn.begin_nested():
            conn.execute(sa.text(f"SELECT hash_record_extended(ROW({nulls}), 0)"))
    except sa.exc.DBAPIError as exc:
        if not isinstance(exc.orig, psycopg.errors.UndefinedFunction):
            raise
        log.warning(
            "%s: a result column has a type PostgreSQL cannot hash; the row digests are"
            " MD5s of the row's text (slower)",
            compiled.entity.name,
        )
        return False
    return True


def _key(source: EntitySource, value: str) -> Any:
    return int(value) if source.id_type == "integer" else value


def _key_params(
    dialect: str, chunk: Sequence[Any], keys: Mapping[str, ActionKeys]
) -> dict[str, Any]:
    """The bound values of ``sync.sql.keys.bound_keys`` for the ids of ``chunk``."""
    given = [keys[str(i)] for i in chunk]
    if dialect == "postgresql":
        return {SKEYS: [k[0] for k in given], CKEYS: [k[1] for k in given]}
    return {KEYS_JSON: json.dumps([[i, k[0], k[1]] for i, k in zip(chunk, given, strict=True)])}


def _integer_arrays_as_text(params: Mapping[str, Any]) -> dict[str, Any]:
    """Integer arrays as PostgreSQL array literals (``{1,2,NULL}``), which
    the query casts to ``BIGINT[]``: psycopg adapts a list element by element
    in Python (30 to 50 ms for the 42,000 values of a 1M-user tick), a
    join takes 2 ms."""
    converted = dict(params)
    for name in (IDS, SKEYS, CKEYS):
        values = params.get(name)
        if isinstance(values, list) and all(v is None or v.__class__ is int for v in values):
            converted[name] = "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return converted


def later_keys(first: ActionKeys | None, second: ActionKeys | None) -> ActionKeys:
    """The keys of both histories together: the later of each pair (keys
    order by instant, then declaration order, as the evaluation does)."""
    if first is None:
        return second or (None, None)
    if second is None:
        return first
    return (_later(first[0], second[0]), _later(first[1], second[1]))


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None or a >= b else b
