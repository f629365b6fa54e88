"""The sink's memory: what Mailchimp has accepted, and what failed.

``PushLedger`` is the contract between the sink (which decides what to send)
and the state store (which remembers). The state store implements it on SQL;
``MemoryLedger`` in ``sync.testing`` implements it in memory for fast tests.

Checkpoint after commit: the sink calls ``record_accepted`` and
``record_event_sent`` only after Mailchimp accepted the change, so a crash
between push and record causes a harmless re-push (merge fields are
idempotent) and never a lost update. Events are the exception that needs the
idempotency key: see ``sync.sink``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sync.records import MergeValue


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


@dataclass(frozen=True)
class MemberPushState:
    """What the ledger knows of one member."""

    email: str
    fields: Mapping[str, MergeValue]
    tags: frozenset[str]
    pushed_at: datetime | None
    failure: PushFailure | None


class PushLedger(Protocol):
    def member_states(self, emails: Iterable[str]) -> dict[str, MemberPushState]:
        """Known state per lower-cased email; unknown members are absent."""
        ...

    def record_accepted(
        self,
        email: str,
        fields: Mapping[str, MergeValue],
        tags: frozenset[str],
        at: datetime,
    ) -> None:
        """Mailchimp accepted these fields/tags (merged over what was known);
        clears any failure of this member."""
        ...

    def record_failure(self, failure: PushFailure) -> None: ...

    def failures(self, *, permanent: bool | None = None) -> list[PushFailure]: ...

    def sent_event_keys(self, email: str, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` already sent to this member."""
        ...

    def record_event_sent(self, email: str, key: str, name: str, at: datetime) -> None: ...
