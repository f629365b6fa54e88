"""Member events: ``GET``/``POST …/members/{hash}/events``, and the event log.

Each member keeps its own events; the audience's :class:`EventLog` keeps
every event of every member in arrival order, for tests to read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sync.emulator.bodies import is_instant, json_object, page
from sync.emulator.members import Event, Member
from sync.emulator.problems import FieldError, invalid, properties_too_long

if TYPE_CHECKING:
    from sync.emulator.audience import Audience

EVENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{2,30}")
# Keys and values of an event's properties together, in characters. No public
# source states a limit (a Mailchimp staff member knew of none,
# mailchimp/Mailchimp-SDK-iOS#70); the project's spec assumes about 1,000 and
# the emulator enforces exactly that, so the sink is tested against it.
EVENT_PROPERTIES_MAX = 1000


def properties_size(properties: Mapping[str, Any]) -> int:
    """Characters of an event's properties: every key and value together."""
    return sum(len(str(k)) + len(str(v)) for k, v in properties.items())


def checked_event(body: Any) -> tuple[str, dict[str, str], str | None, bool]:
    """A ``POST …/members/{hash}/events`` body, checked: the event's
    ``name``, ``properties``, ``occurred_at`` and ``is_syncing``."""
    body = json_object(body)
    problems: list[FieldError] = []
    name = body.get("name")
    if not isinstance(name, str) or not EVENT_NAME_PATTERN.fullmatch(name):
        problems.append(
            FieldError(
                "name",
                "Event names must be 2 to 30 characters long and contain only "
                "letters, numbers, underscores and dashes.",
            )
        )
    properties = body.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        problems.append(FieldError("properties", "Schema describes object"))
    else:
        for pname, value in properties.items():
            if not isinstance(value, str):
                problems.append(FieldError(f"properties.{pname}", "Schema describes string"))
        size = properties_size(properties)
        if size > EVENT_PROPERTIES_MAX:
            problems.append(FieldError("properties", properties_too_long(size)))
    occurred_at = body.get("occurred_at")
    if occurred_at is not None and not is_instant(occurred_at):
        problems.append(FieldError("occurred_at", "This value should be a valid ISO 8601 date"))
    is_syncing = body.get("is_syncing", False)
    if not isinstance(is_syncing, bool):
        problems.append(FieldError("is_syncing", "Schema describes boolean"))
    if problems:
        raise invalid(errors=problems)
    return str(name), dict(properties), occurred_at, is_syncing


def add_event(audience: Audience, key: str, body: Any) -> None:
    """``POST …/members/{hash}/events``: kept in arrival order, duplicates too."""
    fields = checked_event(body)
    with audience.lock:
        member = audience.roster.existing(key)
        audience.event_log.add(member, Event(*fields, audience.clock()))


def events_json(audience: Audience, key: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET …/members/{hash}/events``."""
    count, offset = page(query, default_count=10)
    with audience.lock:
        events = audience.roster.existing(key).events
        return {
            "events": [e.to_json() for e in events[offset : offset + count]],
            "total_items": len(events),
            "_links": [],
        }


class EventLog:
    """Every event of an audience, in arrival order, with whom it was for."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, Event]] = []  # (hash, address, event)

    def add(self, member: Member, event: Event) -> None:
        member.events.append(event)
        self._events.append((member.id, member.email_address, event))

    def all(self) -> list[Event]:
        return [event for _, _, event in self._events]

    def of(self, subscriber_hash: str) -> list[Event]:
        return [event for h, _, event in self._events if h == subscriber_hash]

    def received(self) -> list[tuple[str, Event]]:
        """``(address, event)`` for every event, in arrival order."""
        return [(email, event) for _, email, event in self._events]
