"""From evaluations to what each Mailchimp member should look like.

The engine speaks in typed values (``None``, ``True``, instants); Mailchimp
speaks in merge-field strings and numbers. This module formats values for
Mailchimp, scopes event idempotency keys to the entity that produced them
(several entities can feed one member: every Rallia participant row of a
user feeds that user's member), and merges the contributions of all entities
of one member into a single ``DesiredMember``.

Formatting rules, chosen so that a value never silently disappears:
``None`` → ``""`` (clears the field); booleans → ``"true"``/``"false"``;
instants → ``YYYY-MM-DD`` for ``date`` fields, ISO 8601 UTC otherwise;
numbers stay numbers for ``number`` fields (``0`` is sent, not dropped).
A value that is not JSON (a NaN or infinite number fact) is not sent at all:
it is kept aside, naming the entity and fact, for the sink to report as that
member's failure while the member's other fields and the other members go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.addresses import normalise_email
from sync.evaluate.engine import Evaluation
from sync.payload import json_problem
from sync.records import DesiredMember, EventDue, FactValue, MergeValue
from sync.rules.model import Entity


def mailchimp_value(value: FactValue, field_type: str) -> MergeValue:
    """Format one merge-field value for Mailchimp."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        if field_type == "date":
            return value.strftime("%Y-%m-%d")
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, int | float):
        return value if field_type == "number" else str(value)
    return value


def scoped_events(entity: Entity, entity_id: str, events: Iterable[EventDue]) -> list[EventDue]:
    """Prefix each idempotency key with the entity, so that the same event of
    two entities of one member (two matches of a player) stays two events."""
    return [
        EventDue(f"{entity.name}:{entity_id}:{e.key}", e.name, e.occurred_at, e.properties)
        for e in events
    ]


def merge_values(entity: Entity, values: Mapping[str, FactValue]) -> dict[str, MergeValue]:
    """The merge-field values ``entity`` wants for its member, by merge tag,
    formatted for Mailchimp (a fact without a value is the empty string)."""
    return {f.tag: mailchimp_value(values.get(f.tag), f.type) for f in entity.merge_fields}


@dataclass
class MemberBuilder:
    """Accumulates every entity's contribution to one member."""

    email: str
    merge_fields: dict[str, MergeValue] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    managed_tags: set[str] = field(default_factory=set)
    events: list[EventDue] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)

    def add(self, entity: Entity, entity_id: str, evaluation: Evaluation) -> None:
        self.add_values(
            entity, entity_id, evaluation.merge_fields, evaluation.tags, evaluation.events
        )

    def add_values(
        self,
        entity: Entity,
        entity_id: str,
        merge_fields: Mapping[str, FactValue],
        tags: frozenset[str],
        events: Iterable[EventDue],
    ) -> None:
        """One entity's contribution, from the engine or the compiled SQL."""
        wanted = merge_values(entity, merge_fields)
        for merge_field in entity.merge_fields:
            tag = merge_field.tag
            value = wanted[tag]
            problem = json_problem(value)
            # The last entity read sets the field, valid or not.
            if problem is None:
                self.merge_fields[tag] = value
                self.invalid.pop(tag, None)
            else:
                self.merge_fields.pop(tag, None)
                self.invalid[tag] = f"{entity.name} {entity_id}: {merge_field.source} is {problem}"
        self.tags |= tags
        self.managed_tags |= entity.managed_tags
        self.events.extend(scoped_events(entity, entity_id, events))

    def build(self) -> DesiredMember:
        return DesiredMember(
            email=self.email,
            merge_fields=dict(self.merge_fields),
            tags=frozenset(self.tags),
            managed_tags=frozenset(self.managed_tags),
            events=tuple(sorted(self.events, key=lambda e: (e.occurred_at, e.key))),
            invalid=dict(self.invalid),
        )


def desired_member(
    entity: Entity, entity_id: str, email: str, evaluation: Evaluation
) -> DesiredMember:
    """The member one entity alone asks for."""
    builder = MemberBuilder(normalise_email(email))
    builder.add(entity, entity_id, evaluation)
    return builder.build()
