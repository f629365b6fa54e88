"""The cycle's events: which occurrences are in the window, which are unsent.

The occurrences of event-bearing actions inside the event window
(``events_since``: ``events_max_age`` back, never before the state store
went live nor before a re-initialisation) and the status-entry events are
keyed as the engine keys them and looked up among the events already sent
(an anti-join). The events themselves come from the same occurrences and
the compiled row (``row_events``), unless the rules give events properties
(facts, which the compiled row does not carry): then an entity with an
event not sent yet is evaluated by the engine, which gives them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sync.addresses import normalise_email
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.type_run import Derived, TypeRun
from sync.records import ActionOccurrence, EventDue
from sync.rules.model import Entity
from sync.sources.reader import SourceReader
from sync.state.store import StateStore


def row_events(
    entity: Entity,
    derived: Derived,
    occurrences: Iterable[ActionOccurrence],
    since: datetime,
    now: datetime,
) -> list[EventDue]:
    """The events the engine would give this entity at ``now`` with
    ``events_since=since`` (keys as the engine's), from a set-based
    evaluation and the event-bearing occurrences in the window, without
    their properties (see ``properties_needed``). The parity suite checks
    them against ``engine.evaluate``."""
    events = [
        EventDue(f"action:{o.action}:{o.at.isoformat()}", action.event.name, o.at)
        for o in sorted(occurrences)
        if since <= o.at <= now
        and (action := entity.actions.get(o.action)) is not None
        and action.event is not None
    ]
    state = entity.states.get(derived.state) if derived.state else None
    if state is not None and state.event is not None:
        entered = derived.state_entered_at
        occurred = entered or now
        if occurred >= since:
            key = f"status:{state.name}:{state.event.name}"
            if state.event.once == "entry":
                key += f":{entered.isoformat() if entered else 'unknown'}"
            events.append(EventDue(key, state.event.name, occurred))
    return events


def properties_needed(entity: Entity) -> bool:
    """Whether some event of this type carries properties (facts): then its
    events come from the engine, not from ``row_events``."""
    specs = [a.event for a in entity.actions.values() if a.event is not None]
    specs += [s.event for s in entity.states.values() if s.event is not None]
    return any(spec.properties for spec in specs)


def event_keys(
    entity: Entity,
    ident: str,
    derived: Derived,
    occurrences: Iterable[ActionOccurrence],
    since: datetime,
    now: datetime,
) -> list[str]:
    """The idempotency keys of ``row_events`` as its member's keys (scoped to
    the entity): what the cycle looks up among the events sent."""
    return [
        f"{entity.name}:{ident}:{e.key}"
        for e in row_events(entity, derived, occurrences, since, now)
    ]


def window_occurrences(
    reader: SourceReader,
    run: TypeRun,
    *,
    now: datetime,
    tick_since: datetime | None,
    count_skipped_since: datetime | None,
    summary: CycleSummary,
) -> dict[str, list[ActionOccurrence]]:
    """The event-bearing occurrences of ``run``'s type inside its window, by
    id: since ``tick_since`` in a tick (None in a full pass). Going live,
    those from ``count_skipped_since`` to the window are counted as skipped."""
    actions = [a.name for a in run.entity.actions.values() if a.event is not None]
    if not actions:
        return {}
    since = run.events_since
    if tick_since is not None and tick_since > since:
        # A tick looks at new rows only; a candidate with an older event
        # not sent (a retry) is evaluated by the engine, and the full
        # pass finds late rows.
        since = tick_since
    if count_skipped_since is not None and count_skipped_since < since:
        since = count_skipped_since
    found = reader.occurrences(run.entity.name, actions, since=since, now=now)
    if since < run.events_since:
        kept: dict[str, list[ActionOccurrence]] = {}
        for ident, occurrences in found.items():
            inside = [o for o in occurrences if o.at >= run.events_since]
            summary.events_skipped += len(occurrences) - len(inside)
            if inside:
                kept[ident] = inside
        found = kept
    return found


def unsent_events(
    state: StateStore,
    run: TypeRun,
    derived: Mapping[str, tuple[str | None, Derived]],
    now: datetime,
) -> set[str]:
    """Ids with an event in the window whose key is not recorded sent."""
    expected: dict[str, tuple[str, list[str]]] = {}
    for ident, (email, r) in derived.items():
        if not email:
            continue
        keys = event_keys(
            run.entity, ident, r, run.occurrences.get(ident, ()), run.events_since, now
        )
        if keys:
            expected[ident] = (normalise_email(email), keys)
    if not expected:
        return set()
    sent = state.sent_events({email for email, _ in expected.values()})
    return {
        ident
        for ident, (email, keys) in expected.items()
        if not sent.get(email, set()).issuperset(keys)
    }
