"""Entry by actions: the state the latest status-giving action entered.

The latest action keys (``sync.sql.keys``) give the state and its entry
instant; a re-initialisation baseline (``Baselines``: a stored table, or a
re-initialisation of everyone at a bound instant computed from the current
facts by the ``reinit:`` list) supersedes actions at or before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.rules.model import Entity
from sync.sql.expr import ExprCompiler, SqlExpr, instant_micros
from sync.sql.inputs import REINIT_US
from sync.sql.merge import derived_columns
from sync.sql.timeline import state_indexes


@dataclass(frozen=True)
class Baselines:
    """Where re-initialisation baselines come from.

    * ``table``: a selectable *in the application database* with columns
      ``id`` (the entity id), ``state`` (a state name) and ``at`` (the
      re-initialisation instant): the state store's baseline table when it
      shares the database, LEFT JOINed by id;
    * ``reinit_at``: no stored baselines, but one re-initialisation of every
      entity at a bound instant, whose state SQL computes from the *current*
      facts (the ``reinit:`` priority list at that instant): exactly what
      ``mailsync reinit`` stores, and what a rules-test ``reinit_at`` means.

    With neither, no baseline applies (see ``docs/sql.md`` for the fallback
    when the state store lives in another database).
    """

    table: FromClause | None = None
    reinit: bool = False


def _state_of_name(entity: Entity, name: SqlExpr) -> SqlExpr:
    return sa.case(state_indexes(entity), value=name, else_=sa.null())


def entry_by_actions(
    entity: Entity,
    rows: FromClause,
    latest: FromClause | None,
    baselines: Baselines,
    compiler: ExprCompiler,
    dialect: str,
    code_base: int,
) -> sa.Select[Any]:
    index = state_indexes(entity)
    joined: FromClause = rows
    skey: SqlExpr = sa.cast(sa.null(), sa.BigInteger)
    ckey: SqlExpr = sa.cast(sa.null(), sa.BigInteger)
    if latest is not None:
        joined = joined.outerjoin(latest, latest.c.id == rows.c.id)
        skey, ckey = latest.c.m_skey, latest.c.m_ckey
    by_order = {a.order: index[a.enters] for a in entity.actions.values() if a.enters is not None}
    action_state: SqlExpr = sa.case(by_order, value=skey % code_base, else_=sa.null())
    action_at = skey // code_base

    base_state: SqlExpr | None = None
    base_at: SqlExpr | None = None
    now = compiler.now
    if baselines.table is not None:
        table = baselines.table
        joined = joined.outerjoin(table, table.c.id == rows.c.id)
        base_state = _state_of_name(entity, table.c.state)
        base_at = instant_micros(table.c.at, dialect)
    elif baselines.reinit and entity.reinit:
        reinit_at = sa.bindparam(REINIT_US, type_=sa.BigInteger)
        base_state = reinit_state(entity, ExprCompiler(entity, compiler.facts, reinit_at))
        base_at = reinit_at

    state: SqlExpr = action_state
    entered: SqlExpr = action_at
    if base_state is not None and base_at is not None:
        # The baseline wins when it is in the past and no action is later.
        use_base = sa.and_(
            base_state.is_not(None),
            base_at <= now,
            sa.or_(skey.is_(None), action_at <= base_at),
        )
        state = sa.case((use_base, base_state), else_=action_state)
        entered = sa.case((use_base, base_at), else_=action_at)
    return sa.select(
        rows,
        state.label("m_state"),
        entered.label("m_entered"),
        sa.cast(sa.null(), sa.BigInteger).label("m_entry_next"),
        ckey.label("m_code"),
        skey.label("m_skey"),
        *derived_columns(entity, compiler),
    ).select_from(joined)


def reinit_state(entity: Entity, compiler: ExprCompiler) -> SqlExpr:
    """The number of the state the ``reinit:`` list gives (null if none),
    as ``engine.reinit_state``: the first line whose condition holds."""
    index = state_indexes(entity)
    whens = [(compiler.condition(c.when), index[c.state]) for c in entity.reinit if c.when]
    fallback = next((index[c.state] for c in entity.reinit if c.when is None), None)
    return sa.case(*whens, else_=fallback) if whens else sa.literal(fallback, sa.Integer)
