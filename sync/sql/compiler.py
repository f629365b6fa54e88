"""Rules compiled to set-based SQL: every entity's status in a few queries.

``sync.evaluate.engine`` evaluates one entity at a time; a daemon that looped over a
million users with it (or worse, with one query per user and action, as the
original project did) would spend its life in round trips. This module
compiles an entity type of ``rules.yaml`` plus its ``sources.yaml`` queries
into **one** SQLAlchemy Core ``SELECT`` that computes, for the whole
population (or a given set of ids), what ``engine.evaluate`` computes:
status, status_since, state, state_entered_at, action_code, merge fields and
next_change_at. ``sync.sql.evaluator`` runs it and streams the result.

How the query is built (details in ``docs/sql.md``); this module assembles
the parts, each built in its own module:

* **the population** (``population``): the ``list`` query, LEFT JOINed with
  every ``facts`` query (a missing row gives the column's default, as in the
  reader) and, for rollup facts (``rollups``), with the related entity's own
  compiled query aggregated per entity (this module's query of ``match``
  inside ``user``'s);
* **entry by actions** (``keys``, ``actions``): the action queries,
  ``UNION ALL``-ed, each row reduced to one BIGINT ``at_µs * K + declaration
  order`` so that a single ``MAX ... GROUP BY id`` finds the latest
  status-giving action *and* breaks ties on declaration order (likewise for
  the latest code-bearing action); a re-initialisation baseline is LEFT
  JOINed and supersedes actions at or before it;
* **entry by conditions** (``conditions``): the priority list is one
  ``CASE`` over the facts (``expr``); the instants at which the choice may
  change are the per-entity condition thresholds, unrolled as rows
  (``UNION ALL``, one per threshold expression), evaluated at ``t`` and
  ``t - 1µs`` and aggregated: the latest ``t <= now`` before which another
  state was chosen is the entry, the earliest ``t > now`` at which another
  state is chosen is the next change;
* **timeline**: integer arithmetic over ``now - entered`` (``timeline``);
* **merge fields** (``merge``): the result columns each merge tag reads,
  decoded with the rest of the row by ``compiled.CompiledEntity``.

``now`` is a bound parameter (``:mailsync_now_us``, epoch microseconds; the
sources' own ``:now`` gets the value the reader would bind). Only
``engine.evaluate`` computes events; they need each action occurrence, which
is precisely what the set-based query avoids reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.rules.model import Entity, Mode, Ruleset
from sync.sources.model import EntitySource, SourcesConfig
from sync.sql.actions import Baselines, entry_by_actions, reinit_state
from sync.sql.compiled import CompiledEntity
from sync.sql.conditions import entry_by_conditions
from sync.sql.expr import ExprCompiler, Naming, inline_constants, least
from sync.sql.inputs import CKEYS, IDS, KEYS_JSON, NOW_US, REINIT_US, SKEYS
from sync.sql.keys import bound_keys, key_base, latest_actions
from sync.sql.merge import MergeColumns, merge_columns
from sync.sql.population import Population, compile_population, fact_values, needed_facts
from sync.sql.rollups import rollup_counts
from sync.sql.timeline import timeline

#: Settings local to the evaluating transaction on PostgreSQL (``SET LOCAL``).
#: The JIT compiler is off: the query has hundreds of small ``CASE``
#: expressions, and compiling them cost 4 to 7 s at a million users, more than
#: it ever saved (EXPLAIN ANALYZE, see docs/sql.md). A larger ``work_mem``
#: keeps the per-entity aggregates and joins in memory instead of spilling.
PG_SETTINGS: Mapping[str, str] = {"jit": "off", "work_mem": "128MB"}


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
) -> tuple[sa.Select[Any], MergeColumns, dict[int, str], int]:
    dialect = naming.dialect
    now = sa.bindparam(NOW_US, type_=sa.BigInteger)
    needed = needed_facts(entity, reinit=baselines.reinit)
    population = _population(ruleset, sources, entity, source, naming, identity, with_ids, needed)
    rows = population.rows
    facts = fact_values(entity, population, dialect)
    compiler = ExprCompiler(entity, facts(rows), now)
    code_base = key_base(entity)
    codes = {a.order: a.code for a in entity.actions.values() if a.code is not None}
    if given_keys:
        latest: FromClause | None = bound_keys(naming, source.id_type)
    else:
        latest = latest_actions(entity, source, naming, code_base, now, with_ids)

    if entity.mode is Mode.CONDITIONS:
        entry = entry_by_conditions(entity, rows, facts, now, compiler, naming)
    else:
        entry = entry_by_actions(entity, rows, latest, baselines, compiler, dialect, code_base)
    entered = naming.table(entry, "m_entry")
    final = naming.table(timeline(entity, entered, now, naming), "m_final")

    merge = merge_columns(entity, population.columns)
    change = least(final.c.m_next, final.c.m_entry_next)
    wanted = [final.c.id, final.c.email, final.c.m_cur, final.c.m_step, final.c.m_state_at]
    wanted += [final.c.m_since, change.label("m_change"), final.c.m_code, final.c.m_skey]
    for _, _how, wanted_column in merge:
        if wanted_column is not None and wanted_column not in {c.name for c in wanted}:
            wanted.append(final.c[wanted_column])
    return sa.select(*wanted), merge, codes, code_base


def _population(
    ruleset: Ruleset,
    sources: SourcesConfig,
    entity: Entity,
    source: EntitySource,
    naming: Naming,
    identity: Sequence[str],
    with_ids: bool,
    needed: frozenset[str],
) -> Population:
    """The population of ``entity``, with its rollup counts when a needed fact
    is a rollup: the related entity's statuses are its own ``_core`` query."""
    counts: FromClause | None = None
    if any(r.fact in needed for r in source.rollups):

        def related(other: Entity, other_source: EntitySource, nested: Naming) -> sa.Select[Any]:
            select, *_ = _core(
                ruleset, sources, other, other_source, nested, (), Baselines(), False, False
            )
            return select

        counts = rollup_counts(ruleset, sources, source, naming, with_ids, related)
    return compile_population(source, naming, identity, with_ids, needed, counts)


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
    facts = fact_values(entity, population, dialect)(population.rows)
    reinit_at = sa.bindparam(REINIT_US, type_=sa.BigInteger)
    state = reinit_state(entity, ExprCompiler(entity, facts, reinit_at))
    select = sa.select(population.rows.c.id, state.label("m_state"))
    return inline_constants(select, (REINIT_US, "now"))
