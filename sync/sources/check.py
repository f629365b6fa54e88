"""``mailsync check`` against the database: every query of sources.yaml runs.

The contract check (``sources.check_contract``) proves that sources.yaml
*declares* what the rules read; this proves the database *answers* it: each
query runs wrapped as ``SELECT * FROM (query) WHERE 1 = 0`` in the reader's
read-only transaction (so no row is read and nothing can be written), and
the columns it returns are compared with what its kind of query must return
(``docs/sources.md``). Every problem names sources.yaml, the query's line and
its path, so the systemd unit's start gate (``mailsync check``) fails before
the daemon would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from sync.exceptions import Problem
from sync.sources.model import EntitySource, Query, SourcesConfig
from sync.sources.reader import SourceReader
from sync.sources.sessions import SourceQueryError


def required_columns(source: EntitySource) -> Iterator[tuple[Query, tuple[str, ...], str]]:
    """Each query of ``source``, the columns it must return, and what it is."""
    yield source.list_query, ("id", "email"), "the entity list"
    for name, query in source.actions:
        yield query, ("id", "at"), f"action {name!r}"
    for facts in source.facts:
        yield facts.query, ("id", *(c.name for c in facts.columns)), "a facts query"
    for relation in source.relations:
        columns = ("id", "related_id", *(c.name for c in relation.columns))
        yield relation.query, columns, f"relation {relation.name!r}"
    if source.watermark is not None:
        yield source.watermark, ("at",), "the watermark"
    if source.changed is not None:
        yield source.changed, ("id",), "the changed query"


def probe_sources(
    reader: SourceReader, sources: SourcesConfig, entity_types: tuple[str, ...], now: datetime
) -> list[Problem]:
    """Every problem found by running the queries of ``entity_types`` for no rows."""
    problems: list[Problem] = []
    for entity_type in entity_types:
        source = sources.entities.get(entity_type)
        if source is None:
            continue  # reported by the contract check
        for query, required, what in required_columns(source):
            try:
                columns = reader.query_columns(source, query, now=now)
            except SourceQueryError as exc:
                cause = exc.__cause__
                refusal = str(cause.orig if isinstance(cause, sa.exc.DBAPIError) else exc)
                first = refusal.strip().splitlines()[0] if refusal.strip() else refusal
                problems.append(
                    Problem(query.file, query.line, query.path, f"the database refused it: {first}")
                )
                continue
            missing = [c for c in required if c not in columns]
            if missing:
                problems.append(
                    Problem(
                        query.file,
                        query.line,
                        query.path,
                        f"{what} must return the columns {', '.join(required)}; it returns "
                        f"{', '.join(columns) or 'none'} (missing: {', '.join(missing)})",
                    )
                )
    return problems
