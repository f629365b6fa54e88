"""Timelines as SQL arithmetic: the ``then`` chains and ladders of ``sync.sql.compiler``.

Once a row knows which state it entered and when (``m_state``, an index into
the entity's states, and ``m_entered``, epoch microseconds), where time has
taken it since is pure integer arithmetic on ``now - entered``, the same
reasoning as ``engine._timeline``, done once per population instead of once
per entity:

1. **chains**: from each start state, the ``then`` transitions are unrolled
   in Python into (state, cumulative offset) positions, up to a terminal
   state or the first repeated state (a cycle, with its period). The SQL
   picks the last position reached, reducing a cycle modulo its period, so a
   ten-year-old entry costs what yesterday's does;
2. **ladder**: within the state reached, the step is the last rung whose
   offset is reached; a ``loop`` folds the elapsed time back modulo its
   period first. ``status_since`` and the next rung (or the ``then`` /
   ``loop`` instant) follow.

Each stage is one ``SELECT`` over the previous (a subquery the planners
flatten); every ``CASE`` is keyed by the state index, so the SQL grows with
the rule file, never with the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from sync.rules.model import Entity, State
from sync.sql.expr import Naming, SqlExpr, micros


@dataclass(frozen=True)
class Chain:
    """The ``then`` transitions from one start state, unrolled.

    ``states[i]`` is entered ``offsets[i]`` µs after the start; when
    ``cycle_from`` is set, the state after the last one is
    ``states[cycle_from]`` again, ``period`` µs after its previous entry.
    """

    states: tuple[int, ...]
    offsets: tuple[int, ...]
    cycle_from: int | None = None
    period: int | None = None


def state_indexes(entity: Entity) -> dict[str, int]:
    """Each state's number in the SQL: its declaration position."""
    return {name: index for index, name in enumerate(entity.states)}


def chain_from(entity: Entity, start: str) -> Chain:
    """``start``'s chain of ``then`` transitions (a single position if none)."""
    index = state_indexes(entity)
    names = [start]
    offsets = [0]
    state = entity.states[start]
    while state.then is not None:
        offset = offsets[-1] + micros(state.then.after)
        following = state.then.enter
        if following in names:
            # Zero-delay cycles are rejected when rules load, so period > 0.
            first = names.index(following)
            return Chain(
                tuple(index[n] for n in names), tuple(offsets), first, offset - offsets[first]
            )
        names.append(following)
        offsets.append(offset)
        state = entity.states[following]
    return Chain(tuple(index[n] for n in names), tuple(offsets))


def _last_reached(
    chain: Chain, positions: range, elapsed: SqlExpr, origin: SqlExpr
) -> tuple[SqlExpr, SqlExpr]:
    """(state, entry instant) of the last position in ``positions`` whose
    offset ``elapsed`` has reached; the first one when none later is."""
    ordered = sorted(positions, reverse=True)
    first = ordered[-1]
    later = ordered[:-1]
    if not later:
        return sa.literal(chain.states[first]), origin + chain.offsets[first]
    state = sa.case(
        *((elapsed >= chain.offsets[j], chain.states[j]) for j in later),
        else_=chain.states[first],
    )
    entered = origin + sa.case(
        *((elapsed >= chain.offsets[j], chain.offsets[j]) for j in later),
        else_=chain.offsets[first],
    )
    return state, entered


def _chain_position(chain: Chain, elapsed: SqlExpr, entered: SqlExpr) -> tuple[SqlExpr, SqlExpr]:
    size = len(chain.states)
    if chain.cycle_from is None or chain.period is None:
        return _last_reached(chain, range(size), elapsed, entered)
    start, period = chain.cycle_from, chain.period
    into = elapsed - chain.offsets[start]
    # Whole periods are skipped; what remains is one lap of the cycle.
    folded = chain.offsets[start] + into % period
    lap_origin = entered + (into // period) * period
    cycle_state, cycle_at = _last_reached(chain, range(start, size), folded, lap_origin)
    if start == 0:
        return cycle_state, cycle_at
    pre_state, pre_at = _last_reached(chain, range(start), elapsed, entered)
    in_cycle = elapsed >= chain.offsets[start]
    return (
        sa.case((in_cycle, cycle_state), else_=pre_state),
        sa.case((in_cycle, cycle_at), else_=pre_at),
    )


def _by_state(
    cases: Sequence[tuple[int, SqlExpr]], state: SqlExpr, default: SqlExpr | int | None
) -> SqlExpr:
    if not cases:
        if default is None:
            return sa.null()
        return default if isinstance(default, sa.ColumnElement) else sa.literal(default)
    return sa.case(dict(cases), value=state, else_=default)


def timeline(
    entity: Entity, rows: FromClause, now: SqlExpr, naming: Naming
) -> sa.Select[tuple[object, ...]]:
    """``rows`` (with ``m_state``, ``m_entered``) plus the timeline columns.

    Adds ``m_cur`` (the state reached), ``m_state_at`` (when it was entered),
    ``m_step`` (the ladder rung), ``m_since`` (when that rung began) and
    ``m_next`` (the next rung, ``then`` or loop instant), all in epoch µs.
    """
    index = state_indexes(entity)
    states = list(entity.states.values())

    # 1. then-chains, per start state that has one.
    elapsed = now - rows.c.m_entered
    chained_state: list[tuple[int, SqlExpr]] = []
    chained_at: list[tuple[int, SqlExpr]] = []
    for state in states:
        if state.then is None:
            continue
        chain = chain_from(entity, state.name)
        reached, at = _chain_position(chain, elapsed, rows.c.m_entered)
        chained_state.append((index[state.name], reached))
        chained_at.append((index[state.name], at))
    cur = _by_state(chained_state, rows.c.m_state, rows.c.m_state)
    cur_at = _by_state(chained_at, rows.c.m_state, rows.c.m_entered)
    stage1 = naming.table(
        sa.select(rows, cur.label("m_cur"), cur_at.label("m_state_at")), "m_chain"
    )

    # 2. loops fold the time spent in the state back into one lap.
    spent = now - stage1.c.m_state_at
    offsets: list[tuple[int, SqlExpr]] = []
    origins: list[tuple[int, SqlExpr]] = []
    for state in states:
        if state.loop is None:
            continue
        after = micros(state.loop.after)
        back = micros(state.steps[state.loop.back_to].after)
        period = after - back
        looped = spent >= after
        offsets.append(
            (index[state.name], sa.case((looped, back + (spent - after) % period), else_=spent))
        )
        origins.append(
            (
                index[state.name],
                sa.case(
                    (
                        looped,
                        stage1.c.m_state_at + after + ((spent - after) // period) * period - back,
                    ),
                    else_=stage1.c.m_state_at,
                ),
            )
        )
    offset = _by_state(offsets, stage1.c.m_cur, spent)
    origin = _by_state(origins, stage1.c.m_cur, stage1.c.m_state_at)
    stage2 = naming.table(
        sa.select(stage1, offset.label("m_off"), origin.label("m_origin")), "m_loop"
    )

    # 3. the rung reached.
    rungs = [
        (
            index[state.name],
            sa.case(
                *(
                    (stage2.c.m_off >= micros(state.steps[k].after), k)
                    for k in range(len(state.steps) - 1, 0, -1)
                ),
                else_=0,
            ),
        )
        for state in states
        if len(state.steps) > 1
    ]
    step = _by_state(rungs, stage2.c.m_cur, 0)
    stage3 = naming.table(sa.select(stage2, step.label("m_step")), "m_rung")

    # 4. when that rung began, and what comes next.
    begun = [
        (
            index[state.name],
            sa.case({k: micros(s.after) for k, s in enumerate(state.steps)}, value=stage3.c.m_step),
        )
        for state in states
        if len(state.steps) > 1
    ]
    upcoming = [
        (index[state.name], _next_offset(state, stage3.c.m_step))
        for state in states
        if len(state.steps) > 1 or state.then is not None or state.loop is not None
    ]
    since = stage3.c.m_origin + _by_state(begun, stage3.c.m_cur, 0)
    nxt = stage3.c.m_origin + _by_state(upcoming, stage3.c.m_cur, None)
    return sa.select(stage3, since.label("m_since"), nxt.label("m_next"))


def _next_offset(state: State, step: SqlExpr) -> SqlExpr:
    """Offset (from the lap origin) of what follows rung ``step`` of ``state``."""
    last = len(state.steps) - 1
    if state.then is not None:
        end: int | None = micros(state.then.after)
    elif state.loop is not None:
        end = micros(state.loop.after)
    else:
        end = None
    following: dict[int, int | None] = {k: micros(state.steps[k + 1].after) for k in range(last)}
    following[last] = end
    if len(following) == 1:
        return sa.literal(end, sa.BigInteger)
    return sa.case(following, value=step)


def state_names(entity: Entity) -> Mapping[int, State]:
    """State index → state, for decoding result rows."""
    return dict(enumerate(entity.states.values()))
