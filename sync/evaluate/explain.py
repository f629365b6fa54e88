"""Why is this entity in this status? Its timeline, rebuilt from the engine.

``timeline`` replays an entity's history with the pure engine: it starts at
the earliest instant that matters (first action, re-initialisation, the
``since`` fact, the earliest condition threshold) and walks forward from one
change to the next (``next_change_at`` or the next action), recording each
status entered and what caused it; the latest ``limit`` entries are kept.

``explain_entity`` gathers everything ``mailsync explain`` shows: the
timeline, the current evaluation, and what the state store knows of the
member (last accepted push, failures, events sent). It never touches the
Mailchimp API key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sync.addresses import normalise_email
from sync.evaluate.engine import Baseline, Evaluation, evaluate, with_derived
from sync.evaluate.members import merge_values, scoped_events
from sync.evaluate.related import StoredStates, related_statuses
from sync.mailchimp.changes import MailchimpChange
from sync.mailchimp.ledger import MailchimpMember, MemberPushState
from sync.records import ActionOccurrence, EntityRecord, FactValue
from sync.rules.expression_eval import thresholds
from sync.rules.model import Entity
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceReader
from sync.state.baselines import Baseline as StoredBaseline


class ExplainedState(StoredStates, Protocol):
    """What ``explain`` reads of the state store, and nothing more: the
    baseline, what Mailchimp accepted and says, the events sent, the email
    index (``StateStore`` is one)."""

    def baseline(self, entity_type: str, entity_id: str) -> StoredBaseline | None: ...

    def member_states(self, emails: Iterable[str]) -> dict[str, MemberPushState]: ...

    def sent_event_keys(self, email: str, keys: Iterable[str]) -> set[str]: ...

    def mailchimp_members(self, emails: Iterable[str]) -> dict[str, MailchimpMember]: ...

    def mailchimp_history(self, email: str, limit: int = 20) -> list[MailchimpChange]: ...

    def entity_ids_by_email(self, emails: Iterable[str]) -> dict[str, set[str]]: ...

    def running_emails(self, emails: Iterable[str] | None = None) -> set[str]: ...


@dataclass(frozen=True)
class Step:
    at: datetime
    cause: str
    status: str | None


@dataclass
class Explanation:
    entity: Entity
    record: EntityRecord
    now: datetime
    evaluation: Evaluation
    timeline: list[Step]
    truncated: bool
    baseline: Baseline | None = None
    pushed: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "entity_type": self.entity.name,
            "id": self.record.id,
            "email": self.record.email,
            "now": _iso(self.now),
            "status": ev.status,
            "status_since": _iso(ev.status_since),
            "state": ev.state,
            "state_entered_at": _iso(ev.state_entered_at),
            "next_change_at": _iso(ev.next_change_at),
            "reinit": (
                {"status": self.baseline.state, "at": _iso(self.baseline.at)}
                if self.baseline
                else None
            ),
            "timeline": [
                {"at": _iso(s.at), "cause": s.cause, "status": s.status} for s in self.timeline
            ],
            "timeline_truncated": self.truncated,
            "merge_fields": merge_values(self.entity, ev.merge_fields),
            "events": [
                {
                    "key": e.key,
                    "name": e.name,
                    "at": _iso(e.occurred_at),
                    "properties": dict(e.properties),
                }
                for e in scoped_events(self.entity, self.record.id, ev.events)
            ],
            "mailchimp": dict(self.pushed),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _start(
    entity: Entity,
    facts: Mapping[str, FactValue],
    actions: Iterable[ActionOccurrence],
    baseline: Baseline | None,
) -> datetime | None:
    candidates = [a.at for a in actions]
    if baseline is not None:
        candidates.append(baseline.at)
    env = with_derived(entity, facts)
    if entity.since and isinstance(env.get(entity.since), datetime):
        candidates.append(env[entity.since])  # type: ignore[arg-type]
    for choice in entity.choices:
        if choice.when is not None:
            candidates.extend(thresholds(choice.when, env))
    return min(candidates) if candidates else None


def timeline(
    entity: Entity,
    facts: Mapping[str, FactValue],
    actions: Iterable[ActionOccurrence],
    now: datetime,
    baseline: Baseline | None = None,
    *,
    limit: int = 50,
) -> tuple[list[Step], bool]:
    """The statuses the entity went through up to ``now`` (the latest
    ``limit`` of them), and whether older ones were left out."""
    past = sorted(a for a in actions if a.at <= now and a.action in entity.actions)
    if baseline is not None and baseline.at > now:
        baseline = None
    start = _start(entity, facts, past, baseline)
    if start is None or start > now:
        return [], False
    by_instant: dict[datetime, list[str]] = {}
    for occurrence in past:
        by_instant.setdefault(occurrence.at, []).append(occurrence.action)
    steps: list[Step] = []
    previous: tuple[str | None, datetime | None] | None = None
    t = start
    while t <= now:
        result = evaluate(entity, facts, past, t, baseline)
        causes = [f"action {name}" for name in by_instant.get(t, [])]
        if baseline is not None and t == baseline.at:
            causes.insert(0, "re-initialisation")
        current = (result.status, result.status_since)
        if causes or current != previous:
            steps.append(Step(t, ", ".join(causes) or "time", result.status))
        previous = current
        later = [i for i in by_instant if i > t]
        if baseline is not None and baseline.at > t:
            later.append(baseline.at)
        if result.next_change_at is not None:
            later.append(result.next_change_at)
        if not later:
            break
        t = min(later)
    # The recent past explains the present; older entries are dropped first.
    return steps[-limit:], len(steps) > limit


def explain_entity(
    entity: Entity,
    record: EntityRecord,
    now: datetime,
    state: ExplainedState | None = None,
    *,
    limit: int = 50,
    events_since: datetime | None = None,
) -> Explanation:
    """Everything about one entity; ``events_since`` is the daemon's event
    window (older action events are never sent, so they are not listed)."""
    baseline = None
    pushed: dict[str, Any] = {}
    if state is not None:
        stored = state.baseline(entity.name, record.id) if entity.reinit else None
        if stored is not None:
            baseline = Baseline(stored.status, stored.entered_at)
        if record.email:
            email = normalise_email(record.email)
            side = mailchimp_side(state, email)
            # An address changed in Mailchimp: the ledger knows the new one.
            email = side.get("address", email) if side else email
            member = state.member_states([email]).get(email)
            if member is not None:
                pushed = {
                    "pushed_at": _iso(member.pushed_at),
                    "fields": dict(member.fields),
                    "tags": sorted(member.tags),
                    "failure": (
                        {
                            "reason": member.failure.reason,
                            "permanent": member.failure.permanent,
                            "failed_at": _iso(member.failure.failed_at),
                            "next_retry_at": _iso(member.failure.next_retry_at),
                        }
                        if member.failure
                        else None
                    ),
                }
            else:
                pushed = {"pushed_at": None}
            due = evaluate(
                entity, record.facts, record.actions, now, baseline, events_since=events_since
            )
            events = scoped_events(entity, record.id, due.events)
            sent = state.sent_event_keys(email, [e.key for e in events])
            pushed["events_sent"] = sorted(sent)
            # In a /batches job left running: its answer is not in yet.
            pushed["in_running_batch"] = bool(state.running_emails([email]))
            if side:
                pushed["mailchimp_side"] = side
    evaluation = evaluate(
        entity, record.facts, record.actions, now, baseline, events_since=events_since
    )
    steps, truncated = timeline(entity, record.facts, record.actions, now, baseline, limit=limit)
    return Explanation(entity, record, now, evaluation, steps, truncated, baseline, pushed)


def mailchimp_side(state: ExplainedState, email: str) -> dict[str, Any]:
    """What changed on Mailchimp's side for this address (webhooks, poll,
    answers): status, address moved, profile edits, recent webhooks; {} if nothing."""
    known = state.mailchimp_members([email]).get(email)
    history = state.mailchimp_history(email, limit=10)
    if known is None and not history:
        return {}
    side: dict[str, Any] = {
        "address": known.address if known else email,
        "status": known.status if known else None,
        "reason": known.reason if known else "",
        "status_at": _iso(known.status_at) if known else None,
        "source": known.source if known else None,
        "profile_edits": dict(known.merges) if known else {},
        "webhooks": [
            {
                "type": c.kind,
                "at": _iso(c.at),
                "status": c.status,
                "old_email": c.old_email,
                "email": c.email,
            }
            for c in history
        ],
    }
    return side


def render_text(explanation: Explanation) -> list[str]:
    data = explanation.as_json()
    lines = [f"{data['entity_type']} {data['id']} <{data['email'] or 'no email'}> at {data['now']}"]
    if data["status"] is None:
        lines.append("  status: none (no action or condition gives one yet)")
    else:
        since = data["status_since"] or "an unknown instant"
        lines.append(f"  status: {data['status']} since {since}")
        if data["state"] != data["status"]:
            lines.append(f"    (ladder of {data['state']}, entered {data['state_entered_at']})")
    if data["next_change_at"]:
        lines.append(f"  next change: {data['next_change_at']} (by time alone)")
    else:
        lines.append("  next change: none by time alone")
    if data["reinit"]:
        lines.append(f"  re-initialised to {data['reinit']['status']} at {data['reinit']['at']}")
    lines.append("  timeline:")
    for step in data["timeline"]:
        lines.append(f"    {step['at']}  {step['cause']:<28} -> {step['status'] or '(none)'}")
    if data["timeline_truncated"]:
        lines.insert(len(lines) - len(data["timeline"]), "    … (earlier entries left out)")
    if not data["timeline"]:
        lines.append("    (nothing yet)")
    if data["merge_fields"]:
        lines.append("  merge fields now:")
        lines.extend(f"    {tag} = {value!r}" for tag, value in data["merge_fields"].items())
    if data["events"]:
        sent = set(data["mailchimp"].get("events_sent", []))
        lines.append("  events due (recent enough to send):")
        for event in data["events"]:
            mark = "sent" if event["key"] in sent else "not sent yet"
            lines.append(f"    {event['name']} at {event['at']} ({mark})")
    mc = data["mailchimp"]
    if mc:
        if mc.get("pushed_at"):
            lines.append(f"  Mailchimp: last accepted push at {mc['pushed_at']}")
            lines.extend(f"    {tag} = {value!r}" for tag, value in mc["fields"].items())
        else:
            lines.append("  Mailchimp: nothing pushed yet")
        side = mc.get("mailchimp_side")
        if side:
            if side["address"] != normalise_email(data["email"] or ""):
                lines.append(f"  address changed in Mailchimp: pushes go to {side['address']}")
            if side["status"]:
                reason = f", reason {side['reason']}" if side["reason"] else ""
                lines.append(
                    f"  in Mailchimp: {side['status']} since {side['status_at']}"
                    f" (from {side['source']}{reason})"
                )
            lines.extend(
                f"    edited in Mailchimp: {tag} = {value!r}"
                for tag, value in side["profile_edits"].items()
            )
            lines.extend(f"    webhook {w['type']} at {w['at']}" for w in side["webhooks"])
        if mc.get("in_running_batch"):
            lines.append(
                "  waiting for a /batches job left running in Mailchimp: the next cycle "
                "collects its answer (mailsync status lists the jobs)"
            )
        failure = mc.get("failure")
        if failure:
            kind = "permanent" if failure["permanent"] else "transient"
            retry = failure["next_retry_at"] or "when the data changes"
            lines.append(
                f"  pending error ({kind}): {failure['reason']} "
                f"(failed {failure['failed_at']}, retry {retry})"
            )
    return lines


def find_records(
    who: str,
    types: Sequence[str],
    sources: SourcesConfig,
    reader: SourceReader,
    state: ExplainedState,
    now: datetime,
) -> list[tuple[str, EntityRecord]]:
    """The records of ``who`` (an email address or an entity id) in the sources,
    per entity type: found through the state store's email index, else by
    reading the source itself (an entity not evaluated yet)."""
    found: list[tuple[str, EntityRecord]] = []
    by_email = "@" in who
    known = state.entity_ids_by_email([who]) if by_email else {}
    for name in types:
        if name not in sources.entities:
            continue
        related = related_statuses(sources, state, name)
        records: Iterator[EntityRecord]
        if by_email and not known.get(name):
            records = (
                r
                for r in reader.read_entities(name, now=now, related_statuses=related)
                if r.email and normalise_email(r.email) == normalise_email(who)
            )
        else:
            ids = sorted(known.get(name, ())) if by_email else [who]
            records = reader.read_entities(name, now=now, ids=ids, related_statuses=related)
        found.extend((name, r) for r in records)
    return found
