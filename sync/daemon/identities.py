"""Identity changes and deletions: an entity's address changed, or it is gone.

An entity whose address changed gets its member's address changed in
Mailchimp, and keeps its history (no second member is created). A full pass
also finds the entities the sources no longer list and forgets them
(``status`` stops counting them); their members stay in Mailchimp, or are
unsubscribed or archived (``daemon.on_delete``) when no other entity feeds
them. With ``record=False`` (a dry run) nothing is changed: the summary
counts what would be.
"""

from __future__ import annotations

import logging

from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.push import Sink
from sync.state.store import StateStore

#: The cycle's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.cycle")


class IdentityChanges:
    """Address changes and deletions found by one cycle."""

    def __init__(
        self,
        sink: Sink,
        state: StateStore,
        summary: CycleSummary,
        *,
        record: bool,
        on_delete: str = "keep",
    ) -> None:
        self.sink = sink
        self.state = state
        self.summary = summary
        self.record = record
        self.on_delete = on_delete

    def change_address(self, old: str, new: str) -> None:
        """The application changed an entity's address: change the member's,
        so that it keeps its history and no second member is created."""
        self.summary.address_changes.append((old, new))
        if not self.record:
            log.info("DRY RUN: would change the address %s to %s", old, new)
            return
        if self.sink.change_address(old, new):
            self.state.move_member(old, new)

    def forget_missing(self, entity_type: str, seen: set[str], ids: list[str] | None) -> None:
        """Entities stored (or, in a tick, asked for) but not listed any more
        were deleted in the application. Their members stay in Mailchimp
        (``on_delete: keep``), or are unsubscribed or archived when no other
        entity feeds them."""
        asked = self.state.entity_ids(entity_type) if ids is None else set(ids)
        gone = sorted(asked - seen)
        if ids is not None and gone:
            gone = sorted(self.state.stored_rows(entity_type, gone))
        if gone:
            self.forget(entity_type, gone)

    def forget(self, entity_type: str, gone: list[str]) -> None:
        """Stored entities not listed any more: forgotten, and their members
        kept, unsubscribed or archived (``on_delete``)."""
        if not self.record:
            # A dry run (or a preview) says how many it would forget.
            self.summary.deleted[entity_type] += len(gone)
            return
        emails = {r.email for r in self.state.stored_rows(entity_type, gone).values() if r.email}
        self.summary.deleted[entity_type] += self.state.forget_entities(entity_type, gone)
        log.info("%s: %d entities no longer listed, forgotten", entity_type, len(gone))
        if self.on_delete == "keep" or not emails:
            return
        still_fed = {email for email in emails if self.state.entity_ids_by_email([email])}
        for email in sorted(emails - still_fed):
            if self.sink.remove_member(email, self.on_delete):
                self.summary.removed[self.on_delete] += 1
