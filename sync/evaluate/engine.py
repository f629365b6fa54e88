"""Evaluating one entity at one instant: the heart of mailsync.

``evaluate(entity, facts, actions, now, baseline)`` is pure: it never reads the
clock or the database, so every answer can be reproduced from its inputs, and
tests fix time simply by passing ``now``.

It works in two stages:

1. **Entry**: which state the entity last *entered*, and when.
   * by actions: the latest status-giving action at or before ``now`` (on a
     tie, the action declared later), unless a re-initialisation baseline is
     later; an action at or before the baseline instant is superseded by it;
   * by conditions: the first state whose ``when`` holds at ``now``; it was
     entered at the latest condition threshold before which a different state
     was chosen (or at the entity's ``since`` fact if it held all along).
2. **Timeline**: from that entry, time alone moves the entity along ``then``
   transitions and through the state's ladder steps, with ``loop`` jumping
   back. Cycles are reduced modulo their period, so the cost does not depend
   on how long ago the entry was.

``next_change_at`` is the earliest instant after ``now`` at which the status
would change with no new data: the next ladder step, ``then`` or loop, or the
next condition threshold at which another state would be chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync.records import ActionOccurrence, EventDue, FactValue, require_aware
from sync.rules.expression_eval import evaluate as evaluate_expr
from sync.rules.expression_eval import holds, thresholds
from sync.rules.model import ACTION_CODE, STATUS, Entity, EventSpec, Mode, State

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Baseline:
    """A re-initialisation: ``state`` entered at ``at``."""

    state: str
    at: datetime

    def __post_init__(self) -> None:
        require_aware(self.at, "re-initialisation instant")


@dataclass(frozen=True)
class Evaluation:
    """What the rules say about one entity at ``now``."""

    now: datetime
    status: str | None  # the reported status, e.g. registered_H24
    status_since: datetime | None  # when that status began
    state: str | None  # the state whose timeline it is, e.g. registered
    state_entered_at: datetime | None  # when that state was entered (its ladder's origin)
    action_code: str | None
    merge_fields: Mapping[str, FactValue] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    events: tuple[EventDue, ...] = ()
    next_change_at: datetime | None = None


@dataclass(frozen=True)
class _Position:
    state: State
    entered_at: datetime | None
    step: int
    step_since: datetime | None
    next_at: datetime | None


def reinit_state(entity: Entity, facts: Mapping[str, FactValue], at: datetime) -> str | None:
    """The state a re-initialisation at ``at`` gives, from current facts."""
    env = with_derived(entity, facts)
    for choice in entity.reinit:
        if choice.when is None or holds(choice.when, env, at):
            return choice.state
    return None


def with_derived(entity: Entity, facts: Mapping[str, FactValue]) -> dict[str, FactValue]:
    """Facts plus the entity's derived facts, computed in declaration order."""
    env = dict(facts)
    for derived in entity.derived:
        env[derived.name] = evaluate_expr(derived.expr, env)
    return env


def evaluate(
    entity: Entity,
    facts: Mapping[str, FactValue],
    actions: Iterable[ActionOccurrence],
    now: datetime,
    baseline: Baseline | None = None,
    *,
    events_since: datetime | None = None,
) -> Evaluation:
    """Evaluate ``entity`` at ``now``. Actions after ``now`` are ignored; action
    events older than ``events_since`` are not reported."""
    require_aware(now, "now")
    env = with_derived(entity, facts)
    past = [a for a in actions if a.at <= now and a.action in entity.actions]

    if entity.mode is Mode.CONDITIONS:
        state_name, entered_at, entry_next = _entry_by_conditions(entity, env, now)
    else:
        state_name, entered_at = _entry_by_actions(entity, past, now, baseline)
        entry_next = None

    code = _latest_code(entity, past)
    if state_name is None:
        return Evaluation(
            now=now,
            status=None,
            status_since=None,
            state=None,
            state_entered_at=None,
            action_code=code,
            merge_fields=_merge_fields(entity, env, None, code),
            events=_action_events(entity, env, past, events_since),
            next_change_at=entry_next,
        )

    position = _timeline(entity, entity.states[state_name], entered_at, now)
    status = position.state.status_name(position.step)
    candidates = [t for t in (position.next_at, entry_next) if t is not None]
    events = _action_events(entity, env, past, events_since)
    if position.state.event is not None:
        entry_event = _state_event(position.state.event, position, env, now)
        # Status-entry events honour the event window like action events: an
        # entry older than ``events_since`` is not reported (a reminder dated
        # months back is not sent on going live).
        if events_since is None or entry_event.occurred_at >= events_since:
            events += (entry_event,)
    return Evaluation(
        now=now,
        status=status,
        status_since=position.step_since,
        state=position.state.name,
        state_entered_at=position.entered_at,
        action_code=code,
        merge_fields=_merge_fields(entity, env, status, code),
        tags=position.state.tags,
        events=events,
        next_change_at=min(candidates) if candidates else None,
    )


# ---------------------------------------------------------------- entry


def _entry_by_actions(
    entity: Entity,
    past: list[ActionOccurrence],
    now: datetime,
    baseline: Baseline | None,
) -> tuple[str | None, datetime | None]:
    latest: tuple[datetime, int, str] | None = None
    for occurrence in past:
        action = entity.actions[occurrence.action]
        if action.enters is None:
            continue
        key = (occurrence.at, action.order, action.enters)
        if latest is None or key[:2] > latest[:2]:
            latest = key
    if baseline is not None and baseline.at <= now and baseline.state in entity.states:
        # Actions at or before the re-initialisation are superseded by it.
        if latest is None or latest[0] <= baseline.at:
            return baseline.state, baseline.at
    if latest is None:
        return None, None
    return latest[2], latest[0]


def _choose(entity: Entity, env: Mapping[str, FactValue], at: datetime) -> str | None:
    for choice in entity.choices:
        if choice.when is None or holds(choice.when, env, at):
            return choice.state
    return None


def _entry_by_conditions(
    entity: Entity, env: Mapping[str, FactValue], now: datetime
) -> tuple[str | None, datetime | None, datetime | None]:
    """State chosen at ``now``, when it was entered, and when another would be."""
    instants: set[datetime] = set()
    for choice in entity.choices:
        if choice.when is not None:
            instants |= thresholds(choice.when, env)
    current = _choose(entity, env, now)
    # Conditions only flip at thresholds (right-continuous), so the state just
    # before a threshold t is the one chosen at t - 1µs.
    entered_at: datetime | None = None
    for t in sorted((t for t in instants if t <= now), reverse=True):
        if _choose(entity, env, t - _TICK) != current:
            entered_at = t
            break
    else:
        # Held all along: it holds since the entity began (a `since` fact dated
        # after now is bad data, but still the best answer, and a stable one).
        since = env.get(entity.since) if entity.since else None
        entered_at = since if isinstance(since, datetime) else None
    next_at = None
    for t in sorted(t for t in instants if t > now):
        if _choose(entity, env, t) != current:
            next_at = t
            break
    return current, entered_at, next_at


# ---------------------------------------------------------------- timeline


@dataclass(frozen=True)
class Position:
    """Where a state's timeline stands at an instant (see ``position_at``)."""

    status: str
    status_since: datetime | None
    state: str
    state_entered_at: datetime | None
    tags: frozenset[str]
    next_at: datetime | None


def position_at(entity: Entity, state: str, entered_at: datetime, now: datetime) -> Position:
    """The timeline of ``state`` entered at ``entered_at``, seen at ``now``: a
    pure function of those three, used where the entry is known from elsewhere
    (a re-initialisation baseline applied to a set-based evaluation)."""
    position = _timeline(entity, entity.states[state], entered_at, now)
    return Position(
        status=position.state.status_name(position.step),
        status_since=position.step_since,
        state=position.state.name,
        state_entered_at=position.entered_at,
        tags=position.state.tags,
        next_at=position.next_at,
    )


def _timeline(
    entity: Entity, state: State, entered_at: datetime | None, now: datetime
) -> _Position:
    if entered_at is None:
        # Entered at an unknown instant (a condition that always held and no
        # `since` fact): the state is known, its timeline is not.
        return _Position(state, None, 0, None, None)
    t = entered_at
    seen: dict[str, datetime] = {}
    skipped = False
    while state.then is not None and now >= t + state.then.after:
        if not skipped and state.name in seen:
            # Back where we were one period ago: jump over the whole periods.
            period = t - seen[state.name]
            t += ((now - t) // period) * period
            skipped = True
            if now < t + state.then.after:
                break
        seen[state.name] = t
        t += state.then.after
        state = entity.states[state.then.enter]

    elapsed = now - t
    steps = state.steps
    if state.loop is not None and elapsed >= state.loop.after:
        back = steps[state.loop.back_to].after
        period = state.loop.after - back
        laps, into = divmod(elapsed - state.loop.after, period)
        origin = t + state.loop.after + laps * period - back  # where a lap's offsets count from
        offset = back + into
        step = _step_at(state, offset)
        nxt = steps[step + 1].after if step + 1 < len(steps) else state.loop.after
        return _Position(state, t, step, origin + steps[step].after, origin + nxt)

    step = _step_at(state, elapsed)
    if step + 1 < len(steps):
        next_at: datetime | None = t + steps[step + 1].after
    elif state.then is not None:
        next_at = t + state.then.after
    elif state.loop is not None:
        next_at = t + state.loop.after
    else:
        next_at = None
    return _Position(state, t, step, t + steps[step].after, next_at)


def _step_at(state: State, offset: timedelta) -> int:
    step = 0
    for index, candidate in enumerate(state.steps):
        if candidate.after <= offset:
            step = index
    return step


# ---------------------------------------------------------------- outputs


def _latest_code(entity: Entity, past: list[ActionOccurrence]) -> str | None:
    latest: tuple[datetime, int] | None = None
    code = None
    for occurrence in past:
        action = entity.actions[occurrence.action]
        if action.code is None:
            continue
        key = (occurrence.at, action.order)
        if latest is None or key > latest:
            latest, code = key, action.code
    return code


def _merge_fields(
    entity: Entity, env: Mapping[str, FactValue], status: str | None, code: str | None
) -> dict[str, FactValue]:
    values: dict[str, FactValue] = {}
    for merge_field in entity.merge_fields:
        if merge_field.source == STATUS:
            values[merge_field.tag] = status
        elif merge_field.source == ACTION_CODE:
            values[merge_field.tag] = code
        else:
            values[merge_field.tag] = env.get(merge_field.source)
    return values


def _properties(spec: EventSpec, env: Mapping[str, FactValue]) -> dict[str, str]:
    props: dict[str, str] = {}
    for prop, source in spec.properties.items():
        value = env.get(source)
        if value is None:
            continue
        props[prop] = value.isoformat() if isinstance(value, datetime) else str(value)
    return props


def _action_events(
    entity: Entity,
    env: Mapping[str, FactValue],
    past: list[ActionOccurrence],
    since: datetime | None,
) -> tuple[EventDue, ...]:
    events = []
    for occurrence in sorted(past):
        action = entity.actions[occurrence.action]
        if action.event is None or (since is not None and occurrence.at < since):
            continue
        key = f"action:{action.name}:{occurrence.at.isoformat()}"
        events.append(
            EventDue(key, action.event.name, occurrence.at, _properties(action.event, env))
        )
    return tuple(events)


def _state_event(
    spec: EventSpec, position: _Position, env: Mapping[str, FactValue], now: datetime
) -> EventDue:
    key = f"status:{position.state.name}:{spec.name}"
    if spec.once == "entry":
        key += f":{position.entered_at.isoformat() if position.entered_at else 'unknown'}"
    occurred = position.entered_at or now
    return EventDue(key, spec.name, occurred, _properties(spec, env))
