"""Changes made on Mailchimp's side, as mailsync learns of them.

People unsubscribe through links, addresses bounce and get cleaned, marketers
archive contacts and edit profiles in Mailchimp's UI, people change their
address. None of that goes through mailsync, yet the sink must respect it
(never resubscribe, never bring back an archived contact, push to the new
address) and the application must be able to honour it (``mailsync
unsubscribes``). Three ways in, one record, :class:`MailchimpChange`:

* a list webhook (``sync.mailchimp.webhooks`` receives it): a form-encoded POST of
  ``type``, ``fired_at`` and ``data[...]`` fields, parsed by
  :func:`parse_webhook` (field names as in the payloads recorded in
  ``apache/predictionio``'s ``MailChimpConnector.scala``);
* the reconciliation poll (``sync.mailchimp.reconciliation``), for webhooks missed:
  each member ``GET /lists/{id}/members?since_last_changed=`` lists, through
  :func:`from_member`;
* the answer to a push: a ``PUT`` answering ``status: archived`` tells the
  sink the contact was archived (``from_member`` too).

The state store applies them (``record_mailchimp_changes``) idempotently: a
webhook delivered twice has the same key and is applied once, and a change
older than what is known does not overwrite it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.addresses import normalise_email
from sync.records import require_aware

#: Statuses a member can have in Mailchimp (``archived`` only shows on GET).
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
#: Statuses the application must honour: the person must not be mailed.
OPTED_OUT = ("unsubscribed", "cleaned")
WEBHOOK_TYPES = ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign")
_MERGE_KEY = re.compile(r"^data\[merges\]\[([A-Za-z0-9_]+)\]$")


class WebhookError(ValueError):
    """A webhook POST that cannot be one of Mailchimp's: says which field."""


@dataclass(frozen=True)
class MailchimpChange:
    """One change to one member, made on Mailchimp's side.

    ``email`` is the member's address after the change (for ``upemail``, the
    new one; ``old_email`` the previous one). ``status`` is the member's
    Mailchimp status after the change, None when the change says nothing
    about it (a profile edit, an address change). ``key`` identifies a
    webhook delivery, so a repeated one is applied once; None for poll and
    push observations, which are idempotent by nature.
    """

    kind: str
    email: str
    at: datetime
    source: str  # "webhook", "poll" or "push"
    status: str | None = None
    reason: str = ""
    old_email: str | None = None
    merges: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None

    def __post_init__(self) -> None:
        require_aware(self.at, "Mailchimp change instant")


def parse_fired_at(text: str) -> datetime:
    """``fired_at`` as Mailchimp writes it, ``2009-03-26 21:35:57`` (taken as UTC)."""
    try:
        moment = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise WebhookError(
                f"fired_at: expected 'YYYY-MM-DD HH:MM:SS', found {text!r}"
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_webhook(form: Mapping[str, str]) -> MailchimpChange | None:
    """A webhook POST's fields as one change; None for ``campaign`` (not about
    a member). ``WebhookError`` names the field that is missing or wrong."""
    kind = form.get("type")
    if kind not in WEBHOOK_TYPES:
        raise WebhookError(f"type: expected one of {', '.join(WEBHOOK_TYPES)}, found {kind!r}")
    if kind == "campaign":
        return None
    at = parse_fired_at(_required(form, "fired_at"))
    # Deliveries are retried with the same fields: their digest is the key.
    key = hashlib.sha256(json.dumps(sorted(form.items())).encode("utf-8")).hexdigest()[:32]
    if kind == "upemail":
        new = _address(form, "data[new_email]")
        old = _address(form, "data[old_email]")
        return MailchimpChange("upemail", new, at, "webhook", old_email=old, key=key)
    email = _address(form, "data[email]")
    reason = form.get("data[reason]", "")
    merges = {m.group(1): v for k, v in form.items() if (m := _MERGE_KEY.match(k))}
    merges.pop("EMAIL", None)  # the address itself, not a merge field we push
    if kind == "cleaned":
        return MailchimpChange("cleaned", email, at, "webhook", "cleaned", reason, key=key)
    if kind == "unsubscribe":
        # "delete" is a contact removed (archived) rather than unsubscribed.
        action = form.get("data[action]", "unsub")
        if action not in ("unsub", "delete"):
            raise WebhookError(f"data[action]: expected unsub or delete, found {action!r}")
        if action == "delete":
            return MailchimpChange("archive", email, at, "webhook", "archived", reason, key=key)
        return MailchimpChange(
            "unsubscribe", email, at, "webhook", "unsubscribed", reason, merges=merges, key=key
        )
    if kind == "subscribe":
        return MailchimpChange(
            "subscribe", email, at, "webhook", "subscribed", merges=merges, key=key
        )
    return MailchimpChange("profile", email, at, "webhook", merges=merges, key=key)


def profile_edits(listed: Mapping[str, Any], accepted: Mapping[str, Any]) -> dict[str, str]:
    """Merge values Mailchimp shows that differ from what it last accepted
    from mailsync: edited on Mailchimp's side (the person, the UI). Compared
    as text, because Mailchimp may answer a number as a string."""
    return {
        tag: str(listed[tag])
        for tag, value in accepted.items()
        if tag in listed and listed[tag] is not None and str(listed[tag]) != str(value)
    }


def from_member(
    member: Mapping[str, Any], source: str, seen_at: datetime
) -> MailchimpChange | None:
    """A member as the API shows it (a poll page, a PUT answer) as a status
    observation; None when it has no usable address or status."""
    email = member.get("email_address")
    status = member.get("status")
    if not isinstance(email, str) or "@" not in email or status not in STATUSES:
        return None
    at = seen_at
    changed = member.get("last_changed")
    if isinstance(changed, str) and changed:
        try:
            parsed = datetime.fromisoformat(changed)
            at = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    reason = member.get("unsubscribe_reason")
    return MailchimpChange(
        "status",
        normalise_email(email),
        at,
        source,
        str(status),
        reason if isinstance(reason, str) else "",
    )


def apply_change(
    row: Mapping[str, Any] | None, change: MailchimpChange, stamp: datetime
) -> dict[str, Any] | None:
    """The member's Mailchimp-side row (``mailchimp_member``'s columns) after
    ``change``; None to leave it. Shared by both ledgers.

    An observation older than what is known does not overwrite it (webhooks
    may arrive late, a poll may list a member changed since). A poll or a
    push answer seeing a member simply subscribed is not worth a row unless
    the member already has one.
    """
    if row is not None and row["changed_at"] > change.at:
        return None
    if (
        row is None
        and change.source != "webhook"
        and change.status in (None, "subscribed")
        and not change.merges
    ):
        return None
    before_status = row["status"] if row is not None else None
    status = change.status if change.status is not None else before_status
    moved = status != before_status
    merges = row["merges_json"] if row is not None else None
    if change.merges:
        merges = json.dumps(dict(change.merges), sort_keys=True)
    return {
        "email": change.email,
        "status": status,
        "reason": change.reason if moved or row is None else row["reason"],
        "status_at": change.at if moved or row is None else row["status_at"],
        "merges_json": merges,
        "source": change.source,
        "changed_at": change.at,
        "recorded_at": stamp,
    }


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise WebhookError(f"{name}: missing")
    return value


def _address(form: Mapping[str, str], name: str) -> str:
    value = _required(form, name)
    if "@" not in value:
        raise WebhookError(f"{name}: not an email address: {value!r}")
    return normalise_email(value)
