"""The sink: pushes desired members to Mailchimp, sending only what changed.

Input: ``DesiredMember`` records (``sync.records``) built by the daemon. The
sink diffs them against the ``PushLedger`` (what Mailchimp last ACCEPTED),
sends the differences, and records, member by member, what Mailchimp accepted
or refused. Nothing is recorded before Mailchimp's answer (checkpoint after
commit).

Which endpoint (the important decision)
---------------------------------------
We must never change an existing member's subscription status and want about
ceil(N/500) calls for N changed members.

- ``POST /lists/{id}`` (batch subscribe) takes 500 members per call and answers
  synchronously, but needs a ``status`` per member; with ``update_existing:
  true`` it would *set* that status on existing members (resubscribing the
  unsubscribed, confirming the pending). So we only use it with
  ``update_existing: false``, where it can only *create*: new members get
  ``status_if_new`` (the configured status), existing ones come back in
  ``errors[]`` as ``ERROR_CONTACT_EXISTS`` and are left untouched.
- ``PUT /lists/{id}/members/{hash}`` with ``status_if_new`` (never ``status``)
  is the only upsert that is safe for existing members, but it costs one call
  per member.
- ``POST /batches`` runs many such PUTs as one asynchronous job: one call
  to start, a few polls, one download of the results archive, whatever the
  number of operations (Mailchimp sets no limit on it; ``job_size``, 5000 by
  default, splits very large pushes into jobs that run in parallel).

So the sink works in two phases, run on at most 9 connections (Mailchimp
allows 10 per key):

1. members the ledger has never seen accepted → batch subscribe with
   ``update_existing: false`` (1 call per 500; synchronous per-member results);
   those answering "already a list member" join phase 2;
2. members known to exist whose merge values changed → ``PUT … status_if_new``
   operations, sent as ``/batches`` jobs (1 start + polls + 1 download per
   ``job_size`` operations) when there are at least ``bulk_threshold`` of
   them, else as direct PUTs (cheaper for a handful, and immediate).

Then tags (``POST …/tags``, managed tags only, active/inactive diff) and events
(``POST …/events``, once per idempotency key) go the same way as phase 2, and
only for members whose merge values were accepted in this push (or had
nothing to send): an event may start a Customer Journey that reads the fields.

Events exactly once
-------------------
An event POST is not idempotent: sent twice, it is there twice (and may start
a journey twice). So before POSTing, the sink records an *intent* per event
(``EventIntent``, one transaction for the whole push); Mailchimp's answer then
settles it: accepted → recorded sent (and the intent cleared, in one
transaction); refused or not processed (429, a bare 403, a 4xx) → intent
cleared, failure recorded; an answer that leaves the request *maybe processed*
(timeout, connection reset, 5xx, a ``/batches`` job whose fate is unknown) →
the intent STAYS and the call is not retried in this run. A kill -9 at any
point leaves intents too. Before sending anything more to a member with
intents left, the sink *reconciles*: it reads the member's events from
Mailchimp (``GET …/events``), removes those already recorded sent (by
signature: name, instant to the second, properties), and each intent whose
signature is still there was carried out: recorded sent, not re-sent. The
others were not: sent again (if still due) or forgotten.

Changes made in Mailchimp
-------------------------
What the state store knows of Mailchimp's side (webhooks, the
reconciliation poll, earlier answers; ``sync.mailchimp.changes``) is read before
planning: a member whose address was changed in Mailchimp is pushed to its
new address (no duplicate contact), and a member known to be **archived** is
not pushed at all (recorded as a permanent failure "archived in Mailchimp",
so it shows in ``status`` and ``explain``). Nothing the sink sends can bring
an archived contact back anyway (``status_if_new`` only, batch subscribe
without ``update_existing``), and a ``PUT`` answering ``status: archived``
teaches the state store so, and holds that member's tags and events.
Unsubscribed and cleaned members keep their status; their merge fields,
tags and events are still sent.

Failures
--------
Answers are classified by ``sync.mailchimp.client.classify``. Transient answers are
retried with back-off and jitter (``Caller``); if they persist, the member gets
a transient failure with a growing ``next_retry_at``. Permanent answers
(compliance state, forgotten email, fake address, invalid value, 404/405) are
recorded with the fingerprint of the desired state and are not retried until
that state changes or ``permanent_backoff`` has passed. A fatal answer (401,
403 with a body, unknown audience or merge tag) stops the run with
``FatalError`` after recording what had already been accepted.

Mailchimp as it really behaves
------------------------------
- A merge tag the audience does not have is **not refused**: the value is
  dropped with a 200 answer. So the sink reads the audience's merge tags
  (once per ``merge_fields_ttl``, again as soon as a tag comes back missing),
  does not send values of tags the audience lacks, compares the
  ``merge_fields`` of every answer with what it sent, and records in the
  ledger only the values that came back. A missing tag is an audience
  configuration error: logged at ERROR, recorded (``audience_problems``, shown
  by ``mailsync status``) and counted in ``PushSummary.missing_merge_tags``;
  its values are sent again once the field exists.
- Required merge fields are enforced on updates too: updates carry
  ``skip_merge_validation`` (the ``PUT`` query, and each ``/batches``
  operation's ``params``) so that a member created before a field became
  required can still be updated.
- A value that is not JSON (NaN, ±Infinity) is this member's permanent
  failure, naming the entity and fact; the member's other values and the
  other members are sent.
- Event properties longer than ``sync.payload.EVENT_PROPERTIES_MAX`` are
  shortened, with a WARNING naming the member, event and properties.

``DryRunSink`` computes the same plan and writes it as JSON lines, sending and
recording nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Literal

from sync.exceptions import ConfigurationError, FatalError
from sync.mailchimp.changes import MailchimpChange, from_member
from sync.mailchimp.client import (
    JOB_SIZE,
    MAX_BATCH,
    MAX_CONNECTIONS,
    Answer,
    AnswerClass,
    BatchesUnavailable,
    BatchPolling,
    Caller,
    MemberError,
    Operation,
    classify,
    iter_chunks,
    json_safe,
    run_batch_operations,
    subscriber_hash,
)
from sync.mailchimp.ledger import (
    AcceptedPush,
    AudienceProblem,
    EventIntent,
    MailchimpMember,
    MemberPushState,
    PushFailure,
    PushLedger,
    SentEvent,
    event_signature,
)
from sync.mailchimp.ledger import normalise_email as _norm
from sync.payload import EVENT_PROPERTIES_MAX, bound_properties, json_problem
from sync.records import DesiredMember, EventDue, MergeValue

log = logging.getLogger(__name__)

SUBSCRIPTION_STATUSES = frozenset({"subscribed", "pending", "unsubscribed", "transactional"})
#: The reason recorded for a member not pushed because it is archived in Mailchimp.
ARCHIVED_REASON = "archived in Mailchimp: not pushed (mailsync never brings a contact back)"


@dataclass(frozen=True)
class SinkConfig:
    #: Status given to members Mailchimp does not know yet. Existing members'
    #: status is never sent.
    status_if_new: str = "subscribed"
    max_connections: int = MAX_CONNECTIONS
    #: Members per batch-subscribe call (creation, phase 1).
    batch_size: int = MAX_BATCH
    #: Operations per ``/batches`` job (phase 2, tags, events). Larger jobs
    #: cost fewer calls; a job whose outcome is unknown leaves more events to
    #: reconcile (one ``GET …/events`` per member concerned).
    job_size: int = JOB_SIZE
    #: From this many operations on, use a ``/batches`` job instead of direct calls.
    bulk_threshold: int = 10
    use_batches: bool = True
    #: A permanent failure is retried with the same desired state after this.
    permanent_backoff: timedelta = timedelta(days=7)
    #: First back-off of a transient failure that outlived the in-run retries; doubles.
    transient_backoff: timedelta = timedelta(minutes=5)
    max_transient_backoff: timedelta = timedelta(days=1)
    #: ``is_syncing`` on tags/events: true would keep automations from firing.
    tags_is_syncing: bool = False
    events_is_syncing: bool = False
    #: An event whose outcome is unknown is looked up in Mailchimp only once
    #: this long has passed since it was POSTed, so that Mailchimp has listed it.
    event_settle: timedelta = timedelta(minutes=1)
    #: Sent with every create and update: Mailchimp enforces required merge
    #: fields on updates too, which would fail every later update of a member
    #: created before a field became required.
    skip_merge_validation: bool = True
    #: How long the audience's merge tags are trusted before being read again
    #: (one ``GET …/merge-fields``); a tag that comes back missing from an
    #: answer makes the next push read them at once.
    merge_fields_ttl: timedelta = timedelta(minutes=15)
    polling: BatchPolling = field(default_factory=BatchPolling)

    def __post_init__(self) -> None:
        if not 1 <= self.max_connections <= MAX_CONNECTIONS:
            raise ConfigurationError(
                f"sink: max_connections must be 1..{MAX_CONNECTIONS} "
                "(Mailchimp allows 10 simultaneous connections per key)"
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigurationError(f"sink: batch_size must be 1..{MAX_BATCH}")
        if self.job_size < 1:
            raise ConfigurationError("sink: job_size must be at least 1")
        if self.status_if_new not in SUBSCRIPTION_STATUSES:
            raise ConfigurationError(
                f"sink: status_if_new must be one of {sorted(SUBSCRIPTION_STATUSES)}"
            )


# -- planning -------------------------------------------------------------------


def fingerprint(member: DesiredMember) -> str:
    """A digest of the desired state (fields, tags); events are excluded
    because they are keyed separately."""
    state: dict[str, Any] = {
        "f": {k: member.merge_fields[k] for k in sorted(member.merge_fields)},
        "t": sorted(member.tags),
        "m": sorted(member.managed_tags),
    }
    if member.invalid:
        state["i"] = dict(member.invalid)
    payload = json.dumps(state, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _same(a: MergeValue, b: MergeValue) -> bool:
    # 0 == False and 1 == 1.0 in Python, not for a merge field: compare as JSON.
    return json.dumps(a) == json.dumps(b)


@dataclass(frozen=True)
class MemberPlan:
    """What the sink will send for one member."""

    email: str  # as given (Mailchimp keeps its case)
    key: str  # normalised
    fingerprint: str
    known: bool  # Mailchimp accepted something for this member before
    fields: Mapping[str, MergeValue]  # changed merge values only
    tags_add: frozenset[str]
    tags_remove: frozenset[str]
    active_tags: frozenset[str]  # the managed active set after the push
    events: tuple[EventDue, ...]  # not sent yet
    previous_failure: PushFailure | None
    #: Events of an earlier push whose outcome is unknown or that are still to
    #: send (intents), whether or not the engine still lists them.
    unsettled_events: bool = False
    #: Merge tags whose desired value cannot be sent (not JSON) → why.
    invalid: Mapping[str, str] = field(default_factory=dict)
    #: Changed values held back because the audience lacks their tag.
    withheld: Mapping[str, MergeValue] = field(default_factory=dict)

    @property
    def needs_upsert(self) -> bool:
        return bool(self.fields) or not self.known

    @property
    def needs_tags(self) -> bool:
        return bool(self.tags_add or self.tags_remove)


@dataclass(frozen=True)
class Plan:
    pushes: list[MemberPlan]
    unchanged: int
    held_back: int
    considered: int
    #: Members with changes that are archived in Mailchimp: not pushed.
    archived: list[MemberPlan] = field(default_factory=list)


def merge_duplicates(members: Iterable[DesiredMember]) -> list[DesiredMember]:
    """One record per member: several entities may push to the same email."""
    merged: dict[str, DesiredMember] = {}
    for m in members:
        key = _norm(m.email)
        before = merged.get(key)
        if before is None:
            merged[key] = m
        else:
            # The later record sets a field, whether its value is valid or not.
            merged[key] = DesiredMember(
                email=before.email,
                merge_fields={
                    **{t: v for t, v in before.merge_fields.items() if t not in m.invalid},
                    **m.merge_fields,
                },
                tags=before.tags | m.tags,
                managed_tags=before.managed_tags | m.managed_tags,
                events=before.events + m.events,
                invalid={
                    **{t: w for t, w in before.invalid.items() if t not in m.merge_fields},
                    **m.invalid,
                },
            )
    return list(merged.values())


def screen_values(member: DesiredMember) -> DesiredMember:
    """``member`` with every merge value that cannot be sent in a JSON body
    moved from ``merge_fields`` to ``invalid`` (a NaN built by hand, say)."""
    bad = {t: p for t, v in member.merge_fields.items() if (p := json_problem(v)) is not None}
    if not bad:
        return member
    return replace(
        member,
        merge_fields={t: v for t, v in member.merge_fields.items() if t not in bad},
        invalid={
            **member.invalid,
            **{t: f"member {member.email}: merge tag {t}: {p}" for t, p in bad.items()},
        },
    )


def bounded_event(event: EventDue, email: str) -> EventDue:
    """``event`` with its properties shortened to Mailchimp's limit, saying so."""
    properties, shortened = bound_properties(event.properties)
    if not shortened:
        return event
    log.warning(
        "event %s for %s: properties longer than %d characters in all; shortened: %s",
        event.name,
        email,
        EVENT_PROPERTIES_MAX,
        ", ".join(shortened),
    )
    return replace(event, properties=properties)


def follow_moves(
    members: Iterable[DesiredMember], ledger: PushLedger
) -> tuple[list[DesiredMember], dict[str, MailchimpMember]]:
    """One record per Mailchimp member, at the address Mailchimp knows it by
    (an address changed in Mailchimp takes the pushes of the old one), and
    what is known of each on Mailchimp's side."""
    desired = merge_duplicates(members)
    remote = ledger.mailchimp_members(_norm(m.email) for m in desired)
    moved = {k: r.address for k, r in remote.items() if r.address != k}
    if not moved:
        return desired, remote
    desired = merge_duplicates(
        DesiredMember(
            moved.get(_norm(m.email), m.email),
            m.merge_fields,
            m.tags,
            m.managed_tags,
            m.events,
            invalid=m.invalid,
        )
        for m in desired
    )
    return desired, ledger.mailchimp_members(_norm(m.email) for m in desired)


def plan_pushes(members: Iterable[DesiredMember], ledger: PushLedger, now: datetime) -> Plan:
    """Diff desired members against the ledger; read-only."""
    desired, remote = follow_moves(members, ledger)
    desired = [screen_values(m) for m in desired]
    keys = [_norm(m.email) for m in desired]
    states = ledger.member_states(keys)
    sent = ledger.sent_events(keys)
    unsettled = ledger.pending_events(keys)
    pushes: list[MemberPlan] = []
    archived: list[MemberPlan] = []
    unchanged = held_back = 0
    for member, key in zip(desired, keys, strict=True):
        state = states.get(key) or MemberPushState(email=key)
        known = state.pushed_at is not None
        fp = fingerprint(member)
        fields = {
            tag: value
            for tag, value in member.merge_fields.items()
            if tag not in state.fields or not _same(state.fields[tag], value)
        }
        managed = member.managed_tags | member.tags
        desired_active = member.tags
        # A member we never pushed may carry managed tags from before mailsync:
        # say "inactive" explicitly for every managed tag not desired.
        current = state.tags if known else managed - desired_active
        tags_add = frozenset(desired_active - state.tags) if known else frozenset(desired_active)
        tags_remove = frozenset((current & managed) - desired_active)
        seen = sent.get(key, set())
        events, keys_in_push = [], set()
        for event in member.events:
            if event.key not in seen and event.key not in keys_in_push:
                events.append(bounded_event(event, member.email))
                keys_in_push.add(event.key)
        plan = MemberPlan(
            email=member.email.strip(),
            key=key,
            fingerprint=fp,
            known=known,
            fields=fields,
            tags_add=tags_add,
            tags_remove=tags_remove,
            active_tags=frozenset((state.tags - managed) | desired_active),
            events=tuple(events),
            previous_failure=state.failure,
            unsettled_events=key in unsettled,
            invalid=dict(member.invalid),
        )
        failure = state.failure
        # A value that cannot be sent is reported once per desired state.
        unreported = bool(plan.invalid) and (failure is None or failure.fingerprint != fp)
        if not (
            plan.needs_upsert
            or plan.needs_tags
            or plan.events
            or plan.unsettled_events
            or unreported
        ):
            unchanged += 1
            continue
        status = remote[key].status if key in remote else None
        if (
            failure is not None
            and failure.fingerprint == fp
            and failure.next_retry_at is not None
            and now < failure.next_retry_at
            # Held back for being archived, and no longer archived: go now.
            and not (failure.reason == ARCHIVED_REASON and status != "archived")
        ):
            held_back += 1
            continue
        if status == "archived":
            archived.append(plan)
            continue
        pushes.append(plan)
    return Plan(
        pushes=pushes,
        unchanged=unchanged,
        held_back=held_back,
        considered=len(desired),
        archived=archived,
    )


# -- summary ---------------------------------------------------------------------


@dataclass
class PushSummary:
    dry_run: bool = False
    considered: int = 0
    pushed: int = 0  # members with every planned change accepted
    unchanged: int = 0
    held_back: int = 0  # failed before with the same desired state; back-off running
    #: Members not pushed because they are archived in Mailchimp (known
    #: beforehand, or from the answer to a PUT).
    archived: int = 0
    failed: int = 0
    events_sent: int = 0
    #: Events whose earlier POST had no known outcome, found in Mailchimp (so
    #: recorded sent without a new POST) or not found (so sent again).
    events_confirmed: int = 0
    events_resent: int = 0
    #: Events POSTed in this push whose outcome is unknown: left pending.
    events_unconfirmed: int = 0
    #: Events a dry run would send (``events_sent`` stays 0: nothing was sent).
    events_planned: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # API calls by answer class
    failures: list[PushFailure] = field(default_factory=list)
    #: Merge tags the audience does not have → values not sent (the tag was
    #: known missing) or dropped by Mailchimp (the answer lacked it).
    missing_merge_tags: dict[str, int] = field(default_factory=dict)
    #: Merge values not sent because they are not JSON (NaN, ±Infinity).
    invalid_values: int = 0
    #: Members (lower-cased) with values of a missing tag not kept: their
    #: contribution is not accepted whole, so the cycle must push it again.
    not_kept: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.dry_run:
            return [
                f"DRY RUN, nothing sent: {self.considered} members considered, would push "
                f"{self.pushed}, {self.unchanged} unchanged, {self.held_back} held back; "
                f"would send {self.events_planned} events"
            ]
        head = ""
        out = [
            f"{head}{self.considered} members considered, {self.pushed} pushed, "
            f"{self.unchanged} unchanged, {self.held_back} held back, {self.failed} failed, "
            f"{self.events_sent} events sent",
        ]
        if self.archived:
            out.append(f"{self.archived} members archived in Mailchimp: not pushed")
        if self.events_confirmed or self.events_resent or self.events_unconfirmed:
            out.append(
                f"events of unknown outcome: {self.events_confirmed} found in Mailchimp, "
                f"{self.events_resent} sent again, {self.events_unconfirmed} left to check"
            )
        if self.missing_merge_tags:
            out.append(
                "merge tags missing from the audience (values not kept): "
                + ", ".join(f"{t} {n}" for t, n in sorted(self.missing_merge_tags.items()))
            )
        if self.invalid_values:
            out.append(f"merge values not sent (not JSON): {self.invalid_values}")
        if self.calls:
            out.append("API calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items())))
        out.extend(
            f"  {f.email}: {'permanent' if f.permanent else 'transient'}: {f.reason}"
            for f in self.failures
        )
        return out


# -- the Mailchimp sink ------------------------------------------------------------

OpKind = Literal["upsert", "tags", "event"]


@dataclass(frozen=True)
class _Op:
    kind: OpKind
    plan: MemberPlan
    operation: Operation
    event: EventDue | None = None


class MailchimpSink:
    """Pushes plans to one audience through the official client."""

    def __init__(
        self,
        caller: Caller,
        ledger: PushLedger,
        config: SinkConfig | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.caller = caller
        self.ledger = ledger
        self.config = config or SinkConfig()
        self.clock = clock
        self.list_id = caller.list_id
        self._batches_unavailable = False
        #: Whether this push has confirmed that the audience exists (asked
        #: once, at the first "not found" about a member).
        self._audience_confirmed = False
        # The audience's merge tags as last read, and when (None: read them).
        self._audience_tags: frozenset[str] | None = None
        self._tags_read_at: datetime | None = None
        # Per push: tag -> values not sent or dropped because the audience lacks
        # it, and the members concerned.
        self._missing: Counter[str] = Counter()
        self._not_kept: set[str] = set()

    def __repr__(self) -> str:
        return f"MailchimpSink(list_id={self.list_id!r}, config={self.config!r})"

    # The pool is created per push and never holds more than max_connections
    # calls in flight: each worker makes one call at a time.
    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        now = self.clock()
        self._audience_confirmed = False
        plan = plan_pushes(members, self.ledger, now)
        calls_before = dict(self.caller.calls)
        summary = PushSummary(
            considered=plan.considered,
            unchanged=plan.unchanged,
            held_back=plan.held_back,
            archived=len(plan.archived),
        )
        if plan.archived:
            self.ledger.record_failures([self._archived(p, now) for p in plan.archived])
        failed: dict[str, PushFailure] = {}
        archived: set[str] = set()  # found archived by the answer to a PUT
        fatal: FatalError | None = None
        self._missing, self._not_kept = Counter(), set()
        try:
            pushes = self._screen_audience(plan.pushes, now)
            with ThreadPoolExecutor(
                max_workers=self.config.max_connections, thread_name_prefix="mailsync-push"
            ) as pool:
                upserted = self._phase_upsert(pool, pushes, failed, archived, now)
                self._phase_tags_events(pool, upserted, failed, summary, now)
        except FatalError as exc:
            fatal = exc
        self._report_values(plan.pushes, failed, summary, now)
        summary.failures = sorted(failed.values(), key=lambda f: f.email)
        summary.failed = len(failed)
        summary.archived += len(archived)
        summary.pushed = (
            sum(1 for p in plan.pushes if p.key not in failed and p.key not in archived)
            if fatal is None
            else 0
        )
        summary.calls = {
            k: v - calls_before.get(k, 0)
            for k, v in self.caller.calls.items()
            if v - calls_before.get(k, 0)
        }
        for line in summary.lines():
            log.info("%s", line)
        if fatal is not None:
            raise fatal
        return summary

    # -- the audience's merge fields, and values that cannot be kept -------------

    def audience_tags(self, now: datetime) -> frozenset[str] | None:
        """The audience's merge tags: cached for ``merge_fields_ttl``, read
        again at once after a tag came back missing. None when never read."""
        ttl = self.config.merge_fields_ttl
        if self._tags_read_at is not None and now - self._tags_read_at < ttl:
            return self._audience_tags
        client, list_id = self.caller.client, self.list_id
        answer = self.caller.call(
            f"GET /lists/{list_id}/merge-fields",
            lambda: client.lists.get_list_merge_fields(list_id, count=1000),
            scope="run",
        )
        if not answer.ok or not isinstance(answer.body, Mapping):
            # Pushing goes on: every answer is still compared with what was sent.
            log.warning("audience %s: merge fields not read (%s)", list_id, answer.reason)
            return self._audience_tags
        tags = frozenset(
            str(f.get("tag"))
            for f in answer.body.get("merge_fields") or []
            if isinstance(f, Mapping) and f.get("tag")
        )
        self._audience_tags, self._tags_read_at = tags, now
        back = [p.tag for p in self.ledger.audience_problems() if p.tag in tags]
        if back:
            self.ledger.clear_audience_problems(back)
            log.info("audience %s: merge tags back: %s", list_id, ", ".join(back))
        return tags

    def _screen_audience(self, plans: Sequence[MemberPlan], now: datetime) -> list[MemberPlan]:
        """The plans without values of tags the audience lacks (Mailchimp would
        drop them with a 200): held back, to be sent once the field exists."""
        if not any(p.fields for p in plans):
            return list(plans)
        tags = self.audience_tags(now)
        if tags is None:
            return list(plans)
        screened: list[MemberPlan] = []
        for p in plans:
            missing = {t: v for t, v in p.fields.items() if t not in tags}
            if missing:
                self._missing.update(missing.keys())
                self._not_kept.add(p.key)
                p = replace(
                    p, fields={t: v for t, v in p.fields.items() if t in tags}, withheld=missing
                )
            screened.append(p)
        return screened

    def _kept(self, plan: MemberPlan, returned: object) -> dict[str, MergeValue]:
        """The values of ``plan`` that Mailchimp kept, by the ``merge_fields``
        of the member it returned; a tag missing there was dropped."""
        fields = returned.get("merge_fields") if isinstance(returned, Mapping) else None
        if not isinstance(fields, Mapping):
            return dict(plan.fields)  # nothing to compare with: trust the 200
        kept = {t: v for t, v in plan.fields.items() if t in fields}
        dropped = [t for t in plan.fields if t not in fields]
        if dropped:
            self._missing.update(dropped)
            self._not_kept.add(plan.key)
            self._tags_read_at = None  # the audience changed: read it next time
        return kept

    def _report_values(
        self,
        plans: Sequence[MemberPlan],
        failed: dict[str, PushFailure],
        summary: PushSummary,
        now: datetime,
    ) -> None:
        """Record what could not be kept: values that are not JSON (this
        member's failure) and tags the audience lacks (an audience problem)."""
        failures = [
            self._failure(
                p,
                Answer(
                    AnswerClass.PERMANENT,
                    "not_json",
                    "; ".join(f"{t}: {why}" for t, why in sorted(p.invalid.items())),
                ),
                now,
                "merge values not sent",
            )
            for p in plans
            if p.invalid
        ]
        for f in failures:
            log.error("%s: %s", f.email, f.reason)
        summary.invalid_values = sum(len(p.invalid) for p in plans)
        # After the phases: a failure recorded before an acceptance would be cleared.
        self._record([], failures, failed)
        if not self._missing:
            return
        summary.missing_merge_tags = dict(self._missing)
        summary.not_kept = sorted(self._not_kept)
        problems = []
        for tag, count in sorted(self._missing.items()):
            reason = (
                f"merge tag {tag} is not in audience {self.list_id} (deleted or renamed in "
                "Mailchimp?): its values are not kept; they are sent again once the field "
                "exists (`mailsync check --fix` creates it)"
            )
            log.error("%s; %d value(s) not kept in this push", reason, count)
            problems.append(AudienceProblem(tag, reason, count, now))
        self.ledger.record_audience_problems(problems)

    def change_address(self, old: str, new: str) -> bool:
        """Change a member's address in place (``PATCH`` the member found by
        the old address's hash with the new ``email_address``), so that it
        keeps its history, tags and events. False when Mailchimp refuses (the
        new address is already in the audience, the old one is unknown): the
        new address is then pushed as a member of its own."""
        answer = self.caller.call(
            f"PATCH /lists/{self.list_id}/members/{{hash of {old}}} (new address)",
            lambda: self.caller.client.lists.update_list_member(
                self.list_id, subscriber_hash(old), {"email_address": new}
            ),
        )
        if answer.ok:
            log.info("address changed in Mailchimp: %s -> %s", old, new)
            return True
        log.warning(
            "cannot change the address %s to %s in Mailchimp: %s; %s is pushed as a member "
            "of its own and %s is left as it is",
            old,
            new,
            answer.reason,
            new,
            old,
        )
        return False

    def remove_member(self, email: str, how: str) -> bool:
        """The entity behind this member was deleted in the application and the
        operator chose ``on_delete: unsubscribe`` (``PATCH`` the status; a
        member who had unsubscribed stays so) or ``archive`` (``DELETE``, which
        archives the contact in Mailchimp: it can be brought back)."""
        if how == "archive":
            answer = self.caller.call(
                f"DELETE /lists/{self.list_id}/members/{{hash of {email}}}",
                lambda: self.caller.client.lists.delete_list_member(
                    self.list_id, subscriber_hash(email)
                ),
            )
        else:
            answer = self.caller.call(
                f"PATCH /lists/{self.list_id}/members/{{hash of {email}}} (unsubscribe)",
                lambda: self.caller.client.lists.update_list_member(
                    self.list_id, subscriber_hash(email), {"status": "unsubscribed"}
                ),
            )
        if not answer.ok:
            log.warning("on_delete %s: %s: %s", how, email, answer.reason)
        return answer.ok

    # -- failures --------------------------------------------------------------

    def _failure(self, plan: MemberPlan, answer: Answer, now: datetime, what: str) -> PushFailure:
        if answer.code == "not_found":
            self._confirm_audience()
        previous = plan.previous_failure
        attempts = (
            previous.attempts + 1
            if previous is not None and previous.fingerprint == plan.fingerprint
            else 1
        )
        permanent = answer.kind is not AnswerClass.TRANSIENT
        if permanent:
            retry_at = now + self.config.permanent_backoff
        else:
            growth = self.config.transient_backoff * (2 ** min(attempts - 1, 20))
            retry_at = now + min(growth, self.config.max_transient_backoff)
        return PushFailure(
            email=plan.key,
            reason=f"{what}: {answer.reason}",
            permanent=permanent,
            failed_at=now,
            fingerprint=plan.fingerprint,
            attempts=attempts,
            next_retry_at=retry_at,
        )

    def _confirm_audience(self) -> None:
        """A member call answered "not found": about that member, or is the
        whole audience gone (deleted in Mailchimp mid-run)? Asked once per
        push; a missing audience raises ``AudienceMissing`` (one error for
        the run, not one warning per member)."""
        if self._audience_confirmed:
            return
        self._audience_confirmed = True
        self.caller.call(
            f"GET /lists/{self.list_id}",
            lambda: self.caller.client.lists.get_list(self.list_id, fields=["id"]),
            scope="run",
        )

    def _archived(self, plan: MemberPlan, now: datetime) -> PushFailure:
        """The record of a member not pushed because it is archived: permanent,
        so it waits ``permanent_backoff`` unless it is unarchived sooner."""
        answer = Answer(AnswerClass.PERMANENT, "archived", ARCHIVED_REASON)
        return replace(self._failure(plan, answer, now, "push"), reason=ARCHIVED_REASON)

    # -- running calls ---------------------------------------------------------

    def _collect(self, futures: Sequence[Future[Any]], handle: Callable[[Any], None]) -> None:
        """Apply results as they come; on a fatal answer, cancel what has not
        started, still apply what had (so accepted events get recorded), then raise."""
        fatal: FatalError | None = None
        for future in as_completed(futures):
            try:
                handle(future.result())
            except CancelledError:
                continue
            except FatalError as exc:
                if fatal is None:
                    fatal = exc
                    for other in futures:
                        other.cancel()
        if fatal is not None:
            raise fatal

    def _direct(self, op: _Op) -> Answer:
        client, list_id = self.caller.client, self.list_id
        h = subscriber_hash(op.plan.email)
        body = json_safe(op.operation.body)
        what = f"{op.operation.method} {op.operation.path}"
        if op.kind == "upsert":
            params = dict(op.operation.params)
            return self.caller.call(
                what, lambda: client.lists.set_list_member(list_id, h, body, **params)
            )
        if op.kind == "tags":
            return self.caller.call(
                what, lambda: client.lists.update_list_member_tags(list_id, h, body)
            )
        # Not idempotent: never retried after an answer that may hide a success.
        return self.caller.call(
            what,
            lambda: client.lists.create_list_member_event(list_id, h, body),
            idempotent=False,
        )

    def _run_ops(
        self, pool: ThreadPoolExecutor, ops: Sequence[_Op], handle: Callable[[_Op, Answer], None]
    ) -> None:
        """Send operations directly (few) or as ``/batches`` jobs (many)."""
        if not ops:
            return
        if (
            not self.config.use_batches
            or self._batches_unavailable
            or len(ops) < self.config.bulk_threshold
        ):

            def direct(op: _Op) -> tuple[_Op, Answer]:
                return op, self._direct(op)

            self._collect([pool.submit(direct, op) for op in ops], lambda pair: handle(*pair))
            return
        by_id = {op.operation.operation_id: op for op in ops}

        def job(chunk: Sequence[_Op]) -> tuple[Sequence[_Op], dict[str, Answer] | None]:
            if self._batches_unavailable:
                return chunk, None
            try:
                return chunk, run_batch_operations(
                    self.caller,
                    [o.operation for o in chunk],
                    self.config.polling,
                    timeout=float(self.caller.client.api_client.timeout),
                    # A job with events must not be started twice.
                    idempotent=all(o.kind != "event" for o in chunk),
                )
            except BatchesUnavailable as exc:
                if not self._batches_unavailable:
                    log.warning("POST /batches unavailable (%s): sending one by one", exc)
                self._batches_unavailable = True
                return chunk, None

        jobs = [pool.submit(job, chunk) for chunk in iter_chunks(ops, self.config.job_size)]
        fallback: list[_Op] = []

        def apply(result: tuple[Sequence[_Op], dict[str, Answer] | None]) -> None:
            chunk, answers = result
            if answers is None:
                fallback.extend(chunk)
                return
            # Apply every non-fatal answer of the job before stopping the run.
            fatal = [(i, a) for i, a in answers.items() if a.kind is AnswerClass.FATAL]
            for op_id, answer in answers.items():
                if answer.kind is not AnswerClass.FATAL:
                    handle(by_id[op_id], answer)
            if fatal:
                op_id, answer = fatal[0]
                raise FatalError(f"Mailchimp {by_id[op_id].operation.path}: {answer.reason}")

        self._collect(jobs, apply)
        if fallback:
            self._run_ops(pool, fallback, handle)

    # -- phase 1 and 2: merge fields / existence ------------------------------------

    def _member_body(self, plan: MemberPlan) -> dict[str, Any]:
        return {
            "email_address": plan.email,
            "status_if_new": self.config.status_if_new,
            "merge_fields": dict(plan.fields),
        }

    def _phase_upsert(
        self,
        pool: ThreadPoolExecutor,
        plans: Sequence[MemberPlan],
        failed: dict[str, PushFailure],
        archived: set[str],
        now: datetime,
    ) -> list[MemberPlan]:
        """Create new members, update changed ones; returns the plans whose
        merge values are accepted (or had none to send)."""
        done = [p for p in plans if not p.needs_upsert]
        new = [p for p in plans if p.needs_upsert and not p.known]
        existing = [p for p in plans if p.needs_upsert and p.known]

        # Phase 1: create, never update.
        def create(chunk: Sequence[MemberPlan]) -> tuple[Sequence[MemberPlan], Answer]:
            body = {
                "members": [
                    {
                        "email_address": p.email,
                        "status": self.config.status_if_new,
                        "merge_fields": dict(p.fields),
                    }
                    for p in chunk
                ],
                "update_existing": False,
            }
            params = {"skip_merge_validation": "true"} if self.config.skip_merge_validation else {}
            answer = self.caller.call(
                f"POST /lists/{self.list_id} ({len(chunk)} members)",
                lambda: self.caller.client.lists.batch_list_members(
                    self.list_id, json_safe(body), **params
                ),
                scope="run",
            )
            return chunk, answer

        def apply_created(result: tuple[Sequence[MemberPlan], Answer]) -> None:
            chunk, answer = result
            accepted: list[AcceptedPush] = []
            failures: list[PushFailure] = []
            if not answer.ok or not isinstance(answer.body, Mapping):
                failures = [self._failure(p, answer, now, "create") for p in chunk]
            else:
                created = {
                    _norm(str(m.get("email_address", ""))): m
                    for key in ("new_members", "updated_members")
                    for m in answer.body.get(key) or []
                    if isinstance(m, Mapping)
                }
                errors = {
                    _norm(e.email): e
                    for e in map(MemberError.from_json, answer.body.get("errors") or [])
                }
                for p in chunk:
                    if p.key in errors:
                        verdict = self._classify_member_error(errors[p.key])
                        if verdict.code == "contact_exists":
                            existing.append(p)  # exists already: update it safely
                        else:
                            failures.append(self._failure(p, verdict, now, "create"))
                    elif p.key in created:
                        accepted.append(AcceptedPush(p.key, self._kept(p, created[p.key]), now))
                        done.append(p)
                    else:
                        # Neither created nor refused: let the safe upsert settle it.
                        existing.append(p)
            self._record(accepted, failures, failed)

        futures = [pool.submit(create, chunk) for chunk in iter_chunks(new, self.config.batch_size)]
        self._collect(futures, apply_created)

        # Phase 2: safe upsert of members that exist. Required merge fields
        # are enforced on updates too: skip that check as on creation.
        update_params = (
            {"skip_merge_validation": "true"} if self.config.skip_merge_validation else {}
        )
        ops = [
            _Op(
                "upsert",
                p,
                Operation(
                    f"upsert:{p.key}",
                    "PUT",
                    f"/lists/{self.list_id}/members/{subscriber_hash(p.email)}",
                    self._member_body(p),
                    params=update_params,
                ),
            )
            for p in existing
        ]
        accepted: list[AcceptedPush] = []
        failures: list[PushFailure] = []
        seen: list[MailchimpChange] = []
        held: list[PushFailure] = []

        def apply_upsert(op: _Op, answer: Answer) -> None:
            observed = from_member(answer.body, "push", now) if answer.ok else None
            if observed is not None and observed.status != "subscribed":
                # What the answer says of the member's status is worth keeping.
                seen.append(observed)
            if observed is not None and observed.status == "archived":
                # The PUT did not bring it back (status_if_new only); hold
                # its tags and events, and everything else until unarchived.
                archived.add(op.plan.key)
                held.append(self._archived(op.plan, now))
            elif answer.ok:
                accepted.append(AcceptedPush(op.plan.key, self._kept(op.plan, answer.body), now))
                done.append(op.plan)
            else:
                failures.append(self._failure(op.plan, answer, now, "update"))

        try:
            self._run_ops(pool, ops, apply_upsert)
        finally:
            if seen:
                self.ledger.record_mailchimp_changes(seen)
            if held:
                self.ledger.record_failures(held)
            self._record(accepted, failures, failed)
        return done

    @staticmethod
    def _classify_member_error(error: MemberError) -> Answer:
        answer = classify(error)
        if answer.kind is AnswerClass.FATAL:
            raise FatalError(f"Mailchimp refused {error.email}: {answer.reason}")
        return answer

    # -- phase 3: tags and events ------------------------------------------------------

    def _phase_tags_events(
        self,
        pool: ThreadPoolExecutor,
        plans: Sequence[MemberPlan],
        failed: dict[str, PushFailure],
        summary: PushSummary,
        now: datetime,
    ) -> None:
        accepted: list[AcceptedPush] = []
        events: list[SentEvent] = []
        settled: list[tuple[str, str]] = []  # intents to forget: known not processed
        failures: list[PushFailure] = []
        try:
            to_send = self._reconcile_events(pool, plans, events, failures, summary, now)
            ops: list[_Op] = []
            for p in plans:
                base = f"/lists/{self.list_id}/members/{subscriber_hash(p.email)}"
                if p.needs_tags:
                    tags = [{"name": t, "status": "active"} for t in sorted(p.tags_add)] + [
                        {"name": t, "status": "inactive"} for t in sorted(p.tags_remove)
                    ]
                    body = {"tags": tags, "is_syncing": self.config.tags_is_syncing}
                    ops.append(
                        _Op("tags", p, Operation(f"tags:{p.key}", "POST", f"{base}/tags", body))
                    )
                for i, event in enumerate(to_send.get(p.key, ())):
                    body = {
                        "name": event.name,
                        "properties": {k: str(v) for k, v in event.properties.items()},
                        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
                        "is_syncing": self.config.events_is_syncing,
                    }
                    ops.append(
                        _Op(
                            "event",
                            p,
                            Operation(f"event:{i}:{p.key}", "POST", f"{base}/events", body),
                            event,
                        )
                    )
            # The intents first, in one transaction: from here on a crash or a
            # lost answer leaves them behind, to be checked before any re-send.
            self.ledger.record_event_intents(
                [
                    EventIntent(
                        op.plan.key,
                        op.event.key,
                        op.event.name,
                        op.event.occurred_at,
                        now,
                        {k: str(v) for k, v in op.event.properties.items()},
                    )
                    for op in ops
                    if op.event is not None
                ]
            )

            def apply(op: _Op, answer: Answer) -> None:
                if answer.ok and op.kind == "tags":
                    accepted.append(AcceptedPush(op.plan.key, {}, now, op.plan.active_tags))
                elif answer.ok and op.event is not None:
                    events.append(_sent(op.plan.key, op.event, now))
                elif not answer.ok:
                    what = "tags"
                    if op.event is not None:
                        what = f"event {op.event.name}"
                        if answer.maybe_processed:
                            # Maybe carried out: keep the intent, check next time.
                            summary.events_unconfirmed += 1
                            what += " (outcome unknown, checked before any re-send)"
                        elif answer.kind is not AnswerClass.TRANSIENT:
                            # Refused for good: nothing to send again.
                            settled.append((op.plan.key, op.event.key))
                        # Not taken for now (429, a bare 403): the intent stays
                        # as the commitment to send it, even once it has left
                        # the window of due events.
                    failures.append(self._failure(op.plan, answer, now, what))

            self._run_ops(pool, ops, apply)
        finally:
            # Events first: an accepted event must never be sent twice.
            if events:
                self.ledger.record_events_sent(events)
            if settled:
                self.ledger.clear_event_intents(settled)
            # Those found in Mailchimp were not sent by this push.
            summary.events_sent += len(events) - summary.events_confirmed
            # A member whose earlier failure was about tags or events, and
            # whose every call went through now, must not stay "failed".
            clean = {a.email for a in accepted} | {f.email for f in failures}
            accepted.extend(
                AcceptedPush(p.key, {}, now)
                for p in plans
                if p.previous_failure is not None and p.key not in clean
            )
            self._record(accepted, failures, failed)

    def _reconcile_events(
        self,
        pool: ThreadPoolExecutor,
        plans: Sequence[MemberPlan],
        confirmed: list[SentEvent],
        failures: list[PushFailure],
        summary: PushSummary,
        now: datetime,
    ) -> dict[str, tuple[EventDue, ...]]:
        """The events to POST per member, once intents of unknown outcome are
        settled against Mailchimp's own list of the member's events.

        Members without intents send their due events. For the others, an
        intent whose event Mailchimp lists is recorded sent (``confirmed``);
        one it does not list is sent again, even if it has left the window of
        due events meanwhile: the intent was the commitment to send it.
        A member whose intents are too recent to check, or whose events could
        not be read, sends no event in this push (a transient failure brings
        it back).
        """
        pending = self.ledger.pending_events(p.key for p in plans)
        to_send = {p.key: p.events for p in plans if p.events and p.key not in pending}
        checking = [p for p in plans if p.key in pending]
        if not checking:
            return to_send
        settle_before = now - self.config.event_settle
        ready: list[MemberPlan] = []
        for p in checking:
            if max(i.attempted_at for i in pending[p.key]) > settle_before:
                failures.append(
                    self._failure(
                        p,
                        Answer(
                            AnswerClass.TRANSIENT,
                            "events_settling",
                            "events of unknown outcome sent too recently to be checked",
                        ),
                        now,
                        "events",
                    )
                )
            else:
                ready.append(p)
        if ready and self._batches_unsettled():
            # A job queued by a push that died (or whose start answer was
            # lost) may still POST these events: Mailchimp's list would not
            # show them yet. Check once every job has finished.
            for p in ready:
                failures.append(
                    self._failure(
                        p,
                        Answer(
                            AnswerClass.TRANSIENT,
                            "batches_running",
                            "events of unknown outcome wait for /batches jobs still running",
                        ),
                        now,
                        "events",
                    )
                )
            ready = []
        sent = self.ledger.sent_event_signatures(p.key for p in ready)
        futures = [pool.submit(self._member_events, p) for p in ready]
        listed: dict[str, Counter[str]] = {}

        def collect(result: tuple[MemberPlan, Answer, Counter[str]]) -> None:
            plan, answer, signatures = result
            if answer.ok:
                listed[plan.key] = signatures
            else:
                failures.append(self._failure(plan, answer, now, "events lookup"))

        self._collect(futures, collect)
        for p in ready:
            if p.key not in listed:
                continue
            # Mailchimp's copies of events already recorded sent are theirs,
            # not the unconfirmed ones', even when they look the same.
            there = listed[p.key] - Counter(sent.get(p.key, []))
            due = {e.key: e for e in p.events}
            for intent in pending[p.key]:
                signature = intent.signature
                if there[signature] > 0:
                    there[signature] -= 1
                    confirmed.append(SentEvent(p.key, intent.key, intent.name, now, signature))
                    due.pop(intent.key, None)
                    summary.events_confirmed += 1
                else:
                    summary.events_resent += 1
                    due.setdefault(
                        intent.key,
                        EventDue(intent.key, intent.name, intent.occurred_at, intent.properties),
                    )
            if due:
                to_send[p.key] = tuple(due.values())
        if confirmed:
            log.info(
                "%d events of unknown outcome found in Mailchimp: not sent again", len(confirmed)
            )
        return to_send

    def _batches_unsettled(self) -> bool:
        """Whether some ``/batches`` job of this key is not finished (or the
        list cannot be read): until then, intents cannot be settled."""
        if not self.config.use_batches or self._batches_unavailable:
            return False
        offset = 0
        while True:
            answer = self.caller.call(
                "GET /batches",
                lambda offset=offset: self.caller.client.batches.list(  # type: ignore[misc]
                    count=EVENTS_PAGE, offset=offset
                ),
            )
            if answer.code in {"not_found", "method_not_allowed"}:
                return False  # no /batches here: no job can be running
            if not answer.ok or not isinstance(answer.body, Mapping):
                return True
            jobs = [b for b in answer.body.get("batches") or [] if isinstance(b, Mapping)]
            if any(b.get("status") != "finished" for b in jobs):
                return True
            offset += len(jobs)
            total = answer.body.get("total_items")
            if not jobs or not isinstance(total, int) or offset >= total:
                return False

    def _member_events(self, plan: MemberPlan) -> tuple[MemberPlan, Answer, Counter[str]]:
        """Signatures of every event Mailchimp lists for this member (all pages)."""
        client, list_id = self.caller.client, self.list_id
        h = subscriber_hash(plan.email)
        signatures: Counter[str] = Counter()
        offset = 0
        while True:
            answer = self.caller.call(
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

    def _record(
        self,
        accepted: list[AcceptedPush],
        failures: list[PushFailure],
        failed: dict[str, PushFailure],
    ) -> None:
        # A member may both get a tag accepted and an event refused: record the
        # acceptance first, the failure after, so the failure stays visible.
        if accepted:
            self.ledger.record_accepted_many(accepted)
        if failures:
            self.ledger.record_failures(failures)
            for f in failures:
                failed[f.email] = f
                log.warning(
                    "push to %s failed (%s): %s",
                    f.email,
                    "permanent" if f.permanent else "transient",
                    f.reason,
                )
        accepted.clear()
        failures.clear()


#: Events per page when reading a member's events (Mailchimp's maximum).
EVENTS_PAGE = 1000


def _sent(email: str, event: EventDue, now: datetime) -> SentEvent:
    signature = event_signature(
        event.name, event.occurred_at, {k: str(v) for k, v in event.properties.items()}
    )
    return SentEvent(email, event.key, event.name, now, signature)


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


# -- dry run ---------------------------------------------------------------------


class DryRunSink:
    """Writes what would be sent as JSON lines; sends and records nothing."""

    def __init__(
        self,
        ledger: PushLedger,
        stream: IO[str],
        config: SinkConfig | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.stream = stream
        self.config = config or SinkConfig()
        self.clock = clock

    def remove_member(self, email: str, how: str) -> bool:
        self.stream.write(json.dumps({"dry_run": True, "on_delete": how, "email": email}) + "\n")
        return False

    def change_address(self, old: str, new: str) -> bool:
        self.stream.write(
            json.dumps({"dry_run": True, "change_address": {"from": old, "to": new}}) + "\n"
        )
        return False

    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        plan = plan_pushes(members, self.ledger, self.clock())
        self.stream.write(
            json.dumps(
                {
                    "dry_run": True,
                    "note": "DRY RUN: nothing is sent to Mailchimp "
                    "and nothing is recorded as pushed",
                }
            )
            + "\n"
        )
        for p in plan.pushes:
            line = {
                "dry_run": True,
                "email": p.email,
                "new_member": not p.known,
                "status_if_new": self.config.status_if_new if not p.known else None,
                "merge_fields": json_safe(dict(p.fields)),
                "not_sent": dict(p.invalid),
                "tags": {"add": sorted(p.tags_add), "remove": sorted(p.tags_remove)},
                "events": [
                    {
                        "key": e.key,
                        "name": e.name,
                        "occurred_at": e.occurred_at.astimezone(UTC).isoformat(),
                        "properties": dict(e.properties),
                    }
                    for e in p.events
                ],
            }
            self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        summary = PushSummary(
            dry_run=True,
            considered=plan.considered,
            unchanged=plan.unchanged,
            held_back=plan.held_back,
            pushed=len(plan.pushes),
            events_planned=sum(len(p.events) for p in plan.pushes),
        )
        for text in summary.lines():
            log.info("%s", text)
        return summary
