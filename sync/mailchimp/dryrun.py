"""The dry-run sink: computes the same plan and writes it as JSON lines,
sending and recording nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO

from sync.mailchimp.caller import json_safe
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.push_plan import plan_pushes
from sync.mailchimp.sink_config import SinkConfig
from sync.mailchimp.summary import PushSummary
from sync.records import DesiredMember

log = logging.getLogger(__name__)


class DryRunSink:
    """Writes what would be sent as JSON lines; sends and records nothing."""

    def __init__(
        self,
        ledger: PushLedger,
        stream: IO[str],
        config: SinkConfig | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.stream = stream
        self.config = config or SinkConfig()
        self.clock = clock

    def remove_member(self, email: str, how: str) -> bool:
        self.stream.write(json.dumps({"dry_run": True, "on_delete": how, "email": email}) + "\n")
        return False

    def change_address(self, old: str, new: str) -> bool:
        self.stream.write(
            json.dumps({"dry_run": True, "change_address": {"from": old, "to": new}}) + "\n"
        )
        return False

    def collect_running(self) -> PushSummary:
        """Nothing: a dry run collects no job (it would record answers)."""
        return PushSummary(dry_run=True)

    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        plan = plan_pushes(members, self.ledger, self.clock())
        self.stream.write(
            json.dumps(
                {
                    "dry_run": True,
                    "note": "DRY RUN: nothing is sent to Mailchimp "
                    "and nothing is recorded as pushed",
                }
            )
            + "\n"
        )
        for p in plan.pushes:
            line = {
                "dry_run": True,
                "email": p.email,
                "new_member": not p.known,
                "status_if_new": self.config.status_if_new if not p.known else None,
                "merge_fields": json_safe(dict(p.fields)),
                "not_sent": dict(p.invalid),
                "tags": {"add": sorted(p.tags_add), "remove": sorted(p.tags_remove)},
                "events": [
                    {
                        "key": e.key,
                        "name": e.name,
                        "occurred_at": e.occurred_at.astimezone(UTC).isoformat(),
                        "properties": dict(e.properties),
                    }
                    for e in p.events
                ],
            }
            self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        summary = PushSummary(
            dry_run=True,
            considered=plan.considered,
            unchanged=plan.unchanged,
            held_back=plan.held_back,
            pushed=len(plan.pushes),
            events_planned=sum(len(p.events) for p in plan.pushes),
        )
        for text in summary.lines():
            log.info("%s", text)
        return summary
