"""The emulator's audiences: members, merge fields, tags and events.

This is the state the HTTP routes read and change, and the state tests
inspect. Every Mailchimp rule the sink relies on is enforced here, not in the
HTTP layer, so it can be unit-tested without sockets: ``status_if_new``
versus ``status``, compliance-state members who cannot be resubscribed,
forgotten and fake addresses, merge-field checks, tags applied only on
creation, and the per-member outcome of a batch subscribe.

All access goes through one re-entrant lock per store, because the server
answers requests on many threads at once.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.addresses import subscriber_hash
from sync.emulator.mergefields import MergeField, checked_values, default_fields, new_field
from sync.emulator.problems import (
    ApiProblem,
    FieldError,
    compliance_state,
    fake_email,
    forgotten,
    invalid,
    malformed_email,
    not_found,
    properties_too_long,
)
from sync.emulator.webhooks import Delivery, Webhooks

Clock = Callable[[], datetime]
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
# What a request may set: the API reference's enum for `status` / `status_if_new`
# has no "archived" (a member is archived by DELETE, and only GET shows it).
REQUEST_STATUSES = STATUSES[:-1]
# Members in these statuses may not be set back to "subscribed" through the API
# (except an "unsubscribed" set through the API itself: see ``_check_may_subscribe``).
COMPLIANCE_STATUSES = ("unsubscribed", "cleaned")
# DELETE (archive) answers 405 for these: "Can not archive a contact that is
# bounced, pending or archived" (amro/gibbon#320).
NOT_ARCHIVABLE = ("cleaned", "pending", "archived")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
HASH_PATTERN = re.compile(r"[0-9a-f]{32}")
EVENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{2,30}")
# Keys and values of an event's properties together, in characters. No public
# source states a limit (a Mailchimp staff member knew of none,
# mailchimp/Mailchimp-SDK-iOS#70); the project's spec assumes about 1,000 and
# the emulator enforces exactly that, so the sink is tested against it.
EVENT_PROPERTIES_MAX = 1000
BATCH_MAX = 500
PAGE_MAX = 1000
ERROR_CONTACT_EXISTS = "ERROR_CONTACT_EXISTS"
ERROR_GENERIC = "ERROR_GENERIC"


def timestamp(moment: datetime) -> str:
    """Mailchimp's timestamp format: seconds, explicit ``+00:00``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _hash_of(key: str) -> str:
    # The API accepts the hash, or the address itself, in the path.
    return key.lower() if HASH_PATTERN.fullmatch(key.lower()) else subscriber_hash(key)


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


class Audience:
    """One Mailchimp list ("audience") and everything in it."""

    def __init__(self, list_id: str, name: str, clock: Clock, lock: threading.RLock) -> None:
        self.list_id = list_id
        self.name = name
        self._clock = clock
        self._lock = lock
        self.created_at = clock()
        self.merge_fields: list[MergeField] = default_fields()
        self._members: dict[str, Member] = {}
        self._forgotten: set[str] = set()
        self._compliance: set[str] = set()
        # Members unsubscribed through the API: unlike those who unsubscribed
        # themselves, the API may subscribe them again.
        self._api_unsubscribed: set[str] = set()
        self._fake: set[str] = set()
        self._tag_ids: dict[str, int] = {}
        self._web_ids = itertools.count(100_001)
        self._events: list[tuple[str, str, Event]] = []  # (hash, address, event)

    # -- inspection and scripting, for tests ---------------------------------

    def member(self, email_or_hash: str) -> Member | None:
        with self._lock:
            return self._members.get(_hash_of(email_or_hash))

    def members(self) -> list[Member]:
        with self._lock:
            return list(self._members.values())

    def events(self, email_or_hash: str | None = None) -> list[Event]:
        """Events received, in order; for one member, or for all when None."""
        with self._lock:
            if email_or_hash is None:
                return [event for _, _, event in self._events]
            wanted = _hash_of(email_or_hash)
            return [event for h, _, event in self._events if h == wanted]

    def received_events(self) -> list[tuple[str, Event]]:
        """``(address, event)`` for every event of the audience, in arrival order."""
        with self._lock:
            return [(email, event) for _, email, event in self._events]

    def merge_field(self, tag: str) -> MergeField | None:
        with self._lock:
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
        with self._lock:
            member = self._create(email, status, dict(merge_fields or {}), tags)
            self._forgotten.discard(member.id)
            return member

    def forget(self, email: str) -> None:
        """Permanently delete ``email``: it is gone and may not be re-imported."""
        with self._lock:
            h = subscriber_hash(email)
            self._members.pop(h, None)
            self._forgotten.add(h)

    def mark_compliance(self, email: str) -> None:
        """Put ``email`` under compliance review: it can never be set to subscribed."""
        with self._lock:
            h = subscriber_hash(email)
            self._compliance.add(h)
            member = self._members.get(h)
            if member is not None and member.status == "subscribed":
                member.status = "unsubscribed"
                member.last_changed = self._clock()

    def mark_fake(self, email_or_domain: str) -> None:
        """Make Mailchimp find an address (or ``@domain``) fake or invalid."""
        with self._lock:
            self._fake.add(email_or_domain.lower())

    # -- the API -------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            counts = {s: 0 for s in STATUSES}
            for m in self._members.values():
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

    def member_json(self, key: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._existing(key))

    def put_member(
        self, key: str, body: Any, *, skip_merge_validation: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """``PUT /members/{hash}``: create or update; True when created."""
        body = _object(body)
        with self._lock:
            h = _hash_of(key)
            member = self._members.get(h)
            if member is None:
                email = body.get("email_address")
                if not isinstance(email, str) or not email:
                    raise invalid(
                        errors=[FieldError("email_address", "This value should not be blank.")]
                    )
                if subscriber_hash(email) != h:
                    raise invalid("The subscriber hash does not match the email address.")
                # On creation `status_if_new` wins; `status` is the fallback.
                status = body.get("status_if_new") or body.get("status")
                if status is None:
                    raise invalid(
                        errors=[
                            FieldError(
                                "status_if_new",
                                "status_if_new or status is required for a new member",
                            )
                        ]
                    )
                self._check_status(status)
                self._check_new_email(email)
                values = self._merge_values(body, None, skip_merge_validation)
                self._check_may_subscribe(h, None, email, status)
                created = self._create(email, status, values, _tag_names(body))
                if status == "unsubscribed":
                    self._api_unsubscribed.add(created.id)
                self._apply_profile(created, body)
                return True, self._render(created)
            # An existing member: `status_if_new` is ignored, `tags` too. An
            # archived contact stays archived unless `status` says otherwise
            # (tbar0970/jethro-pmm#708: `status_if_new` alone "doesn't stick").
            status = body.get("status")
            if status is not None:
                self._check_status(status)
                self._check_may_subscribe(h, member, member.email_address, status)
            values = self._merge_values(body, member.merge_fields, skip_merge_validation)
            self._update(member, status, values)
            self._apply_profile(member, body)
            return False, self._render(member)

    def patch_member(
        self, key: str, body: Any, *, skip_merge_validation: bool = False
    ) -> dict[str, Any]:
        body = _object(body)
        with self._lock:
            member = self._existing(key)
            self._change_address(member, body.get("email_address"))
            status = body.get("status")
            if status is not None:
                self._check_status(status)
                self._check_may_subscribe(member.id, member, member.email_address, status)
            values = self._merge_values(body, member.merge_fields, skip_merge_validation)
            self._update(member, status, values)
            self._apply_profile(member, body)
            return self._render(member)

    def archive_member(self, key: str) -> Member:
        """``DELETE /members/{hash}``: the contact is archived, not removed.

        It still answers ``GET`` (with ``status: archived``) and may come back
        through ``PUT`` with ``status``; bounced, pending and archived contacts
        cannot be archived (405)."""
        with self._lock:
            member = self._existing(key)
            if member.status in NOT_ARCHIVABLE:
                raise cannot_archive()
            self._set_status(member, "archived")
            return member

    def delete_permanent(self, key: str) -> None:
        """``POST /members/{hash}/actions/delete-permanent``: gone for good;
        the address can never be imported again."""
        with self._lock:
            member = self._existing(key)
            self.forget(member.email_address)

    # -- changes made in Mailchimp itself (the person, the UI, bounces) -------

    def unsubscribe_by_person(self, key: str) -> Member:
        """The person used an unsubscribe link: a compliance state for the API."""
        with self._lock:
            member = self._existing(key)
            self._set_status(member, "unsubscribed")
            self._api_unsubscribed.discard(member.id)
            return member

    def clean(self, key: str) -> Member:
        """The address bounced hard: cleaned, never to be subscribed by the API."""
        with self._lock:
            member = self._existing(key)
            self._set_status(member, "cleaned")
            return member

    def subscribe_by_person(self, key: str) -> Member:
        """The person signed up again through a form: back to subscribed,
        archived or not (Mailchimp's help page "Archive or unarchive contacts")."""
        with self._lock:
            member = self._existing(key)
            self._set_status(member, "subscribed")
            self._compliance.discard(member.id)
            self._api_unsubscribed.discard(member.id)
            return member

    def change_address(self, key: str, new_email: str) -> tuple[Member, str]:
        """The person (or the marketer) changed the address: the member's id
        changes with it. Returns the member and its old address."""
        with self._lock:
            member = self._existing(key)
            self._check_new_email(new_email)
            if subscriber_hash(new_email) in self._members:
                raise member_exists(new_email)
            old = member.email_address
            del self._members[member.id]
            member.email_address = new_email
            member.last_changed = self._clock()
            self._members[member.id] = member
            return member, old

    def edit_profile(self, key: str, merge_fields: Mapping[str, Any]) -> Member:
        """The person edited their profile (or the marketer did, in the UI)."""
        with self._lock:
            member = self._existing(key)
            values = self._merge_values(
                {"merge_fields": dict(merge_fields)}, member.merge_fields, skip_required=True
            )
            self._update(member, None, values)
            return member

    def members_json(self, query: Mapping[str, str]) -> dict[str, Any]:
        count, offset = _page(query, default_count=10)
        status = query.get("status")
        if status is not None and status not in STATUSES:
            raise invalid(
                errors=[FieldError("status", f"Value is not one of: {', '.join(STATUSES)}")]
            )
        since = _instant(query, "since_last_changed")
        before = _instant(query, "before_last_changed")
        with self._lock:
            chosen = [
                m
                for m in self._members.values()
                if (status is None or m.status == status)
                and (since is None or m.last_changed > since)
                and (before is None or m.last_changed < before)
            ]
            return {
                "members": [self._render(m) for m in chosen[offset : offset + count]],
                "list_id": self.list_id,
                "total_items": len(chosen),
                "_links": [],
            }

    def batch_subscribe(
        self, body: Any, *, skip_merge_validation: bool, skip_duplicate_check: bool
    ) -> dict[str, Any]:
        """``POST /lists/{id}``: per-member outcomes, never a whole failure."""
        body = _object(body)
        items = body.get("members")
        if not isinstance(items, list):
            raise invalid(errors=[FieldError("members", "Schema describes array")])
        if len(items) > BATCH_MAX:
            raise invalid(
                errors=[
                    FieldError(
                        "members",
                        f"At most {BATCH_MAX} members per call, {len(items)} found",
                    )
                ]
            )
        self._check_batch_schema(items)
        update_existing = body.get("update_existing") is True
        sync_tags = body.get("sync_tags") is True
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        with self._lock:
            for item in items:
                email = item["email_address"]
                h = subscriber_hash(email)
                if h in seen:
                    if not skip_duplicate_check:
                        errors.append(
                            _batch_error(email, f"{email} appears more than once in this request")
                        )
                    continue
                seen.add(h)
                member = self._members.get(h)
                try:
                    if member is None:
                        self._check_new_email(email)
                        values = self._merge_values(item, None, skip_merge_validation)
                        self._check_may_subscribe(h, None, email, item["status"])
                        new = self._create(email, item["status"], values, _tag_names(item))
                        if new.status == "unsubscribed":
                            self._api_unsubscribed.add(new.id)
                        self._apply_profile(new, item)
                        created.append(self._render(new))
                        continue
                    if not update_existing:
                        errors.append(
                            _batch_error(
                                email,
                                f"{email} is already a list member, do you want to update? "
                                "please provide update_existing:true in the request body",
                                ERROR_CONTACT_EXISTS,
                            )
                        )
                        continue
                    self._check_may_subscribe(h, member, email, item["status"])
                    values = self._merge_values(item, member.merge_fields, skip_merge_validation)
                    self._update(member, item["status"], values)
                    if sync_tags:
                        self._replace_tags(member, _tag_names(item))
                    self._apply_profile(member, item)
                    updated.append(self._render(member))
                except ApiProblem as problem:
                    errors.append(_batch_problem(email, problem))
        return {
            "new_members": created,
            "updated_members": updated,
            "errors": errors,
            "total_created": len(created),
            "total_updated": len(updated),
            "error_count": len(errors),
            "_links": [],
        }

    def update_tags(self, key: str, body: Any) -> None:
        body = _object(body)
        tags = body.get("tags")
        problems: list[FieldError] = []
        if not isinstance(tags, list):
            raise invalid(errors=[FieldError("tags", "Schema describes array")])
        for i, tag in enumerate(tags):
            if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag["name"]:
                problems.append(FieldError(f"tags.{i}.name", "This value should not be blank."))
            elif tag.get("status") not in ("active", "inactive"):
                problems.append(
                    FieldError(f"tags.{i}.status", "Value is not one of: active, inactive")
                )
        if problems:
            raise invalid(errors=problems)
        with self._lock:
            member = self._existing(key)
            for tag in tags:
                if tag["status"] == "active":
                    self._add_tag(member, tag["name"])
                else:
                    member.tags.pop(tag["name"], None)

    def tags_json(self, key: str) -> dict[str, Any]:
        with self._lock:
            member = self._existing(key)
            tags = [
                {"id": self._tag_ids[name], "name": name, "date_added": timestamp(added)}
                for name, added in member.tags.items()
            ]
            return {"tags": tags, "total_items": len(tags), "_links": []}

    def add_event(self, key: str, body: Any) -> None:
        body = _object(body)
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
        if occurred_at is not None and not _is_instant(occurred_at):
            problems.append(FieldError("occurred_at", "This value should be a valid ISO 8601 date"))
        is_syncing = body.get("is_syncing", False)
        if not isinstance(is_syncing, bool):
            problems.append(FieldError("is_syncing", "Schema describes boolean"))
        if problems:
            raise invalid(errors=problems)
        with self._lock:
            member = self._existing(key)
            event = Event(str(name), dict(properties), occurred_at, is_syncing, self._clock())
            member.events.append(event)
            self._events.append((member.id, member.email_address, event))

    def events_json(self, key: str, query: Mapping[str, str]) -> dict[str, Any]:
        count, offset = _page(query, default_count=10)
        with self._lock:
            events = self._existing(key).events
            return {
                "events": [e.to_json() for e in events[offset : offset + count]],
                "total_items": len(events),
                "_links": [],
            }

    def merge_fields_json(self, query: Mapping[str, str]) -> dict[str, Any]:
        count, offset = _page(query, default_count=10)
        with self._lock:
            return {
                "merge_fields": [
                    f.to_json(self.list_id) for f in self.merge_fields[offset : offset + count]
                ],
                "list_id": self.list_id,
                "total_items": len(self.merge_fields),
                "_links": [],
            }

    def merge_field_json(self, merge_id: str) -> dict[str, Any]:
        with self._lock:
            for f in self.merge_fields:
                if str(f.merge_id) == merge_id:
                    return f.to_json(self.list_id)
        raise not_found()

    def delete_merge_field(self, merge_id: str) -> None:
        """``DELETE …/merge-fields/{merge_id}``: the field and every member's
        value of it are gone (as when a marketer deletes it in Mailchimp)."""
        with self._lock:
            found = next((f for f in self.merge_fields if str(f.merge_id) == merge_id), None)
            if found is None:
                raise not_found()
            self.merge_fields.remove(found)
            for member in self._members.values():
                member.merge_fields.pop(found.tag, None)

    def add_merge_field(self, body: Any) -> dict[str, Any]:
        with self._lock:
            created = new_field(body, self.merge_fields)
            self.merge_fields.append(created)
            return created.to_json(self.list_id)

    # -- rules -------------------------------------------------------------------

    def _existing(self, key: str) -> Member:
        member = self._members.get(_hash_of(key))
        if member is None:
            raise not_found()
        return member

    def _check_status(self, status: Any) -> None:
        if status not in REQUEST_STATUSES:
            raise invalid(
                errors=[FieldError("status", f"Value is not one of: {', '.join(REQUEST_STATUSES)}")]
            )

    def _check_new_email(self, email: str) -> None:
        lowered = email.lower()
        domain = "@" + lowered.rpartition("@")[2]
        if not EMAIL_PATTERN.fullmatch(email):
            raise malformed_email()
        if lowered in self._fake or domain in self._fake:
            raise fake_email(email)
        if subscriber_hash(email) in self._forgotten:
            raise forgotten(email)

    def _check_may_subscribe(self, h: str, member: Member | None, email: str, status: str) -> None:
        if status != "subscribed":
            return
        if h in self._compliance:
            raise compliance_state(email)
        if member is None or member.status not in COMPLIANCE_STATUSES:
            return
        if member.status == "unsubscribed" and h in self._api_unsubscribed:
            return  # unsubscribed through the API: the API may undo it
        raise compliance_state(email)

    def _merge_values(
        self, body: Mapping[str, Any], stored: dict[str, Any] | None, skip_required: bool
    ) -> dict[str, Any]:
        """The merge values of ``body`` this audience keeps (see ``checked_values``)."""
        return checked_values(
            self.merge_fields, body.get("merge_fields"), stored=stored, skip_required=skip_required
        )

    def _check_batch_schema(self, items: list[Any]) -> None:
        problems: list[FieldError] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(FieldError(f"members.{i}", "Schema describes object"))
                continue
            if not isinstance(item.get("email_address"), str):
                problems.append(
                    FieldError(
                        f"members.{i}.email_address", "Required property email_address is missing"
                    )
                )
            if "status" not in item:
                problems.append(
                    FieldError(f"members.{i}.status", "Required property status is missing")
                )
            elif item["status"] not in REQUEST_STATUSES:
                problems.append(
                    FieldError(
                        f"members.{i}.status",
                        f"Value is not one of: {', '.join(REQUEST_STATUSES)}",
                    )
                )
        if problems:
            raise invalid(errors=problems)

    def _change_address(self, member: Member, address: Any) -> None:
        """``PATCH`` with a new ``email_address`` changes the member's address
        in place (its id, the hash, follows). A new address that is already in
        the audience is refused: 400 "Invalid Resource", detail ``"x" is
        already in this list with a status of "subscribed".`` (see
        docs/emulator.md for the sources)."""
        if not isinstance(address, str) or address.lower() == member.email_address.lower():
            return
        self._check_new_email(address)
        taken = self._members.get(subscriber_hash(address))
        if taken is not None:
            raise invalid(f'"{address}" is already in this list with a status of "{taken.status}".')
        del self._members[member.id]
        member.email_address = address
        member.last_changed = self._clock()
        self._members[member.id] = member

    # -- changes -----------------------------------------------------------------

    def _create(
        self, email: str, status: str, merge_fields: dict[str, Any], tags: Iterable[str]
    ) -> Member:
        now = self._clock()
        member = Member(email, status, merge_fields, now, now, next(self._web_ids))
        for name in tags:
            self._add_tag(member, name)
        self._members[member.id] = member
        return member

    def _update(self, member: Member, status: str | None, merge_fields: dict[str, Any]) -> None:
        """A change made through the API (PUT, PATCH, batch subscribe)."""
        changed = False
        if status is not None and status != member.status:
            member.status = status
            changed = True
            if status == "unsubscribed":
                self._api_unsubscribed.add(member.id)
            else:
                self._api_unsubscribed.discard(member.id)
        for tag, value in merge_fields.items():
            if member.merge_fields.get(tag, "") != value:
                member.merge_fields[tag] = value
                changed = True
        if changed:
            member.last_changed = self._clock()

    def _set_status(self, member: Member, status: str) -> None:
        if member.status != status:
            member.status = status
            member.last_changed = self._clock()

    def _apply_profile(self, member: Member, body: Mapping[str, Any]) -> None:
        if isinstance(body.get("email_type"), str):
            member.email_type = body["email_type"]
        if isinstance(body.get("language"), str):
            member.language = body["language"]
        if isinstance(body.get("vip"), bool):
            member.vip = body["vip"]

    def _add_tag(self, member: Member, name: str) -> None:
        self._tag_ids.setdefault(name, len(self._tag_ids) + 1)
        member.tags.setdefault(name, self._clock())

    def _replace_tags(self, member: Member, names: Iterable[str]) -> None:
        wanted = list(names)
        for name in list(member.tags):
            if name not in wanted:
                del member.tags[name]
        for name in wanted:
            self._add_tag(member, name)

    def _render(self, member: Member) -> dict[str, Any]:
        merge_fields = {f.tag: member.merge_fields.get(f.tag, "") for f in self.merge_fields}
        return {
            "id": member.id,
            "email_address": member.email_address,
            "unique_email_id": member.id[:10],
            "contact_id": member.id,
            "full_name": " ".join(
                str(merge_fields.get(t) or "") for t in ("FNAME", "LNAME")
            ).strip(),
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": member.status,
            "merge_fields": merge_fields,
            "interests": {},
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": "",
            "timestamp_signup": timestamp(member.timestamp_signup),
            "ip_opt": "",
            "timestamp_opt": timestamp(member.timestamp_signup),
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
            "tags": [{"id": self._tag_ids[n], "name": n} for n in member.tags],
            "list_id": self.list_id,
            "_links": [],
        }


class Store:
    """Every audience of the emulated account, behind one lock."""

    def __init__(
        self, list_id: str = "a1b2c3d4e5", name: str = "mailsync emulator", clock: Clock = utc_now
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.default_list_id = list_id
        self._audiences: dict[str, Audience] = {}
        self.add_audience(list_id, name)
        self.webhooks = Webhooks(clock)

    def add_audience(self, list_id: str, name: str = "mailsync emulator") -> Audience:
        with self._lock:
            audience = Audience(list_id, name, self._clock, self._lock)
            self._audiences[list_id] = audience
            return audience

    def remove_audience(self, list_id: str | None = None) -> None:
        """The audience deleted in Mailchimp (by a marketer, in the UI): every
        call about it answers 404 until ``add_audience`` makes a new, empty one."""
        with self._lock:
            self._audiences.pop(list_id or self.default_list_id, None)

    def audience(self, list_id: str | None = None) -> Audience:
        """The audience ``list_id`` (the default one when None); 404 when unknown."""
        with self._lock:
            found = self._audiences.get(list_id or self.default_list_id)
        if found is None:
            raise not_found()
        return found

    def audiences(self) -> list[Audience]:
        with self._lock:
            return list(self._audiences.values())

    def reset(self) -> None:
        """Back to empty audiences with the default merge fields, same ids;
        no webhooks."""
        with self._lock:
            for audience in list(self._audiences.values()):
                self.add_audience(audience.list_id, audience.name)
            if self.default_list_id not in self._audiences:  # removed by a test
                self.add_audience(self.default_list_id)
        self.webhooks.reset()

    def notify(
        self,
        audience: Audience,
        kind: str,
        key: str,
        *,
        source: str,
        reason: str = "",
        old_email: str = "",
    ) -> list[Delivery]:
        """Send the webhook for a change just made to member ``key``.

        ``kind`` is a webhook type, or "archive" (sent as ``unsubscribe``
        with ``data[action]=delete``). Field names and values as in the
        payloads recorded in apache/predictionio's MailChimpConnector.
        """
        member = audience.member(key)
        if member is None:
            return []
        base = {"list_id": audience.list_id}
        profile = {
            "id": member.id[:10],
            "email": member.email_address,
            "email_type": member.email_type,
            "merges.EMAIL": member.email_address,
            **{f"merges.{t}": str(v) for t, v in sorted(member.merge_fields.items())},
            "ip_opt": "",
        }
        data: dict[str, str]
        if kind == "subscribe":
            data = {**base, **profile, "ip_signup": ""}
        elif kind == "profile":
            data = {**base, **profile}
        elif kind in ("unsubscribe", "archive"):
            action = "delete" if kind == "archive" else "unsub"
            data = {**base, **profile, "action": action, "reason": reason or "manual"}
            data["campaign_id"] = ""
            kind = "unsubscribe"
        elif kind == "cleaned":
            data = {**base, "campaign_id": "", "reason": reason or "hard"}
            data["email"] = member.email_address
        elif kind == "upemail":
            data = {
                **base,
                "new_id": member.id[:10],
                "new_email": member.email_address,
                "old_email": old_email,
            }
        else:
            raise ValueError(f"no webhook for {kind!r}")
        return self.webhooks.fire(audience.list_id, kind, data, source)


# -- helpers for request bodies and queries -------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(errors=[FieldError("", "Schema describes object")])
    return body


def _tag_names(body: Mapping[str, Any]) -> list[str]:
    tags = body.get("tags")
    if not isinstance(tags, list):
        return []
    return [t for t in tags if isinstance(t, str) and t]


def properties_size(properties: Mapping[str, Any]) -> int:
    """Characters of an event's properties: every key and value together."""
    return sum(len(str(k)) + len(str(v)) for k, v in properties.items())


def _page(query: Mapping[str, str], default_count: int) -> tuple[int, int]:
    try:
        count = int(query.get("count", default_count))
        offset = int(query.get("offset", 0))
    except ValueError as exc:
        raise invalid(errors=[FieldError("count", "Schema describes integer")]) from exc
    if count < 0 or count > PAGE_MAX:
        raise invalid(errors=[FieldError("count", f"Must be between 0 and {PAGE_MAX}")])
    if offset < 0:
        raise invalid(errors=[FieldError("offset", "Must be 0 or more")])
    return count, offset


def _is_instant(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _instant(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _is_instant(raw):
        raise invalid(errors=[FieldError(name, "This value should be a valid ISO 8601 date")])
    # Mailchimp ignores the offset and reads the wall-clock time as UTC
    # (mailchimp/mailchimp-client-lib-codegen#241): so does the emulator.
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)


def cannot_archive() -> ApiProblem:
    # Wording recorded in amro/gibbon#320 (a DELETE of a bounced member).
    return ApiProblem(
        405,
        "Method Not Allowed",
        "This list member cannot be removed. "
        "Can not archive a contact that is bounced, pending or archived",
    )


def member_exists(email: str) -> ApiProblem:
    # Wording recorded in amro/gibbon#193 (a POST after a DELETE).
    return ApiProblem(
        400,
        "Member Exists",
        f"{email} is already a list member. Use PUT to insert or update list members.",
    )


def _batch_error(email: str, error: str, code: str = ERROR_GENERIC) -> dict[str, Any]:
    return {
        "email_address": email,
        "error": error,
        "error_code": code,
        "field": "",
        "field_message": "",
    }


def _batch_problem(email: str, problem: ApiProblem) -> dict[str, Any]:
    entry = _batch_error(email, problem.detail)
    if problem.errors:
        entry["field"] = problem.errors[0].field
        entry["field_message"] = problem.errors[0].message
    return entry
