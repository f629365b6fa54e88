"""Events exactly once: settling the intents of events whose outcome is unknown.

An event POST is not idempotent: sent twice, it is there twice. So before
POSTing, the sink records an *intent* per event; an answer that leaves the
request *maybe processed* (or a kill -9) leaves the intent behind. Before
sending anything more to a member with intents left, ``reconcile_events``
reads the member's events from Mailchimp (``GET …/events``), removes those
already recorded sent (by signature: name, instant to the second,
properties), and each intent whose signature is still there was carried out:
recorded sent, not re-sent. The others were not: sent again (if still due)
or forgotten.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.addresses import subscriber_hash
from sync.mailchimp.answers import Answer, AnswerClass
from sync.mailchimp.caller import Caller
from sync.mailchimp.ledger import SentEvent, event_signature
from sync.mailchimp.operations import OpRunner, collect
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.recording import Outcome, PushRecorder
from sync.records import EventDue

log = logging.getLogger(__name__)

#: Events per page when reading a member's events (Mailchimp's maximum).
EVENTS_PAGE = 1000


@dataclass
class EventsOutcome(Outcome):
    """What the tags and events phase learnt, recorded at its end."""

    #: Events accepted in this push, or found in Mailchimp (``confirmed``).
    events: list[SentEvent] = field(default_factory=list)
    #: Intents to forget: known not processed.
    settled: list[tuple[str, str]] = field(default_factory=list)
    #: Events of unknown outcome found in Mailchimp (so recorded sent without
    #: a new POST), or not found (so sent again).
    confirmed: int = 0
    resent: int = 0
    #: Events POSTed in this push whose outcome is unknown: left pending.
    unconfirmed: int = 0
    #: Members with tags or events in a ``/batches`` job left running.
    running: set[str] = field(default_factory=set)


def sent_event(email: str, event: EventDue, now: datetime) -> SentEvent:
    signature = event_signature(
        event.name, event.occurred_at, {k: str(v) for k, v in event.properties.items()}
    )
    return SentEvent(email, event.key, event.name, now, signature)


def reconcile_events(
    pool: ThreadPoolExecutor,
    plans: Sequence[MemberPlan],
    runner: OpRunner,
    recorder: PushRecorder,
    outcome: EventsOutcome,
) -> dict[str, tuple[EventDue, ...]]:
    """The events to POST per member, once intents of unknown outcome are
    settled against Mailchimp's own list of the member's events.

    Members without intents send their due events. For the others, an
    intent whose event Mailchimp lists is recorded sent (``outcome.events``);
    one it does not list is sent again, even if it has left the window of
    due events meanwhile: the intent was the commitment to send it.
    A member whose intents are too recent to check, or whose events could
    not be read, sends no event in this push (a transient failure brings
    it back).
    """
    ledger, now = recorder.ledger, recorder.now
    pending = ledger.pending_events(p.key for p in plans)
    to_send = {p.key: p.events for p in plans if p.events and p.key not in pending}
    checking = [p for p in plans if p.key in pending]
    if not checking:
        return to_send
    settle_before = now - runner.config.event_settle
    ready: list[MemberPlan] = []
    for p in checking:
        if max(i.attempted_at for i in pending[p.key]) > settle_before:
            outcome.failures.append(
                recorder.failure(
                    p,
                    Answer(
                        AnswerClass.TRANSIENT,
                        "events_settling",
                        "events of unknown outcome sent too recently to be checked",
                    ),
                    "events",
                )
            )
        else:
            ready.append(p)
    if ready and runner.batches_unsettled():
        # A job queued by a push that died (or whose start answer was
        # lost) may still POST these events: Mailchimp's list would not
        # show them yet. Check once every job has finished.
        for p in ready:
            outcome.failures.append(
                recorder.failure(
                    p,
                    Answer(
                        AnswerClass.TRANSIENT,
                        "batches_running",
                        "events of unknown outcome wait for /batches jobs still running",
                    ),
                    "events",
                )
            )
        ready = []
    sent = ledger.sent_event_signatures(p.key for p in ready)
    futures = [pool.submit(member_events, runner.caller, p) for p in ready]
    listed = _Listed(recorder, outcome)
    collect(futures, listed.add)
    confirmed: list[SentEvent] = []
    for p in ready:
        if p.key not in listed.signatures:
            continue
        # Mailchimp's copies of events already recorded sent are theirs,
        # not the unconfirmed ones', even when they look the same.
        there = listed.signatures[p.key] - Counter(sent.get(p.key, []))
        due = {e.key: e for e in p.events}
        for intent in pending[p.key]:
            signature = intent.signature
            if there[signature] > 0:
                there[signature] -= 1
                confirmed.append(SentEvent(p.key, intent.key, intent.name, now, signature))
                due.pop(intent.key, None)
                outcome.confirmed += 1
            else:
                outcome.resent += 1
                due.setdefault(
                    intent.key,
                    EventDue(intent.key, intent.name, intent.occurred_at, intent.properties),
                )
        if due:
            to_send[p.key] = tuple(due.values())
    outcome.events.extend(confirmed)
    if confirmed:
        log.info("%d events of unknown outcome found in Mailchimp: not sent again", len(confirmed))
    return to_send


class _Listed:
    """The signatures of each member's events as Mailchimp lists them."""

    def __init__(self, recorder: PushRecorder, outcome: EventsOutcome) -> None:
        self.recorder = recorder
        self.outcome = outcome
        self.signatures: dict[str, Counter[str]] = {}

    def add(self, result: tuple[MemberPlan, Answer, Counter[str]]) -> None:
        plan, answer, signatures = result
        if answer.ok:
            self.signatures[plan.key] = signatures
        else:
            self.outcome.failures.append(self.recorder.failure(plan, answer, "events lookup"))


def member_events(caller: Caller, plan: MemberPlan) -> tuple[MemberPlan, Answer, Counter[str]]:
    """Signatures of every event Mailchimp lists for this member (all pages)."""
    client, list_id = caller.client, caller.list_id
    h = subscriber_hash(plan.email)
    signatures: Counter[str] = Counter()
    offset = 0
    while True:
        answer = caller.call(
            f"GET /lists/{list_id}/members/{h}/events",
            lambda offset=offset: client.lists.get_list_member_events(  # type: ignore[misc]
                list_id, h, count=EVENTS_PAGE, offset=offset
            ),
        )
        if not answer.ok or not isinstance(answer.body, Mapping):
            if answer.ok:
                answer = Answer(AnswerClass.TRANSIENT, "unreadable", "unreadable event list")
            return plan, answer, signatures
        page = [e for e in answer.body.get("events") or [] if isinstance(e, Mapping)]
        for event in page:
            signature = _listed_signature(event)
            if signature is not None:
                signatures[signature] += 1
        offset += len(page)
        total = answer.body.get("total_items")
        if not page or not isinstance(total, int) or offset >= total:
            return plan, answer, signatures


def _listed_signature(event: Mapping[str, Any]) -> str | None:
    """The signature of one event as ``GET …/events`` lists it; None when it
    cannot be one of ours (no name, no readable instant)."""
    name, occurred = event.get("name"), event.get("occurred_at")
    if not isinstance(name, str) or not isinstance(occurred, str):
        return None
    try:
        instant = datetime.fromisoformat(occurred)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)  # Mailchimp's instants are UTC
    properties = event.get("properties")
    props = (
        {str(k): str(v) for k, v in properties.items()} if isinstance(properties, Mapping) else {}
    )
    return event_signature(name, instant, props)
