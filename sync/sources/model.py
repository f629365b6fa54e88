"""The sources configuration: how mailsync reads the application's database.

``rules.yaml`` belongs to marketers and never contains SQL. ``sources.yaml``
belongs to the application's engineers: per entity type it says how to list
the entities, which query gives the occurrences of each action, which
queries give the facts, and (for facts that depend on other entities'
derived statuses) which relation rows to read and how to roll them up.

This module is that file's typed, behaviour-free model (``SourcesConfig``),
and the check that it gives what a rule set reads (``check_contract``).
``sync.sources.schema`` reads and validates the file into it; reading the
database is ``sync.sources.reader``'s job; rolling relations up is
``rollups.py``'s.

Every query is plain SQL run through SQLAlchemy ``text()``; the only values
that ever reach it are bound parameters (``:now``, ``:since``) and the
entity-id filter that the reader wraps around it, never string formatting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sync.exceptions import Problem, RulesError
from sync.records import FactValue
from sync.rules.validate import Path_
from sync.sources.rollups import Rollup

FactType = Literal["bool", "number", "string", "instant"]
IdType = Literal["integer", "text"]

FACT_TYPES: tuple[FactType, ...] = ("bool", "number", "string", "instant")
ID_TYPES: tuple[IdType, ...] = ("integer", "text")

#: Bound parameters each kind of query may use. ``ids`` is never written by
#: hand: the reader wraps queries in its own ``WHERE id IN (...)``.
PARAMS_READ = frozenset({"now"})
PARAMS_CHANGED = frozenset({"now", "since"})


@dataclass(frozen=True)
class Query:
    """One SQL text from the file, with where it was written (for messages)."""

    sql: str
    file: str
    line: int | None
    path: Path_
    params: frozenset[str]

    @property
    def label(self) -> str:
        """``sources.yaml:12 (entities ==> user ==> actions ==> signup)``."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} ({' ==> '.join(str(p) for p in self.path)})"


@dataclass(frozen=True)
class Column:
    """A typed column of a facts or relations query.

    ``default`` is the value an entity gets when the query has no row for it
    (``has_wallet: {type: bool, default: false}`` lets the query return only
    the users that do have one).
    """

    name: str
    type: FactType
    default: FactValue = None


@dataclass(frozen=True)
class FactQuery:
    """A query returning ``id`` plus one column per fact."""

    query: Query
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class RelationSource:
    """A query returning ``id``, ``related_id`` and per-relation columns.

    ``name`` is the related entity type (``match``): its evaluated statuses
    are what the rollups look up.
    """

    name: str
    query: Query
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class EntitySource:
    """Everything needed to read one entity type."""

    entity_type: str
    id_type: IdType
    naive_timezone: str
    list_query: Query
    actions: tuple[tuple[str, Query], ...] = ()
    facts: tuple[FactQuery, ...] = ()
    relations: tuple[RelationSource, ...] = ()
    rollups: tuple[Rollup, ...] = ()
    watermark: Query | None = None
    changed: Query | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.actions)

    @property
    def fact_names(self) -> tuple[str, ...]:
        """Declared fact names (identity columns are known only when the list query runs)."""
        names = [c.name for fq in self.facts for c in fq.columns]
        return (*names, *(r.fact for r in self.rollups))


@dataclass(frozen=True)
class SourcesConfig:
    """A whole ``sources.yaml``."""

    file: str
    entities: Mapping[str, EntitySource]

    def entity(self, entity_type: str) -> EntitySource:
        try:
            return self.entities[entity_type]
        except KeyError:
            known = ", ".join(sorted(self.entities)) or "none"
            raise RulesError(
                [
                    Problem(
                        self.file,
                        None,
                        ("entities",),
                        f"no entity type {entity_type!r} (known: {known})",
                    )
                ]
            ) from None


def check_contract(
    config: SourcesConfig,
    entity_type: str,
    *,
    actions: Sequence[str] = (),
    facts: Sequence[str] = (),
) -> list[Problem]:
    """Problems when the sources do not provide what a rule set needs.

    Identity columns of the list query count as facts, but are only known
    once it runs, so ``facts`` here are checked against declared facts and
    rollups; pass identity names separately if needed.
    """
    problems: list[Problem] = []
    if entity_type not in config.entities:
        return [Problem(config.file, None, ("entities",), f"no entity type {entity_type!r}")]
    source = config.entities[entity_type]
    where = source.list_query
    for name in actions:
        if name not in source.action_names:
            problems.append(
                Problem(
                    config.file,
                    where.line,
                    ("entities", entity_type, "actions"),
                    f"no query for action {name!r}",
                )
            )
    for name in facts:
        if name not in source.fact_names:
            problems.append(
                Problem(
                    config.file,
                    where.line,
                    ("entities", entity_type, "facts"),
                    f"no query for fact {name!r}",
                )
            )
    return problems
