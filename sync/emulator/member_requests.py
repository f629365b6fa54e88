"""The member endpoints: one member (GET, PUT, PATCH, permanent delete), the list.

Each function answers one request about an audience's members, under the
store's lock, with the roster's rules: ``status_if_new`` versus ``status``,
compliance-state members who cannot be resubscribed, forgotten and fake
addresses, merge-field checks, tags applied only on creation, an address
changed by ``PATCH``. ``DELETE`` (archive) is
:meth:`~sync.emulator.audience.Audience.archive_member`, as tests call it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.addresses import subscriber_hash
from sync.emulator.audience import Audience
from sync.emulator.bodies import instant, json_object, page
from sync.emulator.members import STATUSES, hash_of
from sync.emulator.problems import FieldError, invalid
from sync.emulator.roster import apply_profile
from sync.emulator.tags import tag_names


def member_json(audience: Audience, key: str) -> dict[str, Any]:
    with audience.lock:
        return audience.render(audience.roster.existing(key))


def members_json(audience: Audience, query: Mapping[str, str]) -> dict[str, Any]:
    count, offset = page(query, default_count=10)
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise invalid(errors=[FieldError("status", f"Value is not one of: {', '.join(STATUSES)}")])
    since = instant(query, "since_last_changed")
    before = instant(query, "before_last_changed")
    with audience.lock:
        chosen = [
            m
            for m in audience.roster.all()
            if (status is None or m.status == status)
            and (since is None or m.last_changed > since)
            and (before is None or m.last_changed < before)
        ]
        return {
            "members": [audience.render(m) for m in chosen[offset : offset + count]],
            "list_id": audience.list_id,
            "total_items": len(chosen),
            "_links": [],
        }


def put_member(
    audience: Audience, key: str, body: Any, *, skip_merge_validation: bool = False
) -> tuple[bool, dict[str, Any]]:
    """``PUT /members/{hash}``: create or update; True when created."""
    body = json_object(body)
    roster = audience.roster
    with audience.lock:
        h = hash_of(key)
        member = roster.get(h)
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
            roster.check_status(status)
            roster.check_new_email(email)
            values = audience.merge_values(body, None, skip_merge_validation)
            roster.check_may_subscribe(h, None, email, status)
            created = roster.create(email, status, values, tag_names(body), by_api=True)
            apply_profile(created, body)
            return True, audience.render(created)
        # An existing member: `status_if_new` is ignored, `tags` too. An
        # archived contact stays archived unless `status` says otherwise
        # (tbar0970/jethro-pmm#708: `status_if_new` alone "doesn't stick").
        status = body.get("status")
        if status is not None:
            roster.check_status(status)
            roster.check_may_subscribe(h, member, member.email_address, status)
        values = audience.merge_values(body, member.merge_fields, skip_merge_validation)
        roster.update(member, status, values)
        apply_profile(member, body)
        return False, audience.render(member)


def patch_member(
    audience: Audience, key: str, body: Any, *, skip_merge_validation: bool = False
) -> dict[str, Any]:
    body = json_object(body)
    roster = audience.roster
    with audience.lock:
        member = roster.existing(key)
        roster.change_address_by_api(member, body.get("email_address"))
        status = body.get("status")
        if status is not None:
            roster.check_status(status)
            roster.check_may_subscribe(member.id, member, member.email_address, status)
        values = audience.merge_values(body, member.merge_fields, skip_merge_validation)
        roster.update(member, status, values)
        apply_profile(member, body)
        return audience.render(member)


def delete_permanent(audience: Audience, key: str) -> None:
    """``POST /members/{hash}/actions/delete-permanent``: gone for good;
    the address can never be imported again."""
    with audience.lock:
        member = audience.roster.existing(key)
        audience.roster.forget(member.email_address)
