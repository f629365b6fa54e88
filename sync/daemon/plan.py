"""A preview of what a rules change (or a re-initialisation) would do, now.

``mailsync plan`` answers the marketer's question before a change goes live:
which entities would move from which status to which, which members'
merge fields, tags and events would change, and what that costs in
Mailchimp calls. It evaluates nothing itself: it runs the daemon's own
``Cycle`` (a full pass, compiled SQL, diffed against the state store) with
``record=False``, so nothing is written to the state store, and hands it a
``PlanSink`` that sends nothing and only counts what the real sink would
send. The diff compares with the digests of what Mailchimp accepted under
the rules in force, so new rules show exactly the members whose
contribution would change.

``plan --reinit`` previews ``mailsync reinit``: each entity's stored status
next to the state the ``reinit:`` list gives it from current facts.

Memory stays bounded whatever the population: counters, and at most
``samples`` examples per transition (and of members).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sync.daemon.config import Config
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.once import events_window, make_cycle
from sync.daemon.runtime import Runtime, build_runtime, load_checked
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.push_plan import plan_pushes
from sync.mailchimp.sink_config import SinkConfig
from sync.mailchimp.summary import PushSummary
from sync.records import DesiredMember
from sync.rules.model import Entity, Ruleset
from sync.sources.model import SourcesConfig
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import StateStore

#: Calls one ``/batches`` job costs: the start, (usually) one poll and the
#: download of its results.
CALLS_PER_JOB = 3

#: (entity type, status before, status after); before None: not stored yet.
Transition = tuple[str, str | None, str | None]


@dataclass
class MemberSample:
    email: str
    new: bool
    fields: dict[str, object]
    tags_add: list[str]
    tags_remove: list[str]
    events: list[str]


@dataclass
class PlanReport:
    """What a plan found: the transition table and what Mailchimp would get."""

    kind: str  # "rules" or "reinit"
    now: datetime
    rules: Path
    transitions: Counter[Transition] = field(default_factory=Counter)
    #: transition -> ids of at most ``samples`` entities making it
    samples: dict[Transition, list[str]] = field(default_factory=dict)
    entities_read: Counter[str] = field(default_factory=Counter)
    #: merge tag -> members whose value of it would change
    merge_fields: Counter[str] = field(default_factory=Counter)
    tags_added: Counter[str] = field(default_factory=Counter)
    tags_removed: Counter[str] = field(default_factory=Counter)
    #: event name -> how many the next cycle would send
    events: Counter[str] = field(default_factory=Counter)
    #: members the sink would push (created, updated, tagged or sent events)
    members_pushed: int = 0
    new_members: int = 0
    updated_members: int = 0
    unchanged_members: int = 0
    held_back: int = 0
    address_changes: int = 0
    #: entity type -> entities the sources no longer list (would be forgotten)
    deleted: dict[str, int] = field(default_factory=dict)
    #: kind of call -> estimated number of Mailchimp calls
    calls: Counter[str] = field(default_factory=Counter)
    member_samples: list[MemberSample] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether applying the plan would change anything."""
        if self.kind == "reinit":
            return any(after is not None for _, _, after in self.transitions)
        return bool(
            self.transitions
            or self.new_members
            or self.updated_members
            or self.events
            or self.address_changes
            or self.deleted
        )

    def sorted_transitions(self) -> list[tuple[Transition, int]]:
        return sorted(
            self.transitions.items(),
            key=lambda item: (-item[1], item[0][0], str(item[0][1]), str(item[0][2])),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "now": self.now.isoformat(),
            "rules": str(self.rules),
            "changed": self.changed,
            "entities_read": dict(self.entities_read),
            "transitions": [
                {
                    "entity": entity,
                    "from": before,
                    "to": after,
                    "count": count,
                    "samples": self.samples.get((entity, before, after), []),
                }
                for (entity, before, after), count in self.sorted_transitions()
            ],
            "members": {
                "pushed": self.members_pushed,
                "new": self.new_members,
                "updated": self.updated_members,
                "unchanged": self.unchanged_members,
                "held_back": self.held_back,
                "address_changes": self.address_changes,
            },
            "deleted": dict(self.deleted),
            "merge_fields": dict(sorted(self.merge_fields.items())),
            "tags": {
                "added": dict(sorted(self.tags_added.items())),
                "removed": dict(sorted(self.tags_removed.items())),
            },
            "events": dict(sorted(self.events.items())),
            "calls": {**dict(sorted(self.calls.items())), "total": sum(self.calls.values())},
            "member_samples": [vars(s) for s in self.member_samples],
        }

    def lines(self) -> list[str]:
        what = "re-initialisation" if self.kind == "reinit" else f"rules {self.rules}"
        out = [f"plan: {what} at {self.now.isoformat()}"]
        if self.entities_read:
            read = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_read.items()))
            out.append(f"read: {read}")
        out.extend(self.table_lines())
        if self.kind == "rules":
            out.extend(self._member_lines())
        return out

    def table_lines(self) -> list[str]:
        """The transition table, most frequent first, with examples."""
        out: list[str] = []
        if not self.transitions:
            out.append("no status would change")
        else:
            verb = "would enter" if self.kind == "reinit" else "would move"
            out.append(f"entities that {verb} (from -> to):")
            unknown = "(new)" if self.kind == "rules" else "(not stored)"
            rows = self.sorted_transitions()
            width = max(len(f"{entity} {before or unknown}") for (entity, before, _), _ in rows)
            for key, count in rows:
                entity, before, after = key
                left = f"{entity} {before or unknown}".ljust(width)
                ids = self.samples.get(key, [])
                example = f"   e.g. {', '.join(ids)}" if ids else ""
                out.append(f"  {left} -> {after or '(no status)'}: {count}{example}")
        return out

    def _member_lines(self) -> list[str]:
        out = [
            f"members: {self.new_members} new, {self.updated_members} with merge fields "
            f"changed, {self.members_pushed} to push in all, {self.held_back} held back "
            "(a failed push waiting for its retry)"
            + (f", {self.address_changes} address changes" if self.address_changes else "")
        ]
        for entity_type, n in sorted(self.deleted.items()):
            out.append(f"{n} {entity_type} no longer listed by the sources: would be forgotten")
        if self.merge_fields:
            out.append("merge fields that would change (members per tag):")
            out.extend(f"  {tag}: {n}" for tag, n in sorted(self.merge_fields.items()))
        for verb, counts in (("added", self.tags_added), ("removed", self.tags_removed)):
            if counts:
                out.append(f"tags {verb}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        if self.events:
            total = sum(self.events.values())
            out.append(f"events the next cycle would send: {total}")
            out.extend(
                f"  {name}: {n}"
                for name, n in sorted(self.events.items(), key=lambda kv: (-kv[1], kv[0]))
            )
        else:
            out.append("events the next cycle would send: none")
        total = sum(self.calls.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items()))
        out.append(f"Mailchimp calls (estimate): {total}" + (f" ({detail})" if detail else ""))
        if self.member_samples:
            out.append("sample members:")
        for s in self.member_samples:
            parts = [f"  {s.email}{' (new)' if s.new else ''}:"]
            if s.fields:
                parts.append(", ".join(f"{t}={v!r}" for t, v in s.fields.items()))
            if s.tags_add or s.tags_remove:
                changes = [f"+{t}" for t in s.tags_add] + [f"-{t}" for t in s.tags_remove]
                parts.append("tags " + " ".join(changes))
            if s.events:
                parts.append("events " + ", ".join(s.events))
            out.append(" ".join(parts))
        return out


def ops_calls(ops: int, config: SinkConfig) -> int:
    """Calls ``ops`` operations cost: direct below the bulk threshold, else
    ``/batches`` jobs (as ``MailchimpSink._run_ops`` sends them)."""
    if ops == 0:
        return 0
    if not config.use_batches or ops < config.bulk_threshold:
        return ops
    return math.ceil(ops / config.job_size) * CALLS_PER_JOB


class PlanSink:
    """A sink that sends nothing: it plans each push as the Mailchimp sink
    would (``plan_pushes`` against the ledger) and counts the plan into a
    ``PlanReport``."""

    def __init__(
        self,
        ledger: PushLedger,
        report: PlanReport,
        *,
        samples: int,
        config: SinkConfig | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.samples = samples
        self.config = config or SinkConfig()

    def change_address(self, old: str, new: str) -> bool:
        return False

    def remove_member(self, email: str, how: str) -> bool:
        return False

    def collect_running(self) -> PushSummary:
        return PushSummary(dry_run=True)

    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        report = self.report
        plan = plan_pushes(members, self.ledger, report.now)
        new = updates = tag_ops = event_ops = 0
        for p in plan.pushes:
            if not p.known:
                new += 1
            elif p.fields:
                updates += 1
            report.merge_fields.update(p.fields.keys())
            report.tags_added.update(p.tags_add)
            report.tags_removed.update(p.tags_remove)
            report.events.update(e.name for e in p.events)
            tag_ops += p.needs_tags
            event_ops += len(p.events)
            if len(report.member_samples) < self.samples:
                report.member_samples.append(
                    MemberSample(
                        email=p.email,
                        new=not p.known,
                        fields=dict(p.fields),
                        tags_add=sorted(p.tags_add),
                        tags_remove=sorted(p.tags_remove),
                        events=[e.name for e in p.events],
                    )
                )
        report.members_pushed += len(plan.pushes)
        report.new_members += new
        report.updated_members += updates
        report.unchanged_members += plan.unchanged
        report.held_back += plan.held_back
        if new:
            report.calls["batch subscribe"] += math.ceil(new / self.config.batch_size)
        report.calls["member updates"] += ops_calls(updates, self.config)
        report.calls["tags and events"] += ops_calls(tag_ops + event_ops, self.config)
        report.calls = +report.calls  # drop kinds that cost nothing
        return PushSummary(
            dry_run=True,
            considered=plan.considered,
            unchanged=plan.unchanged,
            held_back=plan.held_back,
            pushed=len(plan.pushes),
            events_planned=event_ops,
        )


def plan_rules(
    config: Config,
    *,
    rules: Path | None = None,
    now: datetime,
    samples: int = 5,
) -> PlanReport:
    """What a full pass under ``rules`` (default: the rules in force) would
    do at ``now``, against the state store; writes nothing to it."""
    if rules is not None:
        config = replace(config, rules=rules)
    report = PlanReport("rules", now, config.rules)
    runtime = build_runtime(
        config,
        dry_run=True,
        clock=lambda: now,
        sink_factory=lambda store: PlanSink(store, report, samples=samples),
    )
    try:
        summary = _run_cycle(runtime, now, samples)
    finally:
        runtime.close()
    report.transitions = summary.transitions
    report.entities_read = summary.entities_read
    # A dry cycle does not hand address changes to the sink: it counts them.
    report.address_changes = len(summary.address_changes)
    report.deleted = dict(summary.deleted)
    for entity, ident, before, after in summary.changed:
        report.samples.setdefault((entity, before, after), []).append(ident)
    return report


def _run_cycle(runtime: Runtime, now: datetime, samples: int) -> CycleSummary:
    window = events_window(runtime, now)
    cycle = make_cycle(runtime, now, full=True, record=False, window=window, preview=True)
    cycle.summary.examples_per_transition = samples
    return cycle.run()


#: ``(id, state)`` of every entity of a type, as a re-initialisation gives them.
ReinitStates = Callable[[Entity], Iterable[tuple[str, str | None]]]


def plan_reinit(
    ruleset: Ruleset,
    sources: SourcesConfig,
    state: StateStore,
    states: ReinitStates,
    *,
    rules: Path,
    now: datetime,
    samples: int = 5,
    chunk: int = 5000,
) -> PlanReport:
    """Stored status -> the state ``reinit:`` gives, for every entity of
    every type with a ``reinit:`` list: what ``mailsync reinit`` at ``now``
    would store (an entity for which no line holds keeps no baseline)."""
    report = PlanReport("reinit", now, rules)
    for entity in ruleset.entities.values():
        if not entity.reinit or entity.name not in sources.entities:
            continue
        found = iter(states(entity))
        while batch := list(islice(found, chunk)):
            stored = state.stored_rows(entity.name, [ident for ident, _ in batch])
            for ident, after in batch:
                row = stored.get(ident)
                key = (entity.name, row.status if row else None, after)
                report.transitions[key] += 1
                kept = report.samples.setdefault(key, [])
                if len(kept) < samples:
                    kept.append(ident)
            report.entities_read[entity.name] += len(batch)
    return report


def preview_reinit(
    config: Config, *, rules: Path | None = None, now: datetime, samples: int = 5
) -> PlanReport:
    """``plan_reinit`` with the states computed in SQL, as ``mailsync
    reinit`` computes them by default; reads only."""
    if rules is not None:
        config = replace(config, rules=rules)
    ruleset, sources = load_checked(config)
    database = config.require_database()
    state = StateStore(config.state, schema=config.state_schema)
    try:
        state.migrate()
        with SqlEvaluator(ruleset, sources, database) as sql:
            return plan_reinit(
                ruleset,
                sources,
                state,
                lambda entity: sql.reinit_states(entity.name, at=now),
                rules=config.rules,
                now=now,
                samples=samples,
            )
    finally:
        state.close()
