"""Entry by conditions: the state the priority list chooses, and since when.

The priority list is one ``CASE`` over the facts (``sync.sql.expr``); the
instants at which the choice may change are the per-entity condition
thresholds, unrolled as rows (``UNION ALL``, one per threshold expression),
evaluated at ``t`` and ``t - 1µs`` and aggregated: the latest ``t <= now``
before which another state was chosen is the entry, the earliest ``t > now``
at which another state is chosen is the next change.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.rules.expressions import time_tests
from sync.rules.model import Entity
from sync.sql.expr import ExprCompiler, Naming, SqlExpr
from sync.sql.merge import derived_columns
from sync.sql.timeline import state_indexes

_TICK = 1  # µs: the engine looks at the choice just before a threshold


def _choice(entity: Entity, compiler: ExprCompiler) -> SqlExpr:
    """The index of the first state whose condition holds (null if none)."""
    index = state_indexes(entity)
    whens = [(compiler.condition(c.when), index[c.state]) for c in entity.choices if c.when]
    fallback = next((index[c.state] for c in entity.choices if c.when is None), None)
    if not whens:
        return sa.literal(fallback, sa.Integer)
    return sa.case(*whens, else_=fallback)


def entry_by_conditions(
    entity: Entity,
    rows: FromClause,
    facts: Any,
    now: SqlExpr,
    compiler: ExprCompiler,
    naming: Naming,
) -> sa.Select[Any]:
    current = _choice(entity, compiler)
    chosen = naming.table(sa.select(rows, current.label("m_state")), "m_chosen")
    chosen_facts = facts(chosen)
    at_chosen = ExprCompiler(entity, chosen_facts, now)
    since = at_chosen.value(entity.since) if entity.since else sa.null()
    derived = derived_columns(entity, at_chosen)
    no_code = sa.cast(sa.null(), sa.BigInteger).label("m_code")
    no_key = sa.cast(sa.null(), sa.BigInteger).label("m_skey")

    # Every distinct threshold expression (fact ± offset) of every condition.
    tests = {test.threshold: None for c in entity.choices if c.when for test in time_tests(c.when)}
    if not tests:
        # Nothing depends on time: the state held all along.
        return sa.select(
            chosen,
            sa.cast(since, sa.BigInteger).label("m_entered"),
            sa.cast(sa.null(), sa.BigInteger).label("m_entry_next"),
            no_code,
            no_key,
            *derived,
        )
    candidates = sa.union_all(
        *(sa.select(chosen, at_chosen.compile(threshold).label("m_t")) for threshold in tests)
    ).subquery(naming.prefix + "m_candidates")
    cand_facts = facts(candidates)
    t = candidates.c.m_t
    at_t = _choice(entity, ExprCompiler(entity, cand_facts, t))
    before_t = _choice(entity, ExprCompiler(entity, cand_facts, t - _TICK))
    current_c = candidates.c.m_state
    changes = naming.table(
        sa.select(
            candidates.c.id,
            sa.func.max(
                sa.case((sa.and_(t <= now, before_t.is_distinct_from(current_c)), t))
            ).label("m_last"),
            sa.func.min(sa.case((sa.and_(t > now, at_t.is_distinct_from(current_c)), t))).label(
                "m_first"
            ),
        )
        .where(t.is_not(None))
        .group_by(candidates.c.id),
        "m_changes",
    )
    return sa.select(
        chosen,
        sa.func.coalesce(changes.c.m_last, since).label("m_entered"),
        changes.c.m_first.label("m_entry_next"),
        no_code,
        no_key,
        *derived,
    ).select_from(chosen.outerjoin(changes, changes.c.id == chosen.c.id))
