"""The members of one audience, and the rules on their statuses and addresses.

Besides the members themselves, a roster remembers what decides whether an
address may be (re)subscribed through the API: forgotten addresses,
addresses under compliance review, addresses found fake, and who was
unsubscribed through the API (unlike those who unsubscribed themselves, the
API may subscribe them again). It makes every change of status, of address
and of tags, and knows the audience's tag ids.

A roster takes no lock of its own: its audience holds the store's lock
around every call.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from sync.addresses import subscriber_hash
from sync.emulator.members import (
    COMPLIANCE_STATUSES,
    EMAIL_PATTERN,
    NOT_ARCHIVABLE,
    REQUEST_STATUSES,
    Clock,
    Member,
    hash_of,
)
from sync.emulator.problems import (
    ApiProblem,
    FieldError,
    compliance_state,
    fake_email,
    forgotten,
    invalid,
    malformed_email,
    not_found,
)


class Roster:
    """Every member of one audience, by subscriber hash."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._members: dict[str, Member] = {}
        self._forgotten: set[str] = set()
        self._compliance: set[str] = set()
        # Members unsubscribed through the API: unlike those who unsubscribed
        # themselves, the API may subscribe them again.
        self._api_unsubscribed: set[str] = set()
        self._fake: set[str] = set()
        self.tag_ids: dict[str, int] = {}
        self._web_ids = itertools.count(100_001)

    # -- looking members up ----------------------------------------------------

    def get(self, email_or_hash: str) -> Member | None:
        return self._members.get(hash_of(email_or_hash))

    def all(self) -> list[Member]:
        return list(self._members.values())

    def existing(self, key: str) -> Member:
        member = self._members.get(hash_of(key))
        if member is None:
            raise not_found()
        return member

    # -- scripting, for tests ----------------------------------------------------

    def seed(
        self, email: str, status: str, merge_fields: dict[str, Any], tags: Iterable[str]
    ) -> Member:
        member = self.create(email, status, merge_fields, tags)
        self._forgotten.discard(member.id)
        return member

    def forget(self, email: str) -> None:
        h = subscriber_hash(email)
        self._members.pop(h, None)
        self._forgotten.add(h)

    def mark_compliance(self, email: str) -> None:
        h = subscriber_hash(email)
        self._compliance.add(h)
        member = self._members.get(h)
        if member is not None and member.status == "subscribed":
            member.status = "unsubscribed"
            member.last_changed = self._clock()

    def mark_fake(self, email_or_domain: str) -> None:
        self._fake.add(email_or_domain.lower())

    # -- rules -------------------------------------------------------------------

    @staticmethod
    def check_status(status: Any) -> None:
        if status not in REQUEST_STATUSES:
            raise invalid(
                errors=[FieldError("status", f"Value is not one of: {', '.join(REQUEST_STATUSES)}")]
            )

    def check_new_email(self, email: str) -> None:
        lowered = email.lower()
        domain = "@" + lowered.rpartition("@")[2]
        if not EMAIL_PATTERN.fullmatch(email):
            raise malformed_email()
        if lowered in self._fake or domain in self._fake:
            raise fake_email(email)
        if subscriber_hash(email) in self._forgotten:
            raise forgotten(email)

    def check_may_subscribe(self, h: str, member: Member | None, email: str, status: str) -> None:
        if status != "subscribed":
            return
        if h in self._compliance:
            raise compliance_state(email)
        if member is None or member.status not in COMPLIANCE_STATUSES:
            return
        if member.status == "unsubscribed" and h in self._api_unsubscribed:
            return  # unsubscribed through the API: the API may undo it
        raise compliance_state(email)

    # -- changes made through the API ----------------------------------------------

    def create(
        self,
        email: str,
        status: str,
        merge_fields: dict[str, Any],
        tags: Iterable[str],
        *,
        by_api: bool = False,
    ) -> Member:
        """A new member; ``by_api`` when a request created it (PUT, batch
        subscribe), so that an "unsubscribed" it was given may be undone."""
        now = self._clock()
        member = Member(email, status, merge_fields, now, now, next(self._web_ids))
        for name in tags:
            self.add_tag(member, name)
        self._members[member.id] = member
        if by_api and status == "unsubscribed":
            self._api_unsubscribed.add(member.id)
        return member

    def update(self, member: Member, status: str | None, merge_fields: dict[str, Any]) -> None:
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

    def archive(self, member: Member) -> None:
        """Bounced, pending and archived contacts cannot be archived (405)."""
        if member.status in NOT_ARCHIVABLE:
            raise cannot_archive()
        self._set_status(member, "archived")

    def change_address_by_api(self, member: Member, address: Any) -> None:
        """``PATCH`` with a new ``email_address`` changes the member's address
        in place (its id, the hash, follows). A new address that is already in
        the audience is refused: 400 "Invalid Resource", detail ``"x" is
        already in this list with a status of "subscribed".`` (see
        docs/emulator.md for the sources)."""
        if not isinstance(address, str) or address.lower() == member.email_address.lower():
            return
        self.check_new_email(address)
        taken = self._members.get(subscriber_hash(address))
        if taken is not None:
            raise invalid(f'"{address}" is already in this list with a status of "{taken.status}".')
        self._move(member, address)

    # -- changes made in Mailchimp itself (the person, the UI, bounces) -----------

    def unsubscribed_by_person(self, member: Member) -> None:
        """An unsubscribe link: a compliance state for the API."""
        self._set_status(member, "unsubscribed")
        self._api_unsubscribed.discard(member.id)

    def cleaned(self, member: Member) -> None:
        self._set_status(member, "cleaned")

    def subscribed_by_person(self, member: Member) -> None:
        """A sign-up form: back to subscribed, whatever the status was."""
        self._set_status(member, "subscribed")
        self._compliance.discard(member.id)
        self._api_unsubscribed.discard(member.id)

    def change_address(self, member: Member, new_email: str) -> None:
        """The person (or the marketer) changed the address."""
        self.check_new_email(new_email)
        if subscriber_hash(new_email) in self._members:
            raise member_exists(new_email)
        self._move(member, new_email)

    # -- tags ----------------------------------------------------------------------

    def add_tag(self, member: Member, name: str) -> None:
        self.tag_ids.setdefault(name, len(self.tag_ids) + 1)
        member.tags.setdefault(name, self._clock())

    def replace_tags(self, member: Member, names: Iterable[str]) -> None:
        wanted = list(names)
        for name in list(member.tags):
            if name not in wanted:
                del member.tags[name]
        for name in wanted:
            self.add_tag(member, name)

    # -- helpers -------------------------------------------------------------------

    def _set_status(self, member: Member, status: str) -> None:
        if member.status != status:
            member.status = status
            member.last_changed = self._clock()

    def _move(self, member: Member, address: str) -> None:
        """The member's address, and so its id, becomes ``address``."""
        del self._members[member.id]
        member.email_address = address
        member.last_changed = self._clock()
        self._members[member.id] = member


def apply_profile(member: Member, body: Mapping[str, Any]) -> None:
    """The profile settings a request may carry: email type, language, VIP."""
    if isinstance(body.get("email_type"), str):
        member.email_type = body["email_type"]
    if isinstance(body.get("language"), str):
        member.language = body["language"]
    if isinstance(body.get("vip"), bool):
        member.vip = body["vip"]


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
