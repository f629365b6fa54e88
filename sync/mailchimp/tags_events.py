"""Phase 3 of a push: tags (``POST …/tags``) and events (``POST …/events``).

Only for members whose merge values were accepted in this push (or had
nothing to send): an event may start a Customer Journey that reads the
fields. Tags send the managed tags' active/inactive diff. Events are sent
once per idempotency key: intents of an earlier push are settled first
(``sync.mailchimp.event_intents``), then an intent is recorded per event, in
one transaction, before any is POSTed; each answer settles its intent.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

from sync.addresses import subscriber_hash
from sync.mailchimp.answers import Answer, AnswerClass
from sync.mailchimp.batches import RUNNING, Operation
from sync.mailchimp.event_intents import EventsOutcome, reconcile_events, sent_event
from sync.mailchimp.ledger import AcceptedPush, EventIntent
from sync.mailchimp.operations import MemberOp, OpRunner
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.recording import PushRecorder
from sync.mailchimp.summary import PushSummary
from sync.records import EventDue


def tags_and_events(
    pool: ThreadPoolExecutor,
    plans: Sequence[MemberPlan],
    runner: OpRunner,
    recorder: PushRecorder,
    summary: PushSummary,
) -> None:
    """Send the tags and events of ``plans``; record what was accepted, even
    when a fatal answer stops the push."""
    answers = TagsEventsAnswers(recorder)
    outcome = answers.outcome
    try:
        to_send = reconcile_events(pool, plans, runner, recorder, outcome)
        ops = _operations(plans, to_send, runner)
        # The intents first, in one transaction: from here on a crash or a
        # lost answer leaves them behind, to be checked before any re-send.
        recorder.ledger.record_event_intents(
            [
                EventIntent(
                    op.plan.key,
                    op.event.key,
                    op.event.name,
                    op.event.occurred_at,
                    recorder.now,
                    {k: str(v) for k, v in op.event.properties.items()},
                )
                for op in ops
                if op.event is not None
            ]
        )
        runner.run(pool, ops, answers.apply)
    finally:
        record_tags_events(plans, recorder, outcome, summary)


def _operations(
    plans: Sequence[MemberPlan], to_send: dict[str, tuple[EventDue, ...]], runner: OpRunner
) -> list[MemberOp]:
    config = runner.config
    ops: list[MemberOp] = []
    for p in plans:
        base = f"/lists/{runner.list_id}/members/{subscriber_hash(p.email)}"
        if p.needs_tags:
            tags = [{"name": t, "status": "active"} for t in sorted(p.tags_add)] + [
                {"name": t, "status": "inactive"} for t in sorted(p.tags_remove)
            ]
            body = {"tags": tags, "is_syncing": config.tags_is_syncing}
            ops.append(
                MemberOp("tags", p, Operation(f"tags:{p.key}", "POST", f"{base}/tags", body))
            )
        for i, event in enumerate(to_send.get(p.key, ())):
            body = {
                "name": event.name,
                "properties": {k: str(v) for k, v in event.properties.items()},
                "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
                "is_syncing": config.events_is_syncing,
            }
            ops.append(
                MemberOp(
                    "event",
                    p,
                    Operation(f"event:{i}:{p.key}", "POST", f"{base}/events", body),
                    event,
                )
            )
    return ops


class TagsEventsAnswers:
    """Settles each tags or event operation by its answer."""

    def __init__(self, recorder: PushRecorder) -> None:
        self.recorder = recorder
        self.outcome = EventsOutcome()

    def apply(self, op: MemberOp, answer: Answer) -> None:
        now, outcome = self.recorder.now, self.outcome
        if answer.code == RUNNING:
            # In a job left running: settled when a later push collects it
            # (an event's intent stays until then).
            outcome.running.add(op.plan.key)
            return
        if answer.ok and op.kind == "tags":
            outcome.accepted.append(AcceptedPush(op.plan.key, {}, now, op.plan.active_tags))
        elif answer.ok and op.event is not None:
            outcome.events.append(sent_event(op.plan.key, op.event, now))
        elif not answer.ok:
            what = "tags"
            if op.event is not None:
                what = f"event {op.event.name}"
                if answer.maybe_processed:
                    # Maybe carried out: keep the intent, check next time.
                    outcome.unconfirmed += 1
                    what += " (outcome unknown, checked before any re-send)"
                elif answer.kind is not AnswerClass.TRANSIENT:
                    # Refused for good: nothing to send again.
                    outcome.settled.append((op.plan.key, op.event.key))
                # Not taken for now (429, a bare 403): the intent stays
                # as the commitment to send it, even once it has left
                # the window of due events.
            outcome.failures.append(self.recorder.failure(op.plan, answer, what))


def record_tags_events(
    plans: Sequence[MemberPlan],
    recorder: PushRecorder,
    outcome: EventsOutcome,
    summary: PushSummary,
) -> None:
    ledger = recorder.ledger
    # Events first: an accepted event must never be sent twice.
    if outcome.events:
        ledger.record_events_sent(outcome.events)
    if outcome.settled:
        ledger.clear_event_intents(outcome.settled)
    summary.events_confirmed += outcome.confirmed
    summary.events_resent += outcome.resent
    summary.events_unconfirmed += outcome.unconfirmed
    # Those found in Mailchimp were not sent by this push.
    summary.events_sent += len(outcome.events) - outcome.confirmed
    # A member whose earlier failure was about tags or events, and
    # whose every call went through now, must not stay "failed".
    summary.running_members.extend(sorted(outcome.running))
    clean = {a.email for a in outcome.accepted} | {f.email for f in outcome.failures}
    clean |= outcome.running  # not through yet
    outcome.accepted.extend(
        AcceptedPush(p.key, {}, recorder.now)
        for p in plans
        if p.previous_failure is not None and p.key not in clean
    )
    recorder.record(outcome)
