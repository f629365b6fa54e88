"""Plain records that cross module boundaries.

Sources produce ``EntityRecord``s, the engine reads them, the daemon turns its
results into ``DesiredMember``s, the sink pushes those. Keeping the shapes here,
with no behaviour, lets each side be written and tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

#: A fact value as the engine sees it. Instants are timezone-aware.
FactValue = bool | int | float | str | datetime | None

#: A merge-field value as Mailchimp receives it. ``""`` clears a field; a tag
#: absent from a mapping is simply not sent.
MergeValue = str | int | float


def require_aware(value: datetime, what: str) -> datetime:
    """Reject naive datetimes: every instant in mailsync carries its offset."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value


def parse_instant(value: object) -> datetime:
    """An ISO 8601 instant with an offset or ``Z``; ``ValueError`` (with a
    message fit for a marketer) otherwise. Every instant a person types goes
    through here: rules-test files, ``--at``, ``--now``."""
    example = '"2026-01-01T10:00:00Z"'
    if not isinstance(value, str):
        raise ValueError(f"expected an instant like {example}, found {value!r}")
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"expected an instant like {example}, found {value!r}") from None
    if instant.tzinfo is None:
        raise ValueError(f"instant {value!r} has no offset; add Z (UTC) or +02:00")
    return instant


@dataclass(frozen=True, order=True)
class ActionOccurrence:
    """One occurrence of an action: ``signup`` at 2026-01-01T10:00Z."""

    at: datetime
    action: str

    def __post_init__(self) -> None:
        require_aware(self.at, f"action {self.action!r} instant")


@dataclass(frozen=True)
class EntityRecord:
    """Everything the engine needs about one entity, as read from the sources."""

    entity_type: str
    id: str
    email: str | None
    facts: Mapping[str, FactValue] = field(default_factory=dict)
    actions: tuple[ActionOccurrence, ...] = ()
    #: (related entity type, id) pairs this entity's facts were computed from
    #: (a Little World user's matches); the daemon re-evaluates it when they change.
    related: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EventDue:
    """A Mailchimp event that must be sent exactly once.

    ``key`` is the idempotency key: two events with the same key (for the same
    member) are the same event, whatever cycle produced them.
    """

    key: str
    name: str
    occurred_at: datetime
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_aware(self.occurred_at, f"event {self.name!r} instant")


@dataclass(frozen=True)
class DesiredMember:
    """What one Mailchimp member should look like after the next push.

    ``merge_fields`` holds every tag the rules manage, already formatted for
    Mailchimp; the sink sends only those whose value differs from the last
    accepted push. ``tags`` are the tags that should be active; tags the rules
    manage but that are absent here should be inactive.
    """

    email: str
    merge_fields: Mapping[str, MergeValue] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    managed_tags: frozenset[str] = frozenset()
    events: tuple[EventDue, ...] = ()
    #: Merge tags whose value cannot be sent (a NaN fact, say) → why, naming
    #: the entity and fact it came from. Not in ``merge_fields``: the sink
    #: reports them as this member's failure and sends the rest.
    invalid: Mapping[str, str] = field(default_factory=dict)
