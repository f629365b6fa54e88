"""``mailsync demo``'s mailsync: the daemon wired to the local Mailchimp emulator.

A ``DemoSession`` runs the real daemon's cycles (``run_once``) on the demo
workspace's settings, pushing to an emulator running in this process, on a
simulated clock the demo moves forward a day at a time. It goes live with
the week's events (as ``--backfill-events 7d`` does), so that the first cycle
shows them; a real first cycle sends none. The command prints; this module
only wires and runs.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sync.daemon.config import Config, MailchimpConfig
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.once import run_once
from sync.daemon.runtime import build_runtime
from sync.demo.workspace import Workspace
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.evaluate.explain import Explanation, explain_entity
from sync.mailchimp.audience import (
    existing_merge_fields,
    fix_merge_fields,
    wanted_merge_fields,
)
from sync.mailchimp.caller import Caller
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig


class DemoSession:
    """mailsync on the workspace ``space``, pushing to ``emulator``, with the
    clock at ``now`` (``advance`` moves it); ``close`` when done."""

    def __init__(self, space: Workspace, emulator: Emulator, now: datetime) -> None:
        self.now = now
        self.config = Config(
            rules=space.rules,
            sources=space.sources,
            database=space.database,
            state=space.state,
            mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=emulator.url),
        )
        settings = MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url)
        self.client = make_client(settings)
        self.caller = Caller(self.client, DEFAULT_LIST_ID)
        self.runtime = build_runtime(
            self.config,
            clock=self.clock,
            sink_factory=lambda state: MailchimpSink(
                self.caller, state, SinkConfig(), clock=self.clock
            ),
        )
        # The demo goes live with the week's events (`--backfill-events 7d`),
        # so that the first cycle shows them; a real first cycle sends none.
        self.runtime.backfill_events = self.config.daemon.events_max_age

    def clock(self) -> datetime:
        """The simulated clock."""
        return self.now

    def advance(self, to: datetime) -> None:
        self.now = to

    def create_merge_fields(self) -> list[str]:
        """Create the merge fields the rules push (as `mailsync check --fix`
        does); the tags created, sorted."""
        wanted = wanted_merge_fields(self.runtime.ruleset.entities.values())
        before = set(existing_merge_fields(self.client, DEFAULT_LIST_ID))
        fix_merge_fields(self.client, DEFAULT_LIST_ID, wanted)
        return sorted(set(existing_merge_fields(self.client, DEFAULT_LIST_ID)) - before)

    def cycle(self) -> tuple[CycleSummary, Counter[str]]:
        """One cycle now, and the Mailchimp calls it made by kind."""
        before = Counter(self.caller.calls)
        summary = run_once(self.runtime, now=self.now)
        return summary, Counter(self.caller.calls) - before

    def explain_example(self, summary: CycleSummary) -> Explanation | None:
        """One entity that moved in ``summary`` (preferably into a status
        with ``_`` in its name: a rung of a ladder), as `mailsync explain`
        tells it; None when nothing moved."""
        example = next(
            (c for c in summary.changed if c[3] and "_" in (c[3] or "")),
            summary.changed[0] if summary.changed else None,
        )
        if example is None:
            return None
        runtime = self.runtime
        entity = runtime.ruleset.entity(example[0])
        (record,) = runtime.reader.read_entities(example[0], now=self.now, ids=[example[1]])
        return explain_entity(
            entity,
            record,
            self.now,
            runtime.state,
            limit=8,
            events_since=self.now - self.config.daemon.events_max_age,
        )

    def close(self) -> None:
        self.runtime.close()
