"""One Mailchimp list ("audience"): its members, merge fields and events.

An :class:`Audience` holds its members (a :class:`~sync.emulator.roster.Roster`,
which enforces the rules on statuses and addresses), its merge fields and its
event log. It is what tests inspect and script (seed members, mark
addresses, make the changes a person or a marketer makes in Mailchimp), and
what the endpoint modules work on: ``member_requests.py``,
``batch_subscribe.py``, ``tags.py`` and ``events.py``. Every Mailchimp rule
the sink relies on is enforced there or here, not in the HTTP layer, so it
can be unit-tested without sockets.

All access goes through the store's one re-entrant lock (:attr:`Audience.lock`),
because the server answers requests on many threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sync.emulator.bodies import page
from sync.emulator.events import EventLog
from sync.emulator.members import STATUSES, Clock, Event, Member, hash_of, render_member, timestamp
from sync.emulator.mergefields import MergeField, checked_values, default_fields, new_field
from sync.emulator.problems import not_found
from sync.emulator.roster import Roster


class Audience:
    """One Mailchimp list ("audience") and everything in it."""

    def __init__(self, list_id: str, name: str, clock: Clock, lock: threading.RLock) -> None:
        self.list_id = list_id
        self.name = name
        self.clock = clock
        self.lock = lock
        self.created_at = clock()
        self.merge_fields: list[MergeField] = default_fields()
        self.roster = Roster(clock)
        self.event_log = EventLog()

    # -- inspection and scripting, for tests ---------------------------------

    def member(self, email_or_hash: str) -> Member | None:
        with self.lock:
            return self.roster.get(email_or_hash)

    def members(self) -> list[Member]:
        with self.lock:
            return self.roster.all()

    def events(self, email_or_hash: str | None = None) -> list[Event]:
        """Events received, in order; for one member, or for all when None."""
        with self.lock:
            if email_or_hash is None:
                return self.event_log.all()
            return self.event_log.of(hash_of(email_or_hash))

    def received_events(self) -> list[tuple[str, Event]]:
        """``(address, event)`` for every event of the audience, in arrival order."""
        with self.lock:
            return self.event_log.received()

    def merge_field(self, tag: str) -> MergeField | None:
        with self.lock:
            return next((f for f in self.merge_fields if f.tag == tag), None)

    def seed_member(
        self,
        email: str,
        status: str = "subscribed",
        merge_fields: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> Member:
        """Put a member in place directly, bypassing every API rule."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        with self.lock:
            return self.roster.seed(email, status, dict(merge_fields or {}), tags)

    def forget(self, email: str) -> None:
        """Permanently delete ``email``: it is gone and may not be re-imported."""
        with self.lock:
            self.roster.forget(email)

    def mark_compliance(self, email: str) -> None:
        """Put ``email`` under compliance review: it can never be set to subscribed."""
        with self.lock:
            self.roster.mark_compliance(email)

    def mark_fake(self, email_or_domain: str) -> None:
        """Make Mailchimp find an address (or ``@domain``) fake or invalid."""
        with self.lock:
            self.roster.mark_fake(email_or_domain)

    # -- the API: the audience and its members ----------------------------------

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            counts = {s: 0 for s in STATUSES}
            for m in self.roster.all():
                counts[m.status] += 1
            return {
                "id": self.list_id,
                "web_id": 1,
                "name": self.name,
                "date_created": timestamp(self.created_at),
                "email_type_option": False,
                "double_optin": False,
                "visibility": "prv",
                "list_rating": 0,
                "stats": {
                    "member_count": counts["subscribed"],
                    "unsubscribe_count": counts["unsubscribed"],
                    "cleaned_count": counts["cleaned"],
                    "member_count_since_send": counts["subscribed"],
                    "merge_field_count": len(self.merge_fields),
                },
                "_links": [],
            }

    def archive_member(self, key: str) -> Member:
        """``DELETE /members/{hash}``: the contact is archived, not removed.

        It still answers ``GET`` (with ``status: archived``) and may come back
        through ``PUT`` with ``status``; bounced, pending and archived contacts
        cannot be archived (405)."""
        with self.lock:
            member = self.roster.existing(key)
            self.roster.archive(member)
            return member

    # -- changes made in Mailchimp itself (the person, the UI, bounces) -------

    def unsubscribe_by_person(self, key: str) -> Member:
        """The person used an unsubscribe link: a compliance state for the API."""
        with self.lock:
            member = self.roster.existing(key)
            self.roster.unsubscribed_by_person(member)
            return member

    def clean(self, key: str) -> Member:
        """The address bounced hard: cleaned, never to be subscribed by the API."""
        with self.lock:
            member = self.roster.existing(key)
            self.roster.cleaned(member)
            return member

    def subscribe_by_person(self, key: str) -> Member:
        """The person signed up again through a form: back to subscribed,
        archived or not (Mailchimp's help page "Archive or unarchive contacts")."""
        with self.lock:
            member = self.roster.existing(key)
            self.roster.subscribed_by_person(member)
            return member

    def change_address(self, key: str, new_email: str) -> tuple[Member, str]:
        """The person (or the marketer) changed the address: the member's id
        changes with it. Returns the member and its old address."""
        with self.lock:
            member = self.roster.existing(key)
            old = member.email_address
            self.roster.change_address(member, new_email)
            return member, old

    def edit_profile(self, key: str, merge_fields: Mapping[str, Any]) -> Member:
        """The person edited their profile (or the marketer did, in the UI)."""
        with self.lock:
            member = self.roster.existing(key)
            values = self.merge_values(
                {"merge_fields": dict(merge_fields)}, member.merge_fields, skip_required=True
            )
            self.roster.update(member, None, values)
            return member

    # -- the API: merge fields ------------------------------------------------------

    def merge_fields_json(self, query: Mapping[str, str]) -> dict[str, Any]:
        count, offset = page(query, default_count=10)
        with self.lock:
            return {
                "merge_fields": [
                    f.to_json(self.list_id) for f in self.merge_fields[offset : offset + count]
                ],
                "list_id": self.list_id,
                "total_items": len(self.merge_fields),
                "_links": [],
            }

    def merge_field_json(self, merge_id: str) -> dict[str, Any]:
        with self.lock:
            for f in self.merge_fields:
                if str(f.merge_id) == merge_id:
                    return f.to_json(self.list_id)
        raise not_found()

    def delete_merge_field(self, merge_id: str) -> None:
        """``DELETE …/merge-fields/{merge_id}``: the field and every member's
        value of it are gone (as when a marketer deletes it in Mailchimp)."""
        with self.lock:
            found = next((f for f in self.merge_fields if str(f.merge_id) == merge_id), None)
            if found is None:
                raise not_found()
            self.merge_fields.remove(found)
            for member in self.roster.all():
                member.merge_fields.pop(found.tag, None)

    def add_merge_field(self, body: Any) -> dict[str, Any]:
        with self.lock:
            created = new_field(body, self.merge_fields)
            self.merge_fields.append(created)
            return created.to_json(self.list_id)

    def merge_values(
        self, body: Mapping[str, Any], stored: dict[str, Any] | None, skip_required: bool
    ) -> dict[str, Any]:
        """The merge values of ``body`` this audience keeps (see ``checked_values``)."""
        return checked_values(
            self.merge_fields, body.get("merge_fields"), stored=stored, skip_required=skip_required
        )

    def render(self, member: Member) -> dict[str, Any]:
        return render_member(member, self.merge_fields, self.roster.tag_ids, self.list_id)
