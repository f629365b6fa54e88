"""The population: the entity list with every fact the evaluation reads.

The ``list`` query, LEFT JOINed with every ``facts`` query the evaluation
needs (``needed_facts``; a missing row gives the column's default, as in the
reader) and, for rollup facts, with the counts ``sync.sql.rollups`` computes
from the related entity's own compiled query. One subquery, plus how to read
each fact from it (``fact_values``: SQL values typed for conditions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.rules.expressions import Type, references
from sync.rules.model import Entity, Mode
from sync.sources.model import Column, EntitySource
from sync.sql.expr import Naming, SqlExpr, instant_micros
from sync.sql.inputs import entity_id, in_ids, source_query


@dataclass(frozen=True)
class Population:
    """The entities with their facts: one subquery, and how to read it."""

    rows: FromClause
    #: fact name → (source column type or 'identity'/'rollup', result column name)
    columns: Mapping[str, tuple[str, str]]


def needed_facts(entity: Entity, *, reinit: bool) -> frozenset[str]:
    """The facts this evaluation reads: merge fields' sources, the priority
    list of a condition-mode entity (and its ``since``), the ``reinit:``
    list when re-initialising at an instant, and what the derived facts among
    them read. A facts query none of whose columns is needed is not joined:
    a status that only actions decide does not pay for facts only
    ``mailsync reinit`` reads."""
    names = {m.source for m in entity.merge_fields}
    conditions = list(entity.choices) if entity.mode is Mode.CONDITIONS else []
    if entity.mode is Mode.CONDITIONS and entity.since:
        names.add(entity.since)
    if reinit:
        conditions += entity.reinit
    for choice in conditions:
        if choice.when is not None:
            names |= references(choice.when)
    derived = {d.name: d for d in entity.derived}
    pending = [n for n in names if n in derived]
    while pending:
        for name in references(derived[pending.pop()].expr):
            if name in derived and name not in names:
                pending.append(name)
            names.add(name)
    return frozenset(names)


def compile_population(
    source: EntitySource,
    naming: Naming,
    identity: Sequence[str],
    with_ids: bool,
    needed: frozenset[str],
    counts: FromClause | None,
) -> Population:
    """The population subquery; ``counts`` are the rollup counts per entity
    (``sync.sql.rollups``), given when a needed fact is a rollup."""
    listed = source_query(source.list_query.sql, ("id", "email", *identity), "m_list")
    selected: list[SqlExpr] = [listed.c.id, listed.c.email]
    columns: dict[str, tuple[str, str]] = {}
    for name in identity:
        label = f"f_{name}"
        selected.append(listed.c[name].label(label))
        columns[name] = ("identity", label)
    joined: FromClause = listed
    for number, fact_query in enumerate(source.facts):
        if not any(c.name in needed for c in fact_query.columns):
            continue
        names = ("id", *(c.name for c in fact_query.columns))
        sub: FromClause = source_query(fact_query.query.sql, names, f"m_facts{number}")
        if naming.dialect == "sqlite" and source.id_type == "integer":
            # Ids as the reader takes them ('2' is 2, '01' no entity: see
            # ``entity_id``), materialized so that the join still gets
            # SQLite's automatic index on them.
            keyed = sa.select(
                entity_id(sub.c.id, naming.dialect, source.id_type).label("id"),
                *(sub.c[n] for n in names[1:]),
            )
            sub = naming.table(keyed, f"m_facts{number}_keyed")
        if with_ids:
            # Only the requested entities' rows: the planner does not push the
            # list's filter through the join into a DISTINCT or a UNION.
            sub = (
                sa.select(*(sub.c[n] for n in names))
                .where(in_ids(sub.c.id, naming, source.id_type))
                .subquery(f"m_facts{number}_ids")
            )
        joined = joined.outerjoin(sub, sub.c.id == listed.c.id)
        for column in fact_query.columns:
            label = f"f_{column.name}"
            selected.append(_with_default(sub, column).label(label))
            columns[column.name] = (column.type, label)
    if counts is not None:
        joined = joined.outerjoin(counts, counts.c.id == listed.c.id)
        for rollup in source.rollups:
            label = f"f_{rollup.fact}"
            # Every rollup has a value, 0 when nothing counts (as compute_rollups).
            selected.append(sa.func.coalesce(counts.c[rollup.fact], 0).label(label))
            columns[rollup.fact] = ("rollup", label)
    select = sa.select(*selected).select_from(joined)
    if with_ids:
        select = select.where(in_ids(listed.c.id, naming, source.id_type))
    return Population(naming.table(select, "m_population"), columns)


def _with_default(sub: FromClause, column: Column) -> SqlExpr:
    if column.default is None:
        return sub.c[column.name]
    # No row → the default; a row with null stays null (as the reader does).
    return sa.case((sub.c.id.is_(None), sa.literal(column.default)), else_=sub.c[column.name])


def fact_values(entity: Entity, population: Population, dialect: str) -> Any:
    """A function: row source → fact name → SQL value typed for conditions."""

    def values(rows: FromClause) -> dict[str, SqlExpr]:
        result: dict[str, SqlExpr] = {}
        for name, (_, label) in population.columns.items():
            raw = rows.c[label]
            kind = entity.facts.get(name)
            if kind is Type.INSTANT:
                result[name] = instant_micros(raw, dialect)
            elif kind is Type.BOOL and dialect == "postgresql":
                result[name] = sa.cast(raw, sa.Boolean)
            elif kind is Type.STRING:
                result[name] = sa.cast(raw, sa.Text)
            else:
                result[name] = raw
        return result

    return values
