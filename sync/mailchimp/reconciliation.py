"""The reconciliation poll: reading back what changed in Mailchimp.

Webhooks can be missed (the daemon was down, a delivery failed and Mailchimp
gave up, no webhook was configured). Every ``mailchimp.poll_interval`` the
daemon asks Mailchimp for the members changed since the last poll,
``GET /lists/{id}/members?since_last_changed=…`` (Mailchimp ignores the
offset of that instant, so it is sent in UTC), and records their status in
the state store like a webhook would (``sync.mailchimp.changes``), with the merge
values that differ from what Mailchimp last accepted from mailsync (a
profile edited there). Address changes are not visible this way: only the
``upemail`` webhook tells them. The first poll has
no such instant: it reads only the members whose status matters (archived,
unsubscribed, cleaned), not the whole audience.

The watermark is Mailchimp's own ``last_changed`` of the latest member seen
(so the two clocks never have to agree), minus a second because the filter
is strict and has one-second resolution; a member seen twice is recorded
once. It moves only after every page was read and recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.exceptions import RetriableError
from sync.mailchimp.caller import Caller
from sync.mailchimp.changes import MailchimpChange, from_member, profile_edits
from sync.mailchimp.ledger import PushLedger

log = logging.getLogger(__name__)

WATERMARK = "mailchimp_poll"
#: Members per page: Mailchimp's maximum.
PAGE = 1000
#: What the first poll reads, status by status.
FIRST_STATUSES = ("archived", "unsubscribed", "cleaned")
#: What a poll reads of each page (a partial answer). A list: the official
#: client joins ``fields`` with commas itself, and a string would be split
#: into its characters (``fields=m,e,m,b,…``: a page without members).
FIELDS = [
    "members.email_address",
    "members.status",
    "members.last_changed",
    "members.unsubscribe_reason",
    "members.merge_fields",
    "total_items",
]


class ReconciliationPoll:
    """Reads members changed in Mailchimp into ``ledger``; ``get_mark`` and
    ``set_mark`` keep the watermark (the state store's ``get_watermark`` and
    ``set_watermark``)."""

    def __init__(
        self,
        caller: Caller,
        ledger: PushLedger,
        get_mark: Callable[[str], str | None],
        set_mark: Callable[[str, str], None],
        interval: timedelta,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.caller = caller
        self.ledger = ledger
        self._get_mark = get_mark
        self._set_mark = set_mark
        self.interval = interval
        self.clock = clock
        self._last_run: float | None = None

    def due(self) -> bool:
        return (
            self._last_run is None
            or time.monotonic() - self._last_run >= self.interval.total_seconds()
        )

    def run_if_due(self) -> int | None:
        """Poll when the interval has passed; members read, or None if not due."""
        if not self.due():
            return None
        return self.run()

    def run(self) -> int:
        """One poll; returns how many members Mailchimp listed. Raises
        ``RetriableError`` when a page cannot be read (the watermark stays)."""
        started = self.clock()
        mark = self._get_mark(WATERMARK)
        latest: datetime | None = None
        read = 0
        queries: list[dict[str, str]]
        if mark is None:
            queries = [{"status": s} for s in FIRST_STATUSES]
        else:
            since = datetime.fromisoformat(mark).astimezone(UTC)
            queries = [{"since_last_changed": since.strftime("%Y-%m-%dT%H:%M:%S+00:00")}]
        for query in queries:
            for members in self._pages(query):
                read += len(members)
                changes = self._observe(members, started)
                if changes:
                    self.ledger.record_mailchimp_changes(changes)
                    newest = max(c.at for c in changes)
                    latest = newest if latest is None else max(latest, newest)
        self._last_run = time.monotonic()
        if latest is not None:
            self._set_mark(WATERMARK, (latest - timedelta(seconds=1)).isoformat())
        elif mark is None:
            # Nothing to know yet: later polls look from now on.
            self._set_mark(WATERMARK, started.isoformat())
        log.info(
            "reconciliation poll: %d members changed in Mailchimp read",
            read,
            extra={"poll": {"members": read, "query": queries}},
        )
        return read

    def _observe(
        self, members: list[Mapping[str, Any]], seen_at: datetime
    ) -> list[MailchimpChange]:
        """Each member's status, with the merge values that differ from what
        Mailchimp last accepted from mailsync (a profile edited there)."""
        found = [(m, from_member(m, "poll", seen_at)) for m in members]
        states = self.ledger.member_states(c.email for _, c in found if c is not None)
        changes = []
        for member, change in found:
            if change is None:
                continue
            known = states.get(change.email)
            listed = member.get("merge_fields")
            if known is not None and isinstance(listed, Mapping):
                edits = profile_edits(listed, known.fields)
                if edits:
                    change = replace(change, merges=edits)
            changes.append(change)
        return changes

    def _pages(self, query: Mapping[str, str]) -> Any:
        client, list_id = self.caller.client, self.caller.list_id
        offset = 0
        while True:
            answer = self.caller.call(
                f"GET /lists/{list_id}/members",
                lambda offset=offset: client.lists.get_list_members_info(  # type: ignore[misc]
                    list_id, count=PAGE, offset=offset, fields=FIELDS, **query
                ),
            )
            if not answer.ok or not isinstance(answer.body, Mapping):
                raise RetriableError(f"reconciliation poll: members not read: {answer.reason}")
            page = [m for m in answer.body.get("members") or [] if isinstance(m, Mapping)]
            yield page
            offset += len(page)
            total = answer.body.get("total_items")
            if not page or not isinstance(total, int) or offset >= total:
                return
