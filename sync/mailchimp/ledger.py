"""The sink's memory: what Mailchimp has accepted, and what failed.

``PushLedger`` is the contract between the sink (which decides what to send)
and the state store (which remembers). ``sync.state.store.StateStore`` implements it
on SQL; ``sync.mailchimp.memory.MemoryLedger`` implements it in memory for fast tests;
``tests/test_state_ledger_contract.py`` runs the same tests on both.

Checkpoint after commit: the sink calls ``record_accepted`` and
``record_events_sent`` only after Mailchimp accepted the change, so a crash
between push and record causes a harmless re-push (merge fields are
idempotent) and never a lost update. Events are not idempotent on Mailchimp's
side, hence the idempotency keys, and, for events, one step more: an *intent*
(``EventIntent``) is recorded BEFORE the POST and cleared when the answer is
known, so that an event whose answer was lost (a crash, a timeout) is looked
up in Mailchimp before it is ever sent again. See ``sync.mailchimp.sink``.

Every method taking several items writes them in one transaction (bulk), so the
sink can apply the answers of a 500-member call with a few statements. Emails
are compared lower-cased everywhere (Mailchimp's subscriber hash is the MD5 of
the lower-cased address).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sync.records import MergeValue, require_aware

if TYPE_CHECKING:
    from sync.mailchimp.changes import MailchimpChange


@dataclass(frozen=True)
class PushFailure:
    """A push Mailchimp refused for one member."""

    email: str
    reason: str
    permanent: bool
    failed_at: datetime
    #: Fingerprint of the desired state that failed; a permanent failure is
    #: retried only when the member's desired state changes (or after back-off).
    fingerprint: str
    attempts: int = 1
    #: Earliest instant the sink should try again with the same desired state.
    next_retry_at: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(self.failed_at, "failure instant")
        if self.next_retry_at is not None:
            require_aware(self.next_retry_at, "failure retry instant")


@dataclass(frozen=True)
class AcceptedPush:
    """Mailchimp accepted these values for one member.

    ``fields`` are merged over what was known (tags not sent keep their old
    accepted value). ``tags``, when not None, replaces the set of managed tags
    known to be active.
    """

    email: str
    fields: Mapping[str, MergeValue]
    at: datetime
    tags: frozenset[str] | None = None

    def __post_init__(self) -> None:
        require_aware(self.at, "accepted instant")


def event_signature(name: str, occurred_at: datetime, properties: Mapping[str, str]) -> str:
    """What tells one event from another in Mailchimp's list of a member's
    events (which knows nothing of our idempotency keys): its name, its
    instant to the second in UTC (Mailchimp keeps no fractions), its properties."""
    instant = require_aware(occurred_at, "event instant").astimezone(UTC).replace(microsecond=0)
    payload = json.dumps(
        [name, instant.isoformat(), sorted((str(k), str(v)) for k, v in properties.items())]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class SentEvent:
    """An event Mailchimp accepted; ``key`` is its idempotency key.

    ``signature`` (``event_signature``) lets a later reconciliation tell this
    event's copy in Mailchimp from an unconfirmed one that looks the same."""

    email: str
    key: str
    name: str
    at: datetime
    signature: str | None = None

    def __post_init__(self) -> None:
        require_aware(self.at, "event sent instant")


@dataclass(frozen=True)
class EventIntent:
    """An event about to be POSTed, or POSTed without a known outcome.

    Recorded before the call; cleared when Mailchimp's answer says accepted
    (the event is then sent) or not processed. One still here after the push
    (the answer was lost, or the process died) is *unconfirmed*: the sink
    looks for it in Mailchimp before sending it again."""

    email: str
    key: str
    name: str
    occurred_at: datetime
    #: When the last POST of it was attempted.
    attempted_at: datetime
    properties: Mapping[str, str] = field(default_factory=dict)
    #: How many POSTs of this event were attempted without a known outcome.
    attempts: int = 1

    def __post_init__(self) -> None:
        require_aware(self.occurred_at, "event instant")
        require_aware(self.attempted_at, "event attempt instant")

    @property
    def signature(self) -> str:
        return event_signature(self.name, self.occurred_at, self.properties)


@dataclass(frozen=True)
class MemberPushState:
    """What the ledger knows of one member."""

    email: str
    fields: Mapping[str, MergeValue] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    #: When Mailchimp last accepted something for this member; None when the
    #: member was never accepted (only a failure is known).
    pushed_at: datetime | None = None
    failure: PushFailure | None = None


@dataclass(frozen=True)
class AudienceProblem:
    """A merge tag the rules push that the audience does not have.

    Mailchimp drops such a value with a 200 answer, so the sink finds out by
    reading the audience's merge fields and by comparing what came back with
    what it sent; the problem stays recorded until the tag exists again."""

    tag: str
    reason: str
    #: Values held back or dropped for this tag in the push that saw it last.
    members: int
    seen_at: datetime
    #: When it was first seen (the store keeps the earliest); None: ``seen_at``.
    first_seen_at: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(self.seen_at, "audience problem instant")


@dataclass(frozen=True)
class MailchimpMember:
    """What is known of a member's state on Mailchimp's side (from webhooks,
    the reconciliation poll and push answers; see ``sync.mailchimp.changes``)."""

    email: str  # the key asked about
    #: Where the member lives in Mailchimp now: ``email``, unless the address
    #: was changed in Mailchimp (``upemail``).
    address: str
    #: Mailchimp's status (``archived``, ``unsubscribed`` ...); None: not known.
    status: str | None = None
    reason: str = ""
    #: When the status was last set to this value, as Mailchimp says.
    status_at: datetime | None = None
    source: str = ""
    #: Merge values last edited on Mailchimp's side (a ``profile`` webhook).
    merges: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningOperation:
    """One operation of a ``/batches`` job that a push left running: the
    job's id, the operation's, the member, what kind of operation it is
    (``upsert``, ``tags``, ``event``) and the member's plan as JSON
    (``sync.mailchimp.running``), so that a later push can apply the answer
    as the push that sent it would have."""

    batch_id: str
    operation_id: str
    email: str
    kind: str
    plan_json: str
    submitted_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.submitted_at, "batch submission instant")


class PushLedger(Protocol):
    """What the sink needs from a store. All emails are normalised by the store."""

    def member_states(self, emails: Iterable[str]) -> dict[str, MemberPushState]:
        """Known state per lower-cased email; unknown members are absent."""
        ...

    def record_accepted(
        self,
        email: str,
        fields: Mapping[str, MergeValue],
        tags: frozenset[str] | None,
        at: datetime,
    ) -> None:
        """Mailchimp accepted these fields/tags; clears any failure of this member."""
        ...

    def record_accepted_many(self, pushes: Sequence[AcceptedPush]) -> None:
        """``record_accepted`` for many members, in one transaction."""
        ...

    def record_failure(self, failure: PushFailure) -> None:
        """Remember a refusal; ``attempts`` counts consecutive failures with the
        same fingerprint (the store increments it, the given value is a floor)."""
        ...

    def record_failures(self, failures: Sequence[PushFailure]) -> None:
        """``record_failure`` for many members, in one transaction."""
        ...

    def failures(self, *, permanent: bool | None = None) -> list[PushFailure]:
        """Failures currently recorded, optionally only (non-)permanent ones, by email."""
        ...

    def sent_event_keys(self, email: str, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` already sent to this member."""
        ...

    def sent_events(self, emails: Iterable[str]) -> dict[str, set[str]]:
        """Idempotency keys already sent, per lower-cased email (absent: none)."""
        ...

    def record_event_sent(self, email: str, key: str, name: str, at: datetime) -> None:
        """Mailchimp accepted this event; sending the same key again is a no-op."""
        ...

    def record_events_sent(self, events: Sequence[SentEvent]) -> None:
        """``record_event_sent`` for many events, in one transaction; clears
        their intents in the same transaction."""
        ...

    def sent_event_signatures(self, emails: Iterable[str]) -> dict[str, list[str]]:
        """Signatures of the events recorded sent (those recorded with one),
        per lower-cased email; a signature appears once per event."""
        ...

    def record_event_intents(self, intents: Sequence[EventIntent]) -> None:
        """About to POST these events: remember them first, in one transaction.
        An intent already there takes the new ``attempted_at`` and counts one
        more attempt."""
        ...

    def pending_events(self, emails: Iterable[str]) -> dict[str, list[EventIntent]]:
        """Intents still recorded, per lower-cased email (absent: none), oldest first."""
        ...

    def clear_event_intents(self, events: Iterable[tuple[str, str]]) -> None:
        """Forget the intents of these (email, key): Mailchimp said it did not
        take them, or they are no longer due and it does not have them."""
        ...

    def record_audience_problems(self, problems: Sequence[AudienceProblem]) -> None:
        """Remember merge tags missing from the audience (one row per tag: the
        latest reason and count, the earliest ``first_seen_at``)."""
        ...

    def clear_audience_problems(self, tags: Iterable[str]) -> None:
        """These tags exist in the audience again."""
        ...

    def audience_problems(self) -> list[AudienceProblem]:
        """Problems recorded, by tag."""
        ...

    def mailchimp_members(self, emails: Iterable[str]) -> dict[str, MailchimpMember]:
        """Mailchimp-side knowledge per lower-cased email (absent: nothing
        known, the address has not moved)."""
        ...

    def record_mailchimp_changes(self, changes: Sequence[MailchimpChange]) -> int:
        """Apply changes made on Mailchimp's side, in one transaction; a webhook
        already applied (same key) and a change older than what is known are
        skipped. An address change moves the member's ledger entry. Returns
        how many changes were applied."""
        ...

    def record_running(self, operations: Sequence[RunningOperation]) -> None:
        """Operations of ``/batches`` jobs left running, in one transaction."""
        ...

    def running_operations(self) -> dict[str, list[RunningOperation]]:
        """The operations of the jobs left running, by job id (oldest job first)."""
        ...

    def running_emails(self, emails: Iterable[str] | None = None) -> set[str]:
        """Which of these members (every one when None) have an operation in a
        job left running."""
        ...

    def running_batches(self) -> set[str]:
        """The ids of the jobs left running."""
        ...

    def forget_running(self, batch_id: str) -> None:
        """The job is collected (or given up): its operations are forgotten."""
        ...
