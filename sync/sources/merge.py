"""Merging a read's sorted streams into one record per entity.

The entity list is the driving stream and the action, fact and relation
streams are merged into it by entity id (a k-way merge join): memory is one
entity plus one buffered batch per query, whatever the population. Rows
whose id is not in the list (an action of a deleted user, say) are counted
and reported, never silently attached to someone else; a query that is not
ordered the way the reader expects fails loudly.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sync.records import ActionOccurrence, EntityRecord, FactValue
from sync.sources.model import Column, EntitySource
from sync.sources.report import ReadReport
from sync.sources.rollups import RelationRow, StatusLookup, compute_rollups
from sync.sources.sessions import SourceQueryError
from sync.sources.streams import Key, Stream


class Cursor:
    """A peekable sorted stream that checks its own ordering as it goes."""

    _DONE = object()

    def __init__(self, stream: Stream, report: ReadReport, *, orphans: bool) -> None:
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


def merge_records(
    source: EntitySource,
    entities: Stream,
    actions: Sequence[Cursor],
    facts: Sequence[tuple[Sequence[Column], Cursor]],
    relations: Sequence[Cursor],
    related_statuses: Mapping[str, StatusLookup] | None,
    report: ReadReport,
) -> Iterator[EntityRecord]:
    """One record per entity of the driving ``entities`` stream, in id order,
    with its facts, action occurrences and (given ``related_statuses``) the
    rollup facts of its relation rows, taken from the other queries' cursors;
    the rows no entity takes are orphans."""
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


def merge_relations(streams: Sequence[Stream]) -> Iterator[tuple[str, tuple[RelationRow, ...]]]:
    """(entity id, its relation rows) from sorted relation streams, in id order."""
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
