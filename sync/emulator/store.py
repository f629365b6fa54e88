"""The emulated account: every audience, and the webhooks they send.

This is the state the HTTP routes read and change, and the state tests
inspect. Each audience (``audience.py``) keeps its members, merge fields and
events; the store adds the account's webhooks (``webhooks.py``) and builds
the webhook of each change made in Mailchimp itself (:meth:`Store.notify`).

All access goes through one re-entrant lock per store, because the server
answers requests on many threads at once.
"""

from __future__ import annotations

import threading

from sync.emulator.audience import Audience
from sync.emulator.members import Clock, utc_now
from sync.emulator.problems import not_found
from sync.emulator.webhooks import Delivery, Webhooks


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
