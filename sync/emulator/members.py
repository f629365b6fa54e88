"""One audience member: its id, its statuses, and how Mailchimp shows it.

``Member`` and ``Event`` are what the store keeps; :func:`render_member` is
the member as the API answers it. The statuses and the address checks are
Mailchimp's vocabulary, shared by every part of the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.addresses import subscriber_hash
from sync.emulator.mergefields import MergeField

Clock = Callable[[], datetime]
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
# What a request may set: the API reference's enum for `status` / `status_if_new`
# has no "archived" (a member is archived by DELETE, and only GET shows it).
REQUEST_STATUSES = STATUSES[:-1]
# Members in these statuses may not be set back to "subscribed" through the API
# (except an "unsubscribed" set through the API itself: see ``Roster.check_may_subscribe``).
COMPLIANCE_STATUSES = ("unsubscribed", "cleaned")
# DELETE (archive) answers 405 for these: "Can not archive a contact that is
# bounced, pending or archived" (amro/gibbon#320).
NOT_ARCHIVABLE = ("cleaned", "pending", "archived")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
HASH_PATTERN = re.compile(r"[0-9a-f]{32}")


def hash_of(key: str) -> str:
    # The API accepts the hash, or the address itself, in the path.
    return key.lower() if HASH_PATTERN.fullmatch(key.lower()) else subscriber_hash(key)


def timestamp(moment: datetime) -> str:
    """Mailchimp's timestamp format: seconds, explicit ``+00:00``. (The same
    text as ``strftime("%Y-%m-%dT%H:%M:%S+00:00")``, in a fifth of the time:
    answering a batch subscribe, the emulator formats three per member.)"""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One event as received, kept in arrival order (duplicates too)."""

    name: str
    properties: dict[str, str]
    occurred_at: str | None
    is_syncing: bool
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "properties": dict(self.properties),
            "occurred_at": self.occurred_at or timestamp(self.received_at),
            "is_syncing": self.is_syncing,
            "received_at": timestamp(self.received_at),
        }


@dataclass
class Member:
    """One audience member; ``tags`` maps each active tag to when it was added."""

    email_address: str
    status: str
    merge_fields: dict[str, Any]
    timestamp_signup: datetime
    last_changed: datetime
    web_id: int
    tags: dict[str, datetime] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    email_type: str = "html"
    language: str = ""
    vip: bool = False

    @property
    def id(self) -> str:
        return subscriber_hash(self.email_address)


def render_member(
    member: Member, fields: Sequence[MergeField], tag_ids: Mapping[str, int], list_id: str
) -> dict[str, Any]:
    """The member as the API answers it: every field of the audience, its tags."""
    merge_fields = {f.tag: member.merge_fields.get(f.tag, "") for f in fields}
    member_id = member.id  # a digest of the address: computed once
    return {
        "id": member_id,
        "email_address": member.email_address,
        "unique_email_id": member_id[:10],
        "contact_id": member_id,
        "full_name": " ".join(str(merge_fields.get(t) or "") for t in ("FNAME", "LNAME")).strip(),
        "web_id": member.web_id,
        "email_type": member.email_type,
        "status": member.status,
        "merge_fields": merge_fields,
        "interests": {},
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
        "ip_signup": "",
        "timestamp_signup": (signup := timestamp(member.timestamp_signup)),
        "ip_opt": "",
        "timestamp_opt": signup,
        "member_rating": 2,
        "last_changed": timestamp(member.last_changed),
        "language": member.language,
        "vip": member.vip,
        "email_client": "",
        "location": {
            "latitude": 0,
            "longitude": 0,
            "gmtoff": 0,
            "dstoff": 0,
            "country_code": "",
            "timezone": "",
        },
        "source": "API - Generic",
        "tags_count": len(member.tags),
        "tags": [{"id": tag_ids[n], "name": n} for n in member.tags],
        "list_id": list_id,
        "_links": [],
    }
