"""The push plan: desired members diffed against the ledger → what to send.

Read-only: ``plan_pushes`` reads what Mailchimp last accepted (the
``PushLedger``) and what is known of Mailchimp's side (moved addresses,
archived members), and returns one ``MemberPlan`` per member with something
to send (changed merge values, tags to add or remove, events not sent yet).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from sync.addresses import normalise_email
from sync.mailchimp.ledger import (
    MailchimpMember,
    MemberPushState,
    PushFailure,
    PushLedger,
)
from sync.payload import EVENT_PROPERTIES_MAX, bound_properties, json_problem
from sync.records import DesiredMember, EventDue, MergeValue

log = logging.getLogger(__name__)

#: Members planned at a time (``plan_parts``): as many as a look-up takes
#: (``StoreBase.ids_per_statement``), ten batch subscribes.
PART_SIZE = 5000

#: The reason recorded for a member not pushed because it is archived in Mailchimp.
ARCHIVED_REASON = "archived in Mailchimp: not pushed (mailsync never brings a contact back)"


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
    known: bool  # Mailchimp accepted something for this member before
    fields: Mapping[str, MergeValue]  # changed merge values only
    tags_add: frozenset[str]
    tags_remove: frozenset[str]
    active_tags: frozenset[str]  # the managed active set after the push
    events: tuple[EventDue, ...]  # not sent yet
    previous_failure: PushFailure | None
    #: The desired state planned (its ``fingerprint`` is computed from it).
    desired: DesiredMember = field(repr=False, compare=False)
    #: Events of an earlier push whose outcome is unknown or that are still to
    #: send (intents), whether or not the engine still lists them.
    unsettled_events: bool = False
    #: Merge tags whose desired value cannot be sent (not JSON) → why.
    invalid: Mapping[str, str] = field(default_factory=dict)
    #: Changed values held back because the audience lacks their tag.
    withheld: Mapping[str, MergeValue] = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        """``fingerprint`` of the desired state, recorded with a failure:
        computed only when one is compared or recorded (a digest of every
        pushed member's fields cost 6 % of going live)."""
        return fingerprint(self.desired)

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
    #: Members with changes not pushed because a ``/batches`` job left
    #: running has operations of theirs: never two at once for a member.
    held_running: int = 0


def merge_duplicates(members: Iterable[DesiredMember]) -> list[DesiredMember]:
    """One record per member: several entities may push to the same email."""
    merged: dict[str, DesiredMember] = {}
    for m in members:
        key = normalise_email(m.email)
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
    remote = ledger.mailchimp_members(normalise_email(m.email) for m in desired)
    moved = {k: r.address for k, r in remote.items() if r.address != k}
    if not moved:
        return desired, remote
    desired = merge_duplicates(
        DesiredMember(
            moved.get(normalise_email(m.email), m.email),
            m.merge_fields,
            m.tags,
            m.managed_tags,
            m.events,
            invalid=m.invalid,
        )
        for m in desired
    )
    return desired, ledger.mailchimp_members(normalise_email(m.email) for m in desired)


def plan_pushes(members: Iterable[DesiredMember], ledger: PushLedger, now: datetime) -> Plan:
    """Diff desired members against the ledger; read-only."""
    parts = list(plan_parts(members, ledger, now))
    return Plan(
        pushes=[p for part in parts for p in part.pushes],
        unchanged=sum(part.unchanged for part in parts),
        held_back=sum(part.held_back for part in parts),
        considered=sum(part.considered for part in parts),
        archived=[p for part in parts for p in part.archived],
        held_running=sum(part.held_running for part in parts),
    )


def plan_parts(
    members: Iterable[DesiredMember], ledger: PushLedger, now: datetime, size: int | None = None
) -> Iterator[Plan]:
    """``plan_pushes``, ``size`` (``PART_SIZE``) members at a time: a push
    sends the first part while it plans the next. Each member is in one
    part only (moves followed and duplicates merged over all ``members``
    first)."""
    size = size or PART_SIZE
    desired, remote = follow_moves(members, ledger)
    for start in range(0, len(desired), size):
        yield _plan_part(desired[start : start + size], remote, ledger, now)


def _plan_part(
    desired: list[DesiredMember],
    remote: Mapping[str, MailchimpMember],
    ledger: PushLedger,
    now: datetime,
) -> Plan:
    desired = [screen_values(m) for m in desired]
    keys = [normalise_email(m.email) for m in desired]
    states = ledger.member_states(keys)
    sent = ledger.sent_events(keys)
    unsettled = ledger.pending_events(keys)
    running = ledger.running_emails(keys)
    pushes: list[MemberPlan] = []
    archived: list[MemberPlan] = []
    unchanged = held_back = held_running = 0
    for member, key in zip(desired, keys, strict=True):
        state = states.get(key) or MemberPushState(email=key)
        known = state.pushed_at is not None
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
            known=known,
            fields=fields,
            tags_add=tags_add,
            tags_remove=tags_remove,
            active_tags=frozenset((state.tags - managed) | desired_active),
            events=tuple(events),
            previous_failure=state.failure,
            desired=member,
            unsettled_events=key in unsettled,
            invalid=dict(member.invalid),
        )
        failure = state.failure
        # A value that cannot be sent is reported once per desired state.
        unreported = bool(plan.invalid) and (
            failure is None or failure.fingerprint != plan.fingerprint
        )
        if not (
            plan.needs_upsert
            or plan.needs_tags
            or plan.events
            or plan.unsettled_events
            or unreported
        ):
            unchanged += 1
            continue
        if key in running:
            held_running += 1
            continue
        status = remote[key].status if key in remote else None
        if (
            failure is not None
            and failure.next_retry_at is not None
            and now < failure.next_retry_at
            and failure.fingerprint == plan.fingerprint
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
        held_running=held_running,
    )
