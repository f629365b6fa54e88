"""The emulator's list webhooks: Mailchimp telling an integration what changed.

Changes made in Mailchimp itself (an unsubscribe link, a bounce, the
marketer archiving a contact, a profile or address edit) reach an
integration only through webhooks, or by polling. The emulator sends them
the way Mailchimp's guide "Sync Audience Data with Webhooks" describes: a
webhook is registered with ``POST /lists/{list_id}/webhooks`` (``url``,
``events``, ``sources``), its URL is checked with a GET first, and each
change is an ``application/x-www-form-urlencoded`` POST of ``type``,
``fired_at`` and ``data[...]`` fields, named as in the payloads recorded in
``apache/predictionio`` (``MailChimpConnector.scala``).

Deliveries are synchronous (the change's request waits for them, so a test
that changes a member knows the receiver has been told once it returns) and
recorded, with their outcome, for inspection. A delivery that fails is not
retried: the receiver's reconciliation poll is what catches up.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sync.emulator.problems import FieldError, invalid, not_found

EVENTS = ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign")
SOURCES = ("user", "admin", "api")
# What Mailchimp's webhook form pre-selects: every member event, changes made
# by the person or an admin; not changes made through the API (which the
# integration made itself).
DEFAULT_SOURCES = {"user": True, "admin": True, "api": False}
TIMEOUT = 5.0
FORM_TYPE = "application/x-www-form-urlencoded"


def fired_at(moment: datetime) -> str:
    """The webhook's timestamp format: ``2009-03-26 21:35:57``, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Webhook:
    id: str
    list_id: str
    url: str
    events: dict[str, bool]
    sources: dict[str, bool]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": dict(self.events),
            "sources": dict(self.sources),
            "list_id": self.list_id,
            "_links": [],
        }

    def wants(self, kind: str, source: str) -> bool:
        return self.events.get(kind, False) and self.sources.get(source, False)


@dataclass(frozen=True)
class Delivery:
    """One POST (or validation GET) made to a webhook URL, and how it went."""

    url: str
    type: str
    fields: tuple[tuple[str, str], ...]
    status: int | None  # None: no answer (refused, timed out)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "type": self.type,
            "fields": dict(self.fields),
            "status": self.status,
            "error": self.error,
        }


Sender = Callable[[str, str, bytes | None], tuple[int | None, str]]


def http_send(method: str, url: str, body: bytes | None) -> tuple[int | None, str]:
    """One request to a webhook URL: its status, or None and the error."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", FORM_TYPE)
    request.add_header("User-Agent", "MailChimp")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return int(answer.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


@dataclass
class Webhooks:
    """Every list's webhooks and every delivery made."""

    clock: Callable[[], datetime]
    send: Sender = http_send
    hooks: list[Webhook] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, list_id: str, body: Any, *, validate: bool = True) -> Webhook:
        """``POST /lists/{list_id}/webhooks``; the URL must answer a GET first."""
        if not isinstance(body, dict):
            raise invalid(errors=[FieldError("", "Schema describes object")])
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid(errors=[FieldError("url", "This value should be a valid URL.")])
        events = _flags(body.get("events"), EVENTS, "events", default=True)
        if not isinstance(body.get("events"), dict) or "campaign" not in body["events"]:
            events["campaign"] = False  # not about members: only when asked for
        sources = _flags(body.get("sources"), SOURCES, "sources", default=None)
        hook = Webhook(uuid.uuid4().hex[:10], list_id, url, events, sources)
        if validate:
            status, error = self.send("GET", url, None)
            self._record(Delivery(url, "(validation GET)", (), status, error))
            if status is None or not 200 <= status < 300:
                raise invalid(
                    errors=[
                        FieldError(
                            "url",
                            f"The URL could not be validated: the GET answered "
                            f"{status if status is not None else error}",
                        )
                    ]
                )
        with self.lock:
            self.hooks.append(hook)
        return hook

    def of(self, list_id: str) -> list[Webhook]:
        with self.lock:
            return [h for h in self.hooks if h.list_id == list_id]

    def remove(self, list_id: str, hook_id: str) -> None:
        with self.lock:
            kept = [h for h in self.hooks if not (h.list_id == list_id and h.id == hook_id)]
            if len(kept) == len(self.hooks):
                raise not_found()
            self.hooks = kept

    def fire(self, list_id: str, kind: str, data: Mapping[str, str], source: str) -> list[Delivery]:
        """POST one event to every webhook of the list that wants it."""
        fields = (("type", kind), ("fired_at", fired_at(self.clock())), *_data(data))
        body = urlencode(fields).encode("ascii")
        done = []
        for hook in self.of(list_id):
            if not hook.wants(kind, source):
                continue
            status, error = self.send("POST", hook.url, body)
            done.append(self._record(Delivery(hook.url, kind, fields, status, error)))
        return done

    def reset(self) -> None:
        with self.lock:
            self.hooks.clear()
            self.deliveries.clear()

    def _record(self, delivery: Delivery) -> Delivery:
        with self.lock:
            self.deliveries.append(delivery)
        return delivery


def _flags(
    raw: Any, names: tuple[str, ...], where: str, *, default: bool | None
) -> dict[str, bool]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise invalid(errors=[FieldError(where, "Schema describes object")])
    flags: dict[str, bool] = {}
    for name in names:
        value = raw.get(name)
        if value is None:
            fallback = DEFAULT_SOURCES.get(name, False) if default is None else default
            flags[name] = fallback
        elif isinstance(value, bool):
            flags[name] = value
        else:
            raise invalid(errors=[FieldError(f"{where}.{name}", "Schema describes boolean")])
    return flags


def _data(data: Mapping[str, str]) -> list[tuple[str, str]]:
    # Mailchimp nests with brackets: data[email], data[merges][FNAME].
    out = []
    for key, value in data.items():
        path = "".join(f"[{part}]" for part in key.split("."))
        out.append((f"data{path}", value))
    return out
