"""Entities' latest actions as keys: ``at_µs * K + declaration order``.

One BIGINT per action occurrence, so that a single ``MAX ... GROUP BY id``
over the action queries (``UNION ALL``-ed) finds the latest status-giving
action (``m_skey``) *and* breaks ties on declaration order, and likewise the
latest code-bearing one (``m_ckey``). The incremental step reads the same
keys over the occurrences after an instant only (``compile_keys_since``), or
takes them from bound values instead of the action queries (``bound_keys``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import FromClause

from sync.rules.model import Entity
from sync.sources.model import EntitySource
from sync.sql.expr import Naming, SqlExpr, from_micros, inline_constants, instant_micros
from sync.sql.inputs import (
    CKEYS,
    IDS,
    KEYS_JSON,
    NOW_US,
    SINCE,
    SKEYS,
    entity_id,
    in_ids,
    source_query,
)


def compile_keys_since(entity: Entity, source: EntitySource, dialect: str) -> sa.Select[Any] | None:
    """``(id, m_skey, m_ckey)`` per entity over the action occurrences in
    (``:mailsync_since``, now] only (``SqlEvaluator.keys_since``); None when
    no action enters a state or carries a code."""
    now = sa.bindparam(NOW_US, type_=sa.BigInteger)
    naming = Naming(dialect)
    latest = latest_actions(entity, source, naming, key_base(entity), now, False, since=True)
    if latest is None:
        return None
    query = sa.select(latest.c.id, latest.c.m_skey, latest.c.m_ckey)
    return inline_constants(query, (NOW_US, SINCE, "now"))


def key_instant(entity: Entity, key: int) -> datetime:
    """The instant of an action key (``SqlEvaluation.keys``)."""
    instant = from_micros(key // key_base(entity))
    assert instant is not None
    return instant


def key_base(entity: Entity) -> int:
    """K in ``at_µs * K + order``: a power of two above every action order."""
    top = max((a.order for a in entity.actions.values()), default=0)
    base = 2
    while base <= top:
        base *= 2
    return base


def bound_keys(naming: Naming, id_type: str) -> FromClause:
    """``(id, m_skey, m_ckey)`` rows from bound values: three arrays on
    PostgreSQL, one JSON list of ``[id, skey, ckey]`` on SQLite."""
    element = sa.BigInteger() if id_type == "integer" else sa.Text()
    columns = [sa.column("id", element)]
    columns += [sa.column(name, sa.BigInteger()) for name in ("m_skey", "m_ckey")]
    if naming.dialect == "postgresql":
        given = sa.text(
            f"SELECT k.id, k.m_skey, k.m_ckey FROM unnest(:{IDS}, :{SKEYS}, :{CKEYS})"
            " AS k(id, m_skey, m_ckey)"
        ).bindparams(
            sa.bindparam(IDS, type_=postgresql.ARRAY(element)),
            sa.bindparam(SKEYS, type_=postgresql.ARRAY(sa.BigInteger())),
            sa.bindparam(CKEYS, type_=postgresql.ARRAY(sa.BigInteger())),
        )
    else:
        given = sa.text(
            "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS m_skey,"
            f" json_extract(value, '$[2]') AS m_ckey FROM json_each(:{KEYS_JSON})"
        )
    keys = given.columns(*columns).subquery(naming.prefix + "m_given")
    return naming.table(sa.select(keys.c.id, keys.c.m_skey, keys.c.m_ckey), "m_latest")


def latest_actions(
    entity: Entity,
    source: EntitySource,
    naming: Naming,
    code_base: int,
    now: SqlExpr,
    with_ids: bool,
    *,
    since: bool = False,
) -> FromClause | None:
    """Per entity: ``MAX(at_µs * K + order)`` over status-giving actions
    (``m_skey``) and over code-bearing ones (``m_ckey``), at or before now
    (and, with ``since``, after ``:mailsync_since``)."""
    branches: list[sa.Select[Any]] = []
    for name, query in source.actions:
        action = entity.actions.get(name)
        if action is None or (action.enters is None and action.code is None):
            continue  # never changes status nor code: not read at all
        sub = source_query(query.sql, ("id", "at"), f"m_action_{name}")
        ident = entity_id(sub.c.id, naming.dialect, source.id_type)
        at = instant_micros(sub.c.at, naming.dialect)
        if naming.dialect == "postgresql":
            # Compared with the sources' own ``:now`` on native instants (the
            # session time zone reads naive ones): cheaper than in µs. One
            # aggregate over every occurrence, not a latest-per-action step
            # first: PostgreSQL runs it in parallel across all the actions'
            # rows, like the floor (docs/sql.md).
            native = sa.cast(sub.c.at, sa.DateTime(timezone=True))
            condition = native <= sa.bindparam("now", type_=sa.DateTime(timezone=True))
            if since:
                after = sa.bindparam(SINCE, type_=sa.DateTime(timezone=True))
                condition = sa.and_(native > after, condition)
        else:
            condition = at <= now
            if since:
                condition = sa.and_(at > sa.bindparam(SINCE, type_=sa.BigInteger), condition)
        if with_ids:
            condition = sa.and_(condition, in_ids(ident, naming, source.id_type))
        key = at * code_base + action.order
        null = sa.null()
        branch = sa.select(
            ident.label("id"),
            (key if action.enters is not None else sa.cast(null, sa.BigInteger)).label("skey"),
            (key if action.code is not None else sa.cast(null, sa.BigInteger)).label("ckey"),
        )
        branches.append(branch.where(condition))
    if not branches:
        return None
    union = sa.union_all(*branches).subquery(naming.prefix + "m_actions")
    latest = sa.select(
        union.c.id,
        sa.func.max(union.c.skey).label("m_skey"),
        sa.func.max(union.c.ckey).label("m_ckey"),
    ).group_by(union.c.id)
    return naming.table(latest, "m_latest")
