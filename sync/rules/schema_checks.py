"""Checks of a whole entity, once each of its sections is built.

A reported status has one meaning, conditions after an ``otherwise`` are
never chosen, ``then`` chains may not come back to where they started with no
delay, and a status nothing can reach is warned about.
"""

from __future__ import annotations

from datetime import timedelta

from sync.rules.loader import MarkedDict
from sync.rules.model import Entity, Mode
from sync.rules.schema_report import RulesReport
from sync.rules.validate import Path_


def check_entity(report: RulesReport, raw: MarkedDict, entity: Entity, path: Path_) -> None:
    statuses = raw["statuses"]
    condition_mode = entity.mode is Mode.CONDITIONS
    check_status_names(report, statuses, entity, path)
    if condition_mode:
        for action in entity.actions.values():
            if action.enters is not None:
                actions_raw = raw["actions"]
                report.error(
                    actions_raw[action.name],
                    "enters",
                    (*path, "actions", action.name, "enters"),
                    "actions cannot enter statuses here: this entity's statuses are chosen "
                    "by their 'when' conditions",
                )
        seen_otherwise: str | None = None
        for state in entity.states.values():
            if state.chosen_by_condition and seen_otherwise is not None:
                report.error(
                    statuses,
                    state.name,
                    (*path, "statuses", state.name, "when"),
                    f"never chosen: {seen_otherwise!r} above it says 'otherwise'",
                )
            if state.otherwise:
                seen_otherwise = state.name
    check_cycles(report, statuses, entity, path)
    check_reachable(report, statuses, entity, path)


def check_status_names(
    report: RulesReport, statuses: MarkedDict, entity: Entity, path: Path_
) -> None:
    owner: dict[str, str] = {}
    for state in entity.states.values():
        for status in state.status_names:
            if status in owner and owner[status] != state.name:
                report.error(
                    statuses,
                    state.name,
                    (*path, "statuses", state.name),
                    f"status {status!r} is also a step of {owner[status]!r}; "
                    "every reported status must have one meaning",
                )
            owner[status] = state.name


def check_cycles(report: RulesReport, statuses: MarkedDict, entity: Entity, path: Path_) -> None:
    """Reject ``then`` chains that come back to where they started with no delay:
    the entity would never settle in any of those statuses."""
    reported: set[frozenset[str]] = set()
    for start in entity.states.values():
        chain = [start.name]
        total = timedelta(0)
        current = start
        while current.then is not None:
            total += current.then.after
            nxt = current.then.enter
            if nxt in chain:
                cycle = chain[chain.index(nxt) :]
                members = frozenset(cycle)
                cycle_delay = sum(
                    (entity.states[n].then.after for n in cycle),  # type: ignore[union-attr]
                    timedelta(0),
                )
                if cycle_delay == timedelta(0) and members not in reported:
                    reported.add(members)
                    report.error(
                        statuses,
                        cycle[0],
                        (*path, "statuses", cycle[0], "then"),
                        f"statuses {' → '.join([*cycle, nxt])} form a cycle with no delay: "
                        "the entity would never settle in any of them",
                    )
                break
            chain.append(nxt)
            current = entity.states[nxt]


def check_reachable(report: RulesReport, statuses: MarkedDict, entity: Entity, path: Path_) -> None:
    entered = {a.enters for a in entity.actions.values() if a.enters}
    entered |= {c.state for c in entity.reinit}
    entered |= {s.then.enter for s in entity.states.values() if s.then}
    entered |= {s.name for s in entity.states.values() if s.chosen_by_condition}
    for state in entity.states.values():
        if state.name not in entered:
            report.warn(
                statuses,
                state.name,
                (*path, "statuses", state.name),
                "no action, condition, re-initialisation or 'then' ever enters this status",
            )
