"""Reading the application's database: read-only sessions, streamed rows, merged records.

``sync.sources.model`` says *which* queries to run; this module runs them and turns
their rows into ``EntityRecord``s for the engine, without ever holding a
whole population in memory. A ``SourceReader`` is the one object callers
use; its parts:

* ``sessions``: the read-only engine and sessions, statement timeout,
  cancellation, database errors named after their query;
* ``streams``: every query as a sorted stream of rows, values converted
  (``values``) as they come;
* ``merge``: the streams merged into one record per entity by id, orphan
  rows counted, ordering checked;
* ``report``: what was odd in a read, logged when it ends;
* ``changes``: the smaller reads of what changed (watermark, changed ids,
  occurrences in a window).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from sync.records import ActionOccurrence, EntityRecord
from sync.sources import changes
from sync.sources.merge import Cursor, merge_records, merge_relations
from sync.sources.model import EntitySource, Query, SourcesConfig
from sync.sources.report import ReadReport
from sync.sources.rollups import RelationRow, StatusLookup
from sync.sources.sessions import DEFAULT_BATCH, ReadOnlyDatabase
from sync.sources.streams import (
    Key,
    action_stream,
    entity_key,
    fact_stream,
    list_stream,
    relation_stream,
)
from sync.sources.values import bind_instant

#: Entity ids per ``IN (...)`` list; SQLite's variable limit is the smaller one.
_IDS_PER_QUERY = {"sqlite": 900, "postgresql": 10000}


class SourceReader(ReadOnlyDatabase):
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
        super().__init__(
            url,
            batch_size=batch_size,
            engine_options=engine_options,
            statement_timeout=statement_timeout,
        )
        self.config = config

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
            with self.session(source) as conn:
                streams = [
                    relation_stream(self, conn, source, rel, now, chunk, report)
                    for rel in source.relations
                ]
                yield from merge_relations(streams)
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
        params = self.now_params(query, now, zone)
        if "since" in query.params:
            params["since"] = bind_instant(now, self.dialect, zone)
        with self.session(source) as conn:
            result = self.execute(conn, query, sql, params)
            keys = list(result.keys())
            result.close()
        return keys

    def watermark(self, entity_type: str, *, now: datetime) -> datetime | None:
        """The newest instant in the data (``changes.watermark``)."""
        return changes.watermark(self, self.config.entity(entity_type), now=now)

    def changed_ids(self, entity_type: str, *, since: datetime, now: datetime) -> list[str]:
        """Ids of entities with new data after ``since``, sorted
        (``changes.changed_ids``)."""
        source = self.config.entity(entity_type)
        return changes.changed_ids(self, source, since=since, now=now)

    def unusable_actions(self, entity_type: str, *, now: datetime) -> ReadReport:
        """Action rows the compiled SQL leaves out (``changes.unusable_actions``)."""
        return changes.unusable_actions(self, self.config.entity(entity_type), now=now)

    def occurrences(
        self,
        entity_type: str,
        actions: Iterable[str],
        *,
        since: datetime,
        now: datetime,
    ) -> dict[str, list[ActionOccurrence]]:
        """Occurrences of ``actions`` in [``since``, ``now``], by entity id
        (``changes.occurrences``)."""
        source = self.config.entity(entity_type)
        return changes.occurrences(self, source, actions, since=since, now=now)

    # -- internals ---------------------------------------------------------

    def _id_chunks(self, source: EntitySource, ids: Iterable[str]) -> Iterator[list[Key]]:
        keys = sorted({entity_key(source, i, source.list_query) for i in ids})
        size = _IDS_PER_QUERY.get(self.dialect, 900)
        for start in range(0, len(keys), size):
            yield keys[start : start + size]

    def _read(
        self,
        source: EntitySource,
        now: datetime,
        ids: list[Key] | None,
        related_statuses: Mapping[str, StatusLookup] | None,
        report: ReadReport,
    ) -> Iterator[EntityRecord]:
        with self.session(source) as conn:
            entities = list_stream(self, conn, source, now, ids, report)
            actions = [
                Cursor(
                    action_stream(self, conn, source, order, name, q, now, ids, report),
                    report,
                    orphans=True,
                )
                for order, (name, q) in enumerate(source.actions)
            ]
            facts = [
                (
                    fq.columns,
                    Cursor(
                        fact_stream(self, conn, source, fq.query, fq.columns, now, ids, report),
                        report,
                        orphans=True,
                    ),
                )
                for fq in source.facts
            ]
            relations: list[Cursor] = []
            if related_statuses is not None and source.rollups:
                relations = [
                    Cursor(
                        relation_stream(self, conn, source, rel, now, ids, report),
                        report,
                        orphans=True,
                    )
                    for rel in source.relations
                ]
            yield from merge_records(
                source, entities, actions, facts, relations, related_statuses, report
            )
