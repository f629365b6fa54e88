"""Cross-entity facts: rollups over the related entity's compiled statuses.

A rollup counts, per entity, the relation rows whose related entity has one
of some statuses (``sync.sources.rollups`` says what to count). In SQL the
related entity's statuses come from its own compiled query, nested in this
one and joined to the relation rows; a status is numbered
``state * 1000 + rung``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.exceptions import ConfigurationError
from sync.rules.model import Entity, Ruleset
from sync.sources.model import EntitySource, SourcesConfig
from sync.sources.rollups import Rollup
from sync.sql.expr import Naming, SqlExpr
from sync.sql.inputs import in_ids, source_query

#: ``m_cur * _STATUS_BASE + m_step`` numbers a status (state and rung) in SQL.
_STATUS_BASE = 1000

#: The compiled statuses (``id, m_cur, m_step, ...``) of a related entity
#: type, under a nested naming: ``sync.sql.compiler`` provides it.
CompileRelated = Callable[[Entity, EntitySource, Naming], sa.Select[Any]]


def status_codes(entity: Entity, patterns: Sequence[str]) -> list[int]:
    """``state * 1000 + rung`` of every status matching one of ``patterns``."""
    codes = []
    for number, state in enumerate(entity.states.values()):
        for step in range(len(state.steps)):
            name = state.status_name(step)
            if any(fnmatchcase(name, p) for p in patterns):
                codes.append(number * _STATUS_BASE + step)
    return codes


def rollup_counts(
    ruleset: Ruleset,
    sources: SourcesConfig,
    source: EntitySource,
    naming: Naming,
    with_ids: bool,
    compile_related: CompileRelated,
) -> FromClause:
    """Per entity, one count column per rollup, from the relation rows joined
    with the related entity's statuses computed by its own compiled query."""
    by_relation: dict[str, list[Rollup]] = {}
    for rollup in source.rollups:
        by_relation.setdefault(rollup.relation, []).append(rollup)
    parts: list[FromClause] = []
    for number, relation in enumerate(r for r in source.relations if r.name in by_relation):
        related_entity = ruleset.entity(relation.name)
        related = sources.entity(relation.name)
        if related.rollups:
            raise ConfigurationError(
                f"rollups of {source.entity_type} read {relation.name}, which has rollups"
                " itself; only one level is supported"
            )
        inner = compile_related(related_entity, related, naming.nested(f"r{number}_"))
        statuses = naming.table(inner, f"m_related{number}")
        code = statuses.c.m_cur * _STATUS_BASE + statuses.c.m_step
        rel = source_query(
            relation.query.sql,
            ("id", "related_id", *(c.name for c in relation.columns)),
            f"{naming.prefix}m_relation{number}",
        )
        counts: list[SqlExpr] = []
        for rollup in by_relation[relation.name]:
            tests: list[SqlExpr] = []
            if rollup.statuses:
                tests.append(code.in_(status_codes(related_entity, rollup.statuses)))
            for column, allowed in rollup.where:
                tests.append(rel.c[column].in_(list(allowed)))
            counted = sa.and_(*tests) if tests else sa.true()
            counts.append(sa.func.sum(sa.case((counted, 1), else_=0)).label(rollup.fact))
        select = (
            sa.select(rel.c.id, *counts)
            .select_from(rel.outerjoin(statuses, statuses.c.id == rel.c.related_id))
            .group_by(rel.c.id)
        )
        if with_ids:
            select = select.where(in_ids(rel.c.id, naming, source.id_type))
        parts.append(naming.table(select, f"m_counts{number}"))
    if len(parts) != 1:
        raise ConfigurationError(
            f"{source.entity_type}: rollups over {len(parts)} relations; one is supported"
        )
    return parts[0]
