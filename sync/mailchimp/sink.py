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

Jobs left running
-----------------
Mailchimp runs an account's jobs one after the other and may take minutes,
or hours, to finish one. A push waits for a job only
``BatchPolling.deadline`` seconds (``mailchimp.batch_wait``); a job still
running then is recorded with its members' plans and left running
(``sync.mailchimp.running``). Its members are held until a later push,
``collect_running`` at the start of every cycle, collects it: the answers are
applied as this push would have applied them, then the tags and events that
follow an accepted update are sent (``sync.mailchimp.collect``).

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
Answers are classified by ``sync.mailchimp.answers.classify``. Transient answers are
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

Where each part lives
---------------------
``MailchimpSink.push`` (here) runs the phases in order:
``sync.mailchimp.push_plan`` (the diff against the ledger → what to send),
``sync.mailchimp.merge_tags`` (values of tags the audience lacks),
``sync.mailchimp.subscribe`` (phases 1 and 2), ``sync.mailchimp.tags_events``
(tags and events) with ``sync.mailchimp.event_intents`` (events exactly
once), all sending through ``sync.mailchimp.operations`` and recording what
Mailchimp accepted through ``sync.mailchimp.recording``; the result is a
``sync.mailchimp.summary.PushSummary``. ``MailchimpSink.collect_running``
collects the jobs earlier pushes left running (``sync.mailchimp.collect``,
the plans kept by ``sync.mailchimp.running``).
``sync.mailchimp.dryrun.DryRunSink`` computes the same plan and writes it as
JSON lines, sending and recording nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sync.addresses import subscriber_hash
from sync.exceptions import FatalError
from sync.mailchimp.caller import Caller
from sync.mailchimp.collect import collect_jobs
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.merge_tags import AudienceTags, MissingTags
from sync.mailchimp.operations import OpRunner
from sync.mailchimp.push_plan import MemberPlan, plan_parts
from sync.mailchimp.recording import Outcome, PushRecorder
from sync.mailchimp.sink_config import SinkConfig
from sync.mailchimp.subscribe import upsert_members
from sync.mailchimp.summary import PushSummary
from sync.mailchimp.tags_events import tags_and_events
from sync.records import DesiredMember

log = logging.getLogger(__name__)


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
        self.runner = OpRunner(caller, self.config, ledger, clock=clock)
        self.audience = AudienceTags(caller, ledger, self.config.merge_fields_ttl)
        #: What Mailchimp accepted that the ledger could not record yet.
        self.unrecorded: list[Outcome] = []

    def __repr__(self) -> str:
        return f"MailchimpSink(list_id={self.list_id!r}, config={self.config!r})"

    # The pool is created per push and never holds more than max_connections
    # calls in flight: each worker makes one call at a time.
    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        now = self.clock()
        recorder = PushRecorder(self.caller, self.ledger, self.config, now, self.unrecorded)
        # What an earlier push could not record is written first: while the
        # state store cannot take it, nothing is sent (and sent again).
        recorder.record_unrecorded()
        calls_before = dict(self.caller.calls)
        summary = PushSummary()
        # The plans of the parts planned so far.
        planned: list[MemberPlan] = []
        missing = MissingTags(self.audience)

        def parts() -> Iterator[list[MemberPlan]]:
            # Planned a part at a time: the first part's members are sent
            # while the next part is planned.
            for part in plan_parts(members, self.ledger, now):
                summary.considered += part.considered
                summary.unchanged += part.unchanged
                summary.held_back += part.held_back
                summary.held_running += part.held_running
                summary.archived += len(part.archived)
                if part.archived:
                    self.ledger.record_failures(
                        [recorder.archived_failure(p) for p in part.archived]
                    )
                planned.extend(part.pushes)
                yield missing.screen(part.pushes, now)

        fatal: FatalError | None = None
        try:
            with self._pool() as pool:
                upsert = upsert_members(pool, parts(), self.runner, recorder, missing)
                summary.running_members.extend(p.key for p in upsert.running)
                tags_and_events(pool, upsert.done, self.runner, recorder, summary)
        except FatalError as exc:
            fatal = exc
        self._report_values(planned, recorder, missing, summary)
        self._conclude(summary, recorder, [p.key for p in planned], calls_before, fatal)
        return summary

    def collect_running(self) -> PushSummary:
        """Collect the ``/batches`` jobs earlier pushes left running
        (``sync.mailchimp.collect``): what Mailchimp accepted is recorded, and
        the tags and events that follow an accepted update are sent."""
        summary = PushSummary()
        if not self.ledger.running_emails():
            return summary
        recorder = PushRecorder(
            self.caller, self.ledger, self.config, self.clock(), self.unrecorded
        )
        recorder.record_unrecorded()
        calls_before = dict(self.caller.calls)
        jobs = self.ledger.running_operations()
        members = sorted({o.email for ops in jobs.values() for o in ops})
        fatal: FatalError | None = None
        missing = MissingTags(self.audience)
        try:
            with self._pool() as pool:
                collect_jobs(pool, self.runner, recorder, missing, summary)
        except FatalError as exc:
            fatal = exc
        missing.report(summary, recorder.now)
        still = self.ledger.running_emails(members)
        self._conclude(
            summary, recorder, [m for m in members if m not in still], calls_before, fatal
        )
        return summary

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=self.config.max_connections, thread_name_prefix="mailsync-push"
        )

    def _conclude(
        self,
        summary: PushSummary,
        recorder: PushRecorder,
        members: Sequence[str],
        calls_before: dict[str, int],
        fatal: FatalError | None,
    ) -> None:
        """Count what the push did (``members``: those it sent something
        for), log it, and raise the fatal answer that stopped it, if any."""
        failed, archived = recorder.failed, recorder.archived
        running = set(summary.running_members)
        summary.failures = sorted(failed.values(), key=lambda f: f.email)
        summary.failed = len(failed)
        summary.archived += len(archived)
        summary.pushed = (
            sum(1 for m in members if m not in failed and m not in archived and m not in running)
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

    @staticmethod
    def _report_values(
        plans: Sequence[MemberPlan],
        recorder: PushRecorder,
        missing: MissingTags,
        summary: PushSummary,
    ) -> None:
        """Record what could not be kept: values that are not JSON (this
        member's failure) and tags the audience lacks (an audience problem)."""
        failures = [recorder.invalid_values(p) for p in plans if p.invalid]
        for f in failures:
            log.error("%s: %s", f.email, f.reason)
        summary.invalid_values = sum(len(p.invalid) for p in plans)
        # After the phases: a failure recorded before an acceptance would be cleared.
        recorder.record(Outcome(failures=failures))
        missing.report(summary, recorder.now)

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
