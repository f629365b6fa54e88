"""Phases 1 and 2 of a push: merge values and existence.

1. Members the ledger has never seen accepted → batch subscribe
   (``POST /lists/{id}``) with ``update_existing: false``, which can only
   create (1 call per ``batch_size``; synchronous per-member results). Those
   answering "already a list member" join phase 2.
2. Members known to exist whose merge values changed → ``PUT … status_if_new``
   (never ``status``), through ``OpRunner`` (direct calls or ``/batches``).

``upsert_members`` returns the plans whose merge values were accepted (or had
none to send): only those get their tags and events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sync.addresses import normalise_email, subscriber_hash
from sync.exceptions import FatalError
from sync.mailchimp.answers import Answer, AnswerClass, MemberError, classify
from sync.mailchimp.batches import RUNNING, Operation
from sync.mailchimp.caller import json_safe
from sync.mailchimp.changes import MailchimpChange, from_member
from sync.mailchimp.client import batch_subscribe
from sync.mailchimp.ledger import AcceptedPush, PushFailure
from sync.mailchimp.merge_tags import MissingTags
from sync.mailchimp.operations import MemberOp, OpRunner, collect
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.recording import Outcome, PushRecorder

#: What ``_Phases.created`` reads of a batch subscribe's answer, asked for as a
#: partial answer (``fields``): each member's address and the merge values it
#: kept, and the refusals. Without it, every new member comes back whole.
SUBSCRIBE_FIELDS = (
    "new_members.email_address,new_members.merge_fields,"
    "updated_members.email_address,updated_members.merge_fields,"
    "errors"
)
#: What an update's answer is read for (a partial answer, ``fields``): the
#: member's status (``changes.from_member``) and the merge values it kept.
MEMBER_FIELDS = "email_address,status,last_changed,unsubscribe_reason,merge_fields"


def member_body(plan: MemberPlan, status_key: str, status: str) -> dict[str, Any]:
    """A member as sent to Mailchimp: its address, a status (``status`` on
    creation, ``status_if_new`` on an update) and its changed merge values."""
    return {"email_address": plan.email, status_key: status, "merge_fields": dict(plan.fields)}


@dataclass
class Upsert:
    """Where each member stands in phases 1 and 2."""

    #: Merge values accepted, or none to send: go on to tags and events.
    done: list[MemberPlan] = field(default_factory=list)
    #: Known to exist, or found to: safe upsert in phase 2.
    existing: list[MemberPlan] = field(default_factory=list)
    #: Updates in a ``/batches`` job left running: their tags and events
    #: follow once a later push collects it (``sync.mailchimp.collect``).
    running: list[MemberPlan] = field(default_factory=list)


class _Phases:
    """Phases 1 and 2 of one push."""

    def __init__(
        self,
        runner: OpRunner,
        recorder: PushRecorder,
        missing: MissingTags,
    ) -> None:
        self.runner = runner
        self.caller = runner.caller
        self.config = runner.config
        self.list_id = runner.list_id
        self.recorder = recorder
        self.missing = missing

    # Phase 1: create, never update.
    def create(self, chunk: Sequence[MemberPlan]) -> tuple[Sequence[MemberPlan], Answer]:
        body = {
            "members": [member_body(p, "status", self.config.status_if_new) for p in chunk],
            "update_existing": False,
        }
        query = {"skip_merge_validation": "true"} if self.config.skip_merge_validation else {}
        query["fields"] = SUBSCRIBE_FIELDS
        answer = self.caller.call(
            f"POST /lists/{self.list_id} ({len(chunk)} members)",
            lambda: batch_subscribe(self.caller.client, self.list_id, json_safe(body), query),
            scope="run",
        )
        return chunk, answer

    def created(self, result: tuple[Sequence[MemberPlan], Answer], upsert: Upsert) -> None:
        """Record the answer to one batch subscribe; sort its members."""
        chunk, answer = result
        now = self.recorder.now
        outcome = Outcome()
        if not answer.ok or not isinstance(answer.body, Mapping):
            outcome.failures = [self.recorder.failure(p, answer, "create") for p in chunk]
        else:
            created = {
                normalise_email(str(m.get("email_address", ""))): m
                for key in ("new_members", "updated_members")
                for m in answer.body.get(key) or []
                if isinstance(m, Mapping)
            }
            errors = {
                normalise_email(e.email): e
                for e in map(MemberError.from_json, answer.body.get("errors") or [])
            }
            for p in chunk:
                if p.key in errors:
                    verdict = _classify_member_error(errors[p.key])
                    if verdict.code == "contact_exists":
                        upsert.existing.append(p)  # exists already: update it safely
                    else:
                        outcome.failures.append(self.recorder.failure(p, verdict, "create"))
                elif p.key in created:
                    kept = self.missing.kept(p, created[p.key])
                    outcome.accepted.append(AcceptedPush(p.key, kept, now))
                    upsert.done.append(p)
                else:
                    # Neither created nor refused: let the safe upsert settle it.
                    upsert.existing.append(p)
        self.recorder.record(outcome)

    def update(self, pool: ThreadPoolExecutor, upsert: Upsert) -> None:
        """Phase 2: safe upsert of the members that exist. Required merge fields
        are enforced on updates too: skip that check as on creation."""
        update_params = (
            {"skip_merge_validation": "true"} if self.config.skip_merge_validation else {}
        )
        # In a /batches job the query is the operation's params.
        update_params["fields"] = MEMBER_FIELDS
        ops = [
            MemberOp(
                "upsert",
                p,
                Operation(
                    f"upsert:{p.key}",
                    "PUT",
                    f"/lists/{self.list_id}/members/{subscriber_hash(p.email)}",
                    member_body(p, "status_if_new", self.config.status_if_new),
                    params=update_params,
                ),
            )
            for p in upsert.existing
        ]
        updated = UpdateAnswers(self.recorder, self.missing, upsert)
        try:
            self.runner.run(pool, ops, updated.apply)
        finally:
            updated.record()


class UpdateAnswers:
    """The answers to the ``PUT``s of phase 2, recorded once all are in."""

    def __init__(self, recorder: PushRecorder, missing: MissingTags, upsert: Upsert) -> None:
        self.recorder = recorder
        self.missing = missing
        self.upsert = upsert
        self.outcome = Outcome()
        #: Statuses other than subscribed that answers reported.
        self.seen: list[MailchimpChange] = []
        #: Members found archived: held until unarchived.
        self.held: list[PushFailure] = []

    def apply(self, op: MemberOp, answer: Answer) -> None:
        now = self.recorder.now
        if answer.code == RUNNING:
            self.upsert.running.append(op.plan)
            return
        observed = from_member(answer.body, "push", now) if answer.ok else None
        if observed is not None and observed.status != "subscribed":
            # What the answer says of the member's status is worth keeping.
            self.seen.append(observed)
        if observed is not None and observed.status == "archived":
            # The PUT did not bring it back (status_if_new only); hold
            # its tags and events, and everything else until unarchived.
            self.recorder.archived.add(op.plan.key)
            self.held.append(self.recorder.archived_failure(op.plan))
        elif answer.ok:
            kept = self.missing.kept(op.plan, answer.body)
            self.outcome.accepted.append(AcceptedPush(op.plan.key, kept, now))
            self.upsert.done.append(op.plan)
        else:
            self.outcome.failures.append(self.recorder.failure(op.plan, answer, "update"))

    def record(self) -> None:
        ledger = self.recorder.ledger
        if self.seen:
            ledger.record_mailchimp_changes(self.seen)
        if self.held:
            ledger.record_failures(self.held)
        self.recorder.record(self.outcome)


def _classify_member_error(error: MemberError) -> Answer:
    answer = classify(error)
    if answer.kind is AnswerClass.FATAL:
        raise FatalError(f"Mailchimp refused {error.email}: {answer.reason}")
    return answer


def upsert_members(
    pool: ThreadPoolExecutor,
    parts: Iterable[Sequence[MemberPlan]],
    runner: OpRunner,
    recorder: PushRecorder,
    missing: MissingTags,
) -> Upsert:
    """Create new members, update changed ones; ``done``: the plans whose
    merge values are accepted (or had none to send), ``running``: those
    whose update is in a job left running.

    ``parts`` may be planned as they are read: the batch subscribes of a
    part are on their way while the next is planned. Only full batches
    (``batch_size`` members) go before the last part is read, so that the
    parts cost no more calls than one plan would. Whatever is sent is
    recorded, even when planning a later part fails."""
    phases = _Phases(runner, recorder, missing)
    upsert = Upsert()
    size = runner.config.batch_size
    futures: list[Future[tuple[Sequence[MemberPlan], Answer]]] = []
    new: list[MemberPlan] = []
    try:
        for plans in parts:
            upsert.done.extend(p for p in plans if not p.needs_upsert)
            upsert.existing.extend(p for p in plans if p.needs_upsert and p.known)
            new.extend(p for p in plans if p.needs_upsert and not p.known)
            full = len(new) - len(new) % size
            for start in range(0, full, size):
                futures.append(pool.submit(phases.create, new[start : start + size]))
            del new[:full]
        if new:
            futures.append(pool.submit(phases.create, new))
    finally:
        collect(futures, lambda result: phases.created(result, upsert))
    phases.update(pool, upsert)
    return upsert
