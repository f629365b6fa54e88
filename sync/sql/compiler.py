"""Rules compiled to set-based SQL: every entity's status in a few queries.

``sync.evaluate.engine`` evaluates one entity at a time; a daemon that looped over a
million users with it (or worse, with one query per user and action, as the
original project did) would spend its life in round trips. This module
compiles an entity type of ``rules.yaml`` plus its ``sources.yaml`` queries
into **one** SQLAlchemy Core ``SELECT`` that computes, for the whole
population (or a given set of ids), what ``engine.evaluate`` computes:
status, status_since, state, state_entered_at, action_code, merge fields and
next_change_at. ``sync.sql.evaluator`` runs it and streams the result.

How the query is built (details in ``docs/sql.md``):

* **the population**: the ``list`` query, LEFT JOINed with every ``facts``
  query (a missing row gives the column's default, as in the reader) and,
  for rollup facts, with the related entity's own compiled query aggregated
  per entity (``sqlcompile`` of ``match`` inside ``user``);
* **entry by actions**: the action queries, ``UNION ALL``-ed, each row
  reduced to one BIGINT ``at_µs * K + declaration order`` so that a single
  ``MAX ... GROUP BY id`` finds the latest status-giving action *and* breaks
  ties on declaration order (likewise for the latest code-bearing action);
  a re-initialisation baseline is LEFT JOINed and supersedes actions at or
  before it;
* **entry by conditions**: the priority list is one ``CASE`` over the facts
  (``sqlcompile_expr``); the instants at which the choice may change are the
  per-entity condition thresholds, unrolled as rows (``UNION ALL``, one per
  threshold expression), evaluated at ``t`` and ``t - 1µs`` and aggregated:
  the latest ``t <= now`` before which another state was chosen is the
  entry, the earliest ``t > now`` at which another state is chosen is the
  next change;
* **timeline**: integer arithmetic over ``now - entered`` (``sqlcompile_timeline``).

``now`` is a bound parameter (``:mailsync_now_us``, epoch microseconds; the
sources' own ``:now`` gets the value the reader would bind). Only
``engine.evaluate`` computes events; they need each action occurrence, which
is precisely what the set-based query avoids reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from functools import cached_property, partial
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import FromClause, Subquery

from sync.exceptions import ConfigurationError
from sync.records import FactValue
from sync.rules.expressions import Type, references, time_tests
from sync.rules.model import ACTION_CODE, STATUS, Entity, Mode, Ruleset
from sync.sources.model import Column, EntitySource, SourcesConfig
from sync.sources.reader import bind_instant, convert
from sync.sources.rollups import Rollup
from sync.sql.expr import (
    EPOCH,
    ExprCompiler,
    Naming,
    SqlExpr,
    from_micros,
    inline_constants,
    instant_micros,
    least,
    to_micros,
)
from sync.sql.timeline import state_indexes, timeline

#: Bound parameter names the compiled query uses besides the sources' ``:now``.
NOW_US = "mailsync_now_us"
REINIT_US = "mailsync_reinit_us"
IDS = "mailsync_ids"
SKEYS = "mailsync_skeys"
CKEYS = "mailsync_ckeys"
KEYS_JSON = "mailsync_keys"
SINCE = "mailsync_since"

#: An entity's latest status-giving and code-bearing actions, each as
#: ``at_µs * K + declaration order`` (None: no such action yet). Opaque to
#: callers: what ``SqlEvaluation.keys`` gives and ``evaluate(keys=...)`` takes.
ActionKeys = tuple[int | None, int | None]

#: Settings local to the evaluating transaction on PostgreSQL (``SET LOCAL``).
#: The JIT compiler is off: the query has hundreds of small ``CASE``
#: expressions, and compiling them cost 4 to 7 s at a million users, more than
#: it ever saved (EXPLAIN ANALYZE, see docs/sql.md). A larger ``work_mem``
#: keeps the per-entity aggregates and joins in memory instead of spilling.
PG_SETTINGS: Mapping[str, str] = {"jit": "off", "work_mem": "128MB"}

#: ``m_cur * _STATUS_BASE + m_step`` numbers a status (state and rung) in SQL.
_STATUS_BASE = 1000
_TICK = 1  # µs: the engine looks at the choice just before a threshold
_NO_TAGS: frozenset[str] = frozenset()


class SqlEvaluation(NamedTuple):
    """What the compiled SQL says about one entity at ``now`` (the fields of
    ``engine.Evaluation`` that do not need action occurrences).

    A named tuple rather than a frozen dataclass: the evaluator builds one per
    entity, a million per full evaluation, and a tuple is built in one C call
    (a frozen dataclass sets each field through ``object.__setattr__``)."""

    id: str
    email: str | None
    status: str | None
    status_since: datetime | None
    state: str | None
    state_entered_at: datetime | None
    action_code: str | None
    merge_fields: Mapping[str, FactValue] = {}
    tags: frozenset[str] = frozenset()
    next_change_at: datetime | None = None
    #: The latest actions' keys, to evaluate this entity again later from
    #: them and the occurrences since (``SqlEvaluator.keys_since``).
    keys: ActionKeys = (None, None)


_tuple_new = tuple.__new__


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


@dataclass(frozen=True, eq=False)
class CompiledEntity:
    """One entity type compiled for one dialect: a ``SELECT`` and its decoder."""

    entity: Entity
    source: EntitySource
    dialect: str
    select: sa.Select[Any]
    identity: tuple[str, ...]
    #: merge tag → (how to decode, result column)
    _merge: tuple[tuple[str, str, str | None], ...]
    _codes: Mapping[int, str]
    _code_base: int

    def params(self, now: datetime, *, reinit_at: datetime | None = None) -> dict[str, Any]:
        """The bound values for evaluating at ``now`` (``ids`` aside)."""
        tz = ZoneInfo(self.source.naive_timezone)
        params: dict[str, Any] = {
            "now": bind_instant(now, self.dialect, tz),
            NOW_US: to_micros(now),
        }
        if reinit_at is not None:
            params[REINIT_US] = to_micros(reinit_at)
        return params

    def decode(self, row: Sequence[Any]) -> SqlEvaluation:
        """A result row as an evaluation; ids become text as the reader's do.

        Columns are read by position (the ``select``'s order) and everything
        that depends only on the rules (state, status name, tags, how each
        merge field decodes) is looked up in tables built once: at a million
        rows, per-row attribute and name lookups cost as much as the query."""
        ident, email, cur, step, state_at, since, change, code_key, status_key = row[:9]
        code = None if code_key is None else self._codes.get(code_key % self._code_base)
        if cur is None:
            state_name = status = None
            tags: frozenset[str] = _NO_TAGS
            entered = started = None
        else:
            state_name, status, tags = self._statuses[cur][step]
            entered = None if state_at is None else EPOCH + timedelta(0, 0, state_at)
            started = None if since is None else EPOCH + timedelta(0, 0, since)
        merge: dict[str, FactValue] = {}
        for tag, kind, position, decoder in self._plan:
            if kind == 2:
                value = row[position]
                merge[tag] = value if value is None or value.__class__ is str else decoder(value)
            elif kind == 0:
                merge[tag] = status
            elif kind == 1:
                merge[tag] = code
            elif kind == 3:
                value = row[position]
                merge[tag] = None if value is None else decoder(value)
            else:
                merge[tag] = None
        return _tuple_new(
            SqlEvaluation,
            (
                str(ident),
                email.strip() or None if email.__class__ is str else None,
                status,
                started,
                state_name,
                entered,
                code,
                merge,
                tags,
                None if change is None else EPOCH + timedelta(0, 0, change),
                (status_key, code_key),
            ),
        )

    @cached_property
    def _statuses(self) -> list[list[tuple[str, str, frozenset[str]]]]:
        """State index → rung → (state name, status name, tags)."""
        return [
            [(state.name, state.status_name(step), state.tags) for step in range(len(state.steps))]
            for state in self.entity.states.values()
        ]

    @cached_property
    def _plan(self) -> tuple[tuple[str, int, int, Any], ...]:
        """Per merge field: (tag, kind, column position, decoder). Kinds: 0
        status, 1 action code, 2 text (kept as is when already a str), 3
        decoded, 4 missing (always null)."""
        tz = ZoneInfo(self.source.naive_timezone)
        names = [c.name for c in self.select.selected_columns]
        plan: list[tuple[str, int, int, Any]] = []
        for tag, how, column in self._merge:
            if how == STATUS:
                plan.append((tag, 0, -1, None))
            elif how == ACTION_CODE:
                plan.append((tag, 1, -1, None))
            elif column is None:
                plan.append((tag, 4, -1, None))
            else:
                position = names.index(column)
                decoder = partial(_decode_value, how, tz=tz)
                textual = how in ("identity", "string", f"derived:{Type.STRING.value}")
                plan.append((tag, 2 if textual else 3, position, decoder))
        return tuple(plan)


def _decode_value(how: str, value: Any, tz: ZoneInfo) -> FactValue:
    """Raw column value → fact value, the way ``SourceReader`` converts it."""
    if value is None:
        return None
    if how == "identity":
        return str(value)
    if how == "rollup":
        return int(value)
    if how.startswith("derived:"):
        kind = how.removeprefix("derived:")
        if kind == Type.INSTANT.value:
            return from_micros(value)
        if kind == Type.BOOL.value:
            return bool(value)
        return convert(value, "number" if kind == Type.NUMBER.value else "string", tz)
    return convert(value, how, tz)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Compilation


@dataclass(frozen=True)
class _Population:
    """The entities with their facts: one subquery, and how to read it."""

    rows: FromClause
    #: fact name → (source column type or 'identity'/'rollup', result column name)
    columns: Mapping[str, tuple[str, str]]


def compile_entity(
    ruleset: Ruleset,
    sources: SourcesConfig,
    entity_type: str,
    dialect: str,
    *,
    identity: Sequence[str] = (),
    baselines: Baselines | None = None,
    with_ids: bool = False,
    given_keys: bool = False,
    ordered: bool = True,
) -> CompiledEntity:
    """Compile ``entity_type`` for ``dialect`` ("postgresql" or "sqlite").

    ``identity`` names the list query's extra columns (they are only known
    once it runs: ``SqlEvaluator`` asks the database). ``with_ids`` adds the
    expanding ``:mailsync_ids`` filter; ``ordered`` sorts by id the way the
    source reader does (merge-friendly, costs a sort). ``given_keys`` (with
    ``with_ids``) takes each entity's latest actions from bound keys instead
    of reading the action queries (``SqlEvaluator.evaluate(keys=...)``).
    """
    entity = ruleset.entity(entity_type)
    source = sources.entity(entity_type)
    baselines = baselines or Baselines()
    core, merge, codes, code_base = _core(
        ruleset,
        sources,
        entity,
        source,
        Naming(dialect),
        identity,
        baselines,
        with_ids,
        given_keys,
    )
    select = core
    if ordered:
        order = core.selected_columns.id
        if source.id_type == "text":
            order = order.collate("C" if dialect == "postgresql" else "BINARY")
        select = core.order_by(order)
    select = inline_constants(select, (NOW_US, REINIT_US, IDS, SKEYS, CKEYS, KEYS_JSON, "now"))
    return CompiledEntity(entity, source, dialect, select, tuple(identity), merge, codes, code_base)


def compile_keys_since(entity: Entity, source: EntitySource, dialect: str) -> sa.Select[Any] | None:
    """``(id, m_skey, m_ckey)`` per entity over the action occurrences in
    (``:mailsync_since``, now] only (``SqlEvaluator.keys_since``); None when
    no action enters a state or carries a code."""
    now = sa.bindparam(NOW_US, type_=sa.BigInteger)
    naming = Naming(dialect)
    latest = _latest_actions(entity, source, naming, _code_base(entity), now, False, since=True)
    if latest is None:
        return None
    query = sa.select(latest.c.id, latest.c.m_skey, latest.c.m_ckey)
    return inline_constants(query, (NOW_US, SINCE, "now"))


def _core(
    ruleset: Ruleset,
    sources: SourcesConfig,
    entity: Entity,
    source: EntitySource,
    naming: Naming,
    identity: Sequence[str],
    baselines: Baselines,
    with_ids: bool,
    given_keys: bool,
) -> tuple[sa.Select[Any], tuple[tuple[str, str, str | None], ...], dict[int, str], int]:
    dialect = naming.dialect
    now = sa.bindparam(NOW_US, type_=sa.BigInteger)
    needed = needed_facts(entity, reinit=baselines.reinit)
    population = _population(ruleset, sources, entity, source, naming, identity, with_ids, needed)
    rows = population.rows
    facts = _fact_values(entity, population, dialect)
    compiler = ExprCompiler(entity, facts(rows), now)
    code_base = _code_base(entity)
    codes = {a.order: a.code for a in entity.actions.values() if a.code is not None}
    if given_keys:
        latest: FromClause | None = _given_keys(naming, source.id_type)
    else:
        latest = _latest_actions(entity, source, naming, code_base, now, with_ids)

    if entity.mode is Mode.CONDITIONS:
        entry = _entry_by_conditions(entity, rows, facts, now, compiler, naming)
    else:
        entry = _entry_by_actions(entity, rows, latest, baselines, compiler, dialect, code_base)
    entered = naming.table(entry, "m_entry")
    final = naming.table(timeline(entity, entered, now, naming), "m_final")

    merge: list[tuple[str, str, str | None]] = []
    for merge_field in entity.merge_fields:
        src = merge_field.source
        if src in (STATUS, ACTION_CODE):
            merge.append((merge_field.tag, src, None))
        elif src in population.columns:
            how, column = population.columns[src]
            merge.append((merge_field.tag, how, column))
        elif any(d.name == src for d in entity.derived):
            kind = next(d.type for d in entity.derived if d.name == src)
            merge.append((merge_field.tag, f"derived:{kind.value if kind else ''}", f"d_{src}"))
        else:
            merge.append((merge_field.tag, "missing", None))
    change = least(final.c.m_next, final.c.m_entry_next)
    wanted = [final.c.id, final.c.email, final.c.m_cur, final.c.m_step, final.c.m_state_at]
    wanted += [final.c.m_since, change.label("m_change"), final.c.m_code, final.c.m_skey]
    for _, _how, wanted_column in merge:
        if wanted_column is not None and wanted_column not in {c.name for c in wanted}:
            wanted.append(final.c[wanted_column])
    return sa.select(*wanted), tuple(merge), codes, code_base


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


def key_instant(entity: Entity, key: int) -> datetime:
    """The instant of an action key (``SqlEvaluation.keys``)."""
    instant = from_micros(key // _code_base(entity))
    assert instant is not None
    return instant


def _code_base(entity: Entity) -> int:
    """K in ``at_µs * K + order``: a power of two above every action order."""
    top = max((a.order for a in entity.actions.values()), default=0)
    base = 2
    while base <= top:
        base *= 2
    return base


def _in_ids(column: SqlExpr, naming: Naming, id_type: str) -> SqlExpr:
    """``column`` is one of the requested ids: ``= ANY(:ids)`` with one array
    parameter on PostgreSQL (any number of ids in one query), an expanding
    ``IN`` on SQLite (which has no arrays; the evaluator sends chunks)."""
    if naming.dialect == "postgresql":
        element = sa.BigInteger() if id_type == "integer" else sa.Text()
        return column == sa.any_(sa.bindparam(IDS, type_=postgresql.ARRAY(element)))
    return column.in_(sa.bindparam(IDS, expanding=True))


def _text(query_sql: str, columns: Iterable[str], name: str) -> Subquery:
    return sa.text(query_sql).columns(*(sa.column(c) for c in columns)).subquery(name)


def _population(
    ruleset: Ruleset,
    sources: SourcesConfig,
    entity: Entity,
    source: EntitySource,
    naming: Naming,
    identity: Sequence[str],
    with_ids: bool,
    needed: frozenset[str],
) -> _Population:
    listed = _text(source.list_query.sql, ("id", "email", *identity), "m_list")
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
        sub = _text(fact_query.query.sql, names, f"m_facts{number}")
        if with_ids:
            # Only the requested entities' rows: the planner does not push the
            # list's filter through the join into a DISTINCT or a UNION.
            sub = (
                sa.select(*(sub.c[n] for n in names))
                .where(_in_ids(sub.c.id, naming, source.id_type))
                .subquery(f"m_facts{number}_ids")
            )
        joined = joined.outerjoin(sub, sub.c.id == listed.c.id)
        for column in fact_query.columns:
            label = f"f_{column.name}"
            selected.append(_with_default(sub, column).label(label))
            columns[column.name] = (column.type, label)
    if any(r.fact in needed for r in source.rollups):
        counts = _rollup_counts(ruleset, sources, source, naming, with_ids)
        joined = joined.outerjoin(counts, counts.c.id == listed.c.id)
        for rollup in source.rollups:
            label = f"f_{rollup.fact}"
            # Every rollup has a value, 0 when nothing counts (as compute_rollups).
            selected.append(sa.func.coalesce(counts.c[rollup.fact], 0).label(label))
            columns[rollup.fact] = ("rollup", label)
    select = sa.select(*selected).select_from(joined)
    if with_ids:
        select = select.where(_in_ids(listed.c.id, naming, source.id_type))
    return _Population(naming.table(select, "m_population"), columns)


def _with_default(sub: Subquery, column: Column) -> SqlExpr:
    if column.default is None:
        return sub.c[column.name]
    # No row → the default; a row with null stays null (as the reader does).
    return sa.case((sub.c.id.is_(None), sa.literal(column.default)), else_=sub.c[column.name])


def _fact_values(entity: Entity, population: _Population, dialect: str) -> Any:
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


def _given_keys(naming: Naming, id_type: str) -> FromClause:
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


def _latest_actions(
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
        sub = _text(query.sql, ("id", "at"), f"m_action_{name}")
        ident, at = sub.c.id, instant_micros(sub.c.at, naming.dialect)
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
            condition = sa.and_(condition, _in_ids(ident, naming, source.id_type))
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


def _state_of_name(entity: Entity, name: SqlExpr) -> SqlExpr:
    return sa.case(state_indexes(entity), value=name, else_=sa.null())


def _entry_by_actions(
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
        base_state = _reinit_state(entity, ExprCompiler(entity, compiler.facts, reinit_at))
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
        *_derived_columns(entity, compiler),
    ).select_from(joined)


def _reinit_state(entity: Entity, compiler: ExprCompiler) -> SqlExpr:
    """The number of the state the ``reinit:`` list gives (null if none),
    as ``engine.reinit_state``: the first line whose condition holds."""
    index = state_indexes(entity)
    whens = [(compiler.condition(c.when), index[c.state]) for c in entity.reinit if c.when]
    fallback = next((index[c.state] for c in entity.reinit if c.when is None), None)
    return sa.case(*whens, else_=fallback) if whens else sa.literal(fallback, sa.Integer)


def compile_reinit(
    ruleset: Ruleset, sources: SourcesConfig, entity_type: str, dialect: str
) -> sa.Select[Any]:
    """``(id, m_state)`` for every entity: the state number a
    re-initialisation at ``:mailsync_reinit_us`` gives from current facts
    (``mailsync reinit``). Reads the list and the facts the ``reinit:`` list
    needs, no action."""
    entity, source = ruleset.entity(entity_type), sources.entity(entity_type)
    naming = Naming(dialect)
    needed = needed_facts(entity, reinit=True)
    population = _population(ruleset, sources, entity, source, naming, (), False, needed)
    facts = _fact_values(entity, population, dialect)(population.rows)
    reinit_at = sa.bindparam(REINIT_US, type_=sa.BigInteger)
    state = _reinit_state(entity, ExprCompiler(entity, facts, reinit_at))
    select = sa.select(population.rows.c.id, state.label("m_state"))
    return inline_constants(select, (REINIT_US, "now"))


def _derived_columns(entity: Entity, compiler: ExprCompiler) -> list[SqlExpr]:
    wanted = {m.source for m in entity.merge_fields}
    return [compiler.value(d.name).label(f"d_{d.name}") for d in entity.derived if d.name in wanted]


def _choice(entity: Entity, compiler: ExprCompiler) -> SqlExpr:
    """The index of the first state whose condition holds (null if none)."""
    index = state_indexes(entity)
    whens = [(compiler.condition(c.when), index[c.state]) for c in entity.choices if c.when]
    fallback = next((index[c.state] for c in entity.choices if c.when is None), None)
    if not whens:
        return sa.literal(fallback, sa.Integer)
    return sa.case(*whens, else_=fallback)


def _entry_by_conditions(
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
    derived = _derived_columns(entity, at_chosen)
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


# --------------------------------------------------------------------------
# Cross-entity facts: rollups over the related entity's compiled statuses


def status_codes(entity: Entity, patterns: Sequence[str]) -> list[int]:
    """``state * 1000 + rung`` of every status matching one of ``patterns``."""
    codes = []
    for number, state in enumerate(entity.states.values()):
        for step in range(len(state.steps)):
            name = state.status_name(step)
            if any(fnmatchcase(name, p) for p in patterns):
                codes.append(number * _STATUS_BASE + step)
    return codes


def _rollup_counts(
    ruleset: Ruleset,
    sources: SourcesConfig,
    source: EntitySource,
    naming: Naming,
    with_ids: bool,
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
        inner, *_ = _core(
            ruleset,
            sources,
            related_entity,
            related,
            naming.nested(f"r{number}_"),
            (),
            Baselines(),
            False,
            False,
        )
        statuses = naming.table(inner, f"m_related{number}")
        code = statuses.c.m_cur * _STATUS_BASE + statuses.c.m_step
        rel = _text(
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
            select = select.where(_in_ids(rel.c.id, naming, source.id_type))
        parts.append(naming.table(select, f"m_counts{number}"))
    if len(parts) != 1:
        raise ConfigurationError(
            f"{source.entity_type}: rollups over {len(parts)} relations; one is supported"
        )
    return parts[0]
