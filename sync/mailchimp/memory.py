"""In-memory fakes shipped with mailsync for fast tests.

``MemoryLedger`` implements ``sync.mailchimp.ledger.PushLedger`` with dictionaries. It is
held to exactly the same contract as the SQL state store: the tests in
``tests/test_state_ledger_contract.py`` run against both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sync.addresses import normalise_email
from sync.mailchimp.changes import OPTED_OUT, MailchimpChange, apply_change
from sync.mailchimp.ledger import (
    AcceptedPush,
    AudienceProblem,
    EventIntent,
    MailchimpMember,
    MemberPushState,
    PushFailure,
    RunningOperation,
    SentEvent,
)
from sync.records import MergeValue

T = TypeVar("T")


def _rekey(table: dict[str, T], old: str, new: str, taken: bool) -> None:
    """Move ``old``'s entry to ``new``; dropped when ``new`` has its own."""
    value = table.pop(old, None)
    if value is not None and not taken:
        table[new] = value


class MemoryLedger:
    """A ``PushLedger`` that forgets everything when the process ends."""

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, MergeValue]] = {}
        self._tags: dict[str, frozenset[str]] = {}
        self._pushed_at: dict[str, datetime] = {}
        self._failures: dict[str, PushFailure] = {}
        self._events: dict[str, dict[str, tuple[str, datetime, str | None]]] = {}
        self._intents: dict[str, dict[str, EventIntent]] = {}
        self._audience: dict[str, AudienceProblem] = {}
        self._mailchimp: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}
        self._change_keys: set[str] = set()
        #: job id -> operation id -> operation left running
        self._running: dict[str, dict[str, RunningOperation]] = {}

    def member_states(self, emails: Iterable[str]) -> dict[str, MemberPushState]:
        states: dict[str, MemberPushState] = {}
        for raw in emails:
            email = normalise_email(raw)
            if email not in self._pushed_at and email not in self._failures:
                continue
            states[email] = MemberPushState(
                email=email,
                fields=dict(self._fields.get(email, {})),
                tags=self._tags.get(email, frozenset()),
                pushed_at=self._pushed_at.get(email),
                failure=self._failures.get(email),
            )
        return states

    def record_accepted(
        self,
        email: str,
        fields: Mapping[str, MergeValue],
        tags: frozenset[str] | None,
        at: datetime,
    ) -> None:
        self.record_accepted_many([AcceptedPush(email=email, fields=fields, tags=tags, at=at)])

    def record_accepted_many(self, pushes: Sequence[AcceptedPush]) -> None:
        for push in pushes:
            email = normalise_email(push.email)
            self._fields.setdefault(email, {}).update(push.fields)
            if push.tags is not None:
                self._tags[email] = frozenset(push.tags)
            self._pushed_at[email] = push.at
            self._failures.pop(email, None)

    def record_failure(self, failure: PushFailure) -> None:
        self.record_failures([failure])

    def record_failures(self, failures: Sequence[PushFailure]) -> None:
        for failure in failures:
            email = normalise_email(failure.email)
            previous = self._failures.get(email)
            attempts = failure.attempts
            if previous is not None and previous.fingerprint == failure.fingerprint:
                attempts = max(attempts, previous.attempts + 1)
            self._failures[email] = replace(failure, email=email, attempts=attempts)

    def failures(self, *, permanent: bool | None = None) -> list[PushFailure]:
        return [
            f
            for _, f in sorted(self._failures.items())
            if permanent is None or f.permanent == permanent
        ]

    def sent_event_keys(self, email: str, keys: Iterable[str]) -> set[str]:
        sent = self._events.get(normalise_email(email), {})
        return {key for key in keys if key in sent}

    def sent_events(self, emails: Iterable[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for raw in emails:
            email = normalise_email(raw)
            if self._events.get(email):
                found[email] = set(self._events[email])
        return found

    def record_event_sent(self, email: str, key: str, name: str, at: datetime) -> None:
        self.record_events_sent([SentEvent(email=email, key=key, name=name, at=at)])

    def record_events_sent(self, events: Sequence[SentEvent]) -> None:
        for event in events:
            email = normalise_email(event.email)
            # First write wins, like the SQL store's unique (email, key).
            self._events.setdefault(email, {}).setdefault(
                event.key, (event.name, event.at, event.signature)
            )
            self._intents.get(email, {}).pop(event.key, None)

    def sent_event_signatures(self, emails: Iterable[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for raw in emails:
            email = normalise_email(raw)
            signatures = [s for _, _, s in self._events.get(email, {}).values() if s is not None]
            if signatures and email not in found:
                found[email] = signatures
        return found

    def record_event_intents(self, intents: Sequence[EventIntent]) -> None:
        for intent in intents:
            email = normalise_email(intent.email)
            mine = self._intents.setdefault(email, {})
            before = mine.get(intent.key)
            attempts = max(intent.attempts, before.attempts + 1 if before else 0)
            mine[intent.key] = replace(intent, email=email, attempts=attempts)

    def pending_events(self, emails: Iterable[str]) -> dict[str, list[EventIntent]]:
        found: dict[str, list[EventIntent]] = {}
        for raw in emails:
            email = normalise_email(raw)
            if self._intents.get(email):
                found[email] = sorted(
                    self._intents[email].values(), key=lambda i: (i.attempted_at, i.key)
                )
        return found

    def clear_event_intents(self, events: Iterable[tuple[str, str]]) -> None:
        for email, key in events:
            self._intents.get(normalise_email(email), {}).pop(key, None)

    def record_running(self, operations: Sequence[RunningOperation]) -> None:
        for operation in operations:
            job = self._running.setdefault(operation.batch_id, {})
            job[operation.operation_id] = replace(operation, email=normalise_email(operation.email))

    def running_operations(self) -> dict[str, list[RunningOperation]]:
        jobs = {
            batch_id: sorted(ops.values(), key=lambda o: o.operation_id)
            for batch_id, ops in self._running.items()
            if ops
        }
        order = sorted(jobs, key=lambda b: (min(o.submitted_at for o in jobs[b]), b))
        return {batch_id: jobs[batch_id] for batch_id in order}

    def running_emails(self, emails: Iterable[str] | None = None) -> set[str]:
        running = {o.email for ops in self._running.values() for o in ops.values()}
        if emails is None:
            return running
        return {e for e in (normalise_email(raw) for raw in emails) if e in running}

    def running_batches(self) -> set[str]:
        return {batch_id for batch_id, ops in self._running.items() if ops}

    def forget_running(self, batch_id: str) -> None:
        self._running.pop(batch_id, None)

    def record_audience_problems(self, problems: Sequence[AudienceProblem]) -> None:
        for problem in problems:
            before = self._audience.get(problem.tag)
            first = before.first_seen_at if before is not None else None
            self._audience[problem.tag] = replace(
                problem, first_seen_at=first or problem.first_seen_at or problem.seen_at
            )

    def clear_audience_problems(self, tags: Iterable[str]) -> None:
        for tag in tags:
            self._audience.pop(tag, None)

    def audience_problems(self) -> list[AudienceProblem]:
        return [self._audience[tag] for tag in sorted(self._audience)]

    def mailchimp_members(self, emails: Iterable[str]) -> dict[str, MailchimpMember]:
        found: dict[str, MailchimpMember] = {}
        for raw in emails:
            email = normalise_email(raw)
            address = self._aliases.get(email, email)
            row = self._mailchimp.get(address)
            if row is None and address == email:
                continue
            if row is None:
                found[email] = MailchimpMember(email, address)
                continue
            merges = json.loads(row["merges_json"]) if row["merges_json"] else {}
            found[email] = MailchimpMember(
                email,
                address,
                row["status"],
                row["reason"],
                row["status_at"],
                row["source"],
                merges,
            )
        return found

    def record_mailchimp_changes(self, changes: Sequence[MailchimpChange]) -> int:
        applied = 0
        stamp = datetime.now(UTC)
        for change in sorted(changes, key=lambda c: c.at):
            if change.key is not None:
                if change.key in self._change_keys:
                    continue
                self._change_keys.add(change.key)
            if change.kind == "upemail" and change.old_email:
                self._move(normalise_email(change.old_email), change.email)
                applied += 1
                continue
            after = apply_change(self._mailchimp.get(change.email), change, stamp)
            if after is not None:
                self._mailchimp[change.email] = after
                applied += 1
        return applied

    def mailchimp_opt_outs(self, since: datetime | None = None) -> list[MailchimpMember]:
        return [
            m
            for m in sorted(
                self.mailchimp_members(self._mailchimp).values(),
                key=lambda m: (m.status_at, m.email),
            )
            if m.status in OPTED_OUT
            and (since is None or (m.status_at is not None and m.status_at >= since))
        ]

    def _move(self, old: str, new: str) -> None:
        if old == new:
            return
        taken = new in self._pushed_at
        _rekey(self._fields, old, new, taken)
        _rekey(self._tags, old, new, taken)
        _rekey(self._pushed_at, old, new, taken)
        _rekey(self._failures, old, new, taken)
        for key, value in self._events.pop(old, {}).items():
            self._events.setdefault(new, {}).setdefault(key, value)
        for key, intent in self._intents.pop(old, {}).items():
            self._intents.setdefault(new, {}).setdefault(key, replace(intent, email=new))
        if old in self._mailchimp and new not in self._mailchimp:
            self._mailchimp[new] = {**self._mailchimp.pop(old), "email": new}
        for before, after in list(self._aliases.items()):
            if after == old:
                self._aliases[before] = new
        self._aliases.pop(new, None)
        self._aliases[old] = new
