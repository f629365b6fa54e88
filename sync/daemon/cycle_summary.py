"""What a cycle did: the counts, examples and push totals of ``CycleSummary``.

One summary per cycle, filled in as the cycle goes: read by the log line,
``mailsync once``, the metrics, the dashboard's history and ``mailsync plan``.
Memory stays bounded whatever the population: counters, and at most
``MAX_CHANGED_KEPT`` examples of status changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sync.mailchimp.summary import PushSummary

#: How many individual status changes a cycle summary keeps as examples.
MAX_CHANGED_KEPT = 10_000


@dataclass
class CycleSummary:
    """What a cycle did, for the log line, ``mailsync once`` and the metrics."""

    now: datetime
    full: bool
    dry_run: bool = False
    entities_read: Counter[str] = field(default_factory=Counter)
    entities_failed: Counter[str] = field(default_factory=Counter)
    #: Of the entities read, those left alone without decoding their row:
    #: the same row digest as when last settled (``sync.daemon.derive``).
    entities_settled: Counter[str] = field(default_factory=Counter)
    status_changes: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    #: (entity type, status before, status after) -> how many entities moved
    #: so (before None: new to the state store).
    transitions: Counter[tuple[str, str | None, str | None]] = field(default_factory=Counter)
    #: (entity type, id, status before, status after) of the first
    #: ``MAX_CHANGED_KEPT`` changes: enough to show examples, bounded whatever
    #: the population (``status_changes`` has the counts); or, with
    #: ``examples_per_transition``, that many of each transition (a preview
    #: shows every transition's examples, not only the commonest).
    changed: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    examples_per_transition: int | None = None
    #: entity type -> "sql" or "engine": how the type was evaluated.
    evaluated_by: dict[str, str] = field(default_factory=dict)
    #: Evaluations written to the state store (proportional to change).
    evaluations_written: int = 0
    #: Entities no longer listed by the sources, forgotten in this cycle.
    deleted: Counter[str] = field(default_factory=Counter)
    #: Members unsubscribed or archived because their entity was deleted.
    removed: Counter[str] = field(default_factory=Counter)
    #: Member addresses changed in Mailchimp (old, new).
    address_changes: list[tuple[str, str]] = field(default_factory=list)
    #: Events that happened before the state store went live: not sent.
    events_skipped: int = 0
    events_since: datetime | None = None
    push: PushSummary = field(default_factory=PushSummary)
    backlog: int = 0
    duration_s: float = 0.0
    #: Seconds the pushes took (sending, and recording what Mailchimp
    #: accepted), and how many of them the cycle spent waiting for one
    #: instead of deriving (``sync.daemon.push``).
    push_s: float = 0.0
    push_wait_s: float = 0.0
    #: Members with operations in ``/batches`` jobs left running when the
    #: cycle ended (this cycle's or earlier ones').
    members_in_running_jobs: int = 0
    stopped: bool = False

    def note_change(
        self, entity_type: str, ident: str, before: str | None, after: str | None
    ) -> None:
        """An entity whose status changed (or is new: ``before`` None)."""
        self.status_changes[(entity_type, after)] += 1
        self.transitions[(entity_type, before, after)] += 1
        limit = self.examples_per_transition
        if limit is None:
            keep = len(self.changed) < MAX_CHANGED_KEPT
        else:
            keep = self.transitions[(entity_type, before, after)] <= limit
        if keep:
            self.changed.append((entity_type, ident, before, after))

    def absorb(self, push: PushSummary) -> None:
        total = self.push
        total.dry_run = push.dry_run
        total.considered += push.considered
        total.pushed += push.pushed
        total.unchanged += push.unchanged
        total.held_back += push.held_back
        total.archived += push.archived
        total.failed += push.failed
        total.events_sent += push.events_sent
        total.events_confirmed += push.events_confirmed
        total.events_resent += push.events_resent
        total.events_unconfirmed += push.events_unconfirmed
        total.events_planned += push.events_planned
        for kind, count in push.calls.items():
            total.calls[kind] = total.calls.get(kind, 0) + count
        total.failures.extend(push.failures)
        for tag, count in push.missing_merge_tags.items():
            total.missing_merge_tags[tag] = total.missing_merge_tags.get(tag, 0) + count
        total.invalid_values += push.invalid_values
        total.not_kept.extend(push.not_kept)
        total.running_members.extend(push.running_members)
        total.held_running += push.held_running
        total.collected += push.collected

    def counts(self) -> dict[str, object]:
        """A JSON-able record of the cycle (stored with it in the state store)."""
        return {
            "full": self.full,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "entities_read": dict(self.entities_read),
            "entities_failed": dict(self.entities_failed),
            "entities_settled": dict(self.entities_settled),
            "evaluated_by": dict(self.evaluated_by),
            "status_changes": {
                f"{entity}:{status}": n for (entity, status), n in self.status_changes.items()
            },
            "evaluations_written": self.evaluations_written,
            "deleted": dict(self.deleted),
            "removed": dict(self.removed),
            "address_changes": len(self.address_changes),
            "members_considered": self.push.considered,
            "members_pushed": self.push.pushed,
            "members_failed": self.push.failed,
            "members_archived": self.push.archived,
            "events_sent": self.push.events_sent,
            "events_skipped": self.events_skipped,
            "events_confirmed": self.push.events_confirmed,
            "events_resent": self.push.events_resent,
            "events_unconfirmed": self.push.events_unconfirmed,
            "members_left_running": len(set(self.push.running_members)),
            "members_in_running_jobs": self.members_in_running_jobs,
            "batch_operations_collected": self.push.collected,
            "api_calls": dict(self.push.calls),
            "missing_merge_tags": dict(self.push.missing_merge_tags),
            "merge_values_not_json": self.push.invalid_values,
            "backlog": self.backlog,
            "duration_s": round(self.duration_s, 3),
            "stopped": self.stopped,
        }

    def lines(self) -> list[str]:
        kind = "full" if self.full else "incremental"
        read = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_read.items())) or "nothing"
        out = [f"{kind} cycle at {self.now.isoformat()}: read {read} in {self.duration_s:.2f}s"]
        if self.entities_settled:
            settled = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_settled.items()))
            out.append(f"unchanged since they were last settled (same row digest): {settled}")
        if self.dry_run:
            out.append("DRY RUN: nothing was written to the state store")
        if self.entities_failed:
            failed = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_failed.items()))
            out.append(f"records that could not be evaluated: {failed} (see the log)")
        if self.status_changes:
            out.append("statuses entered:")
            for (entity, status), n in sorted(
                self.status_changes.items(), key=lambda item: (item[0][0], str(item[0][1]))
            ):
                out.append(f"  {entity} {status or '(none)'}: {n}")
        else:
            out.append("no status changed")
        for entity_type, n in sorted(self.deleted.items()):
            out.append(f"{n} {entity_type} no longer listed by the sources: forgotten")
        for how, n in sorted(self.removed.items()):
            out.append(f"{n} members of deleted entities: {how}d in Mailchimp")
        for old, new in self.address_changes[:10]:
            out.append(f"address changed: {old} -> {new}")
        if self.events_skipped:
            since = self.events_since.isoformat() if self.events_since else "?"
            out.append(
                f"{self.events_skipped} past events not sent: they happened before mailsync "
                f"went live ({since}); `--backfill-events 7d` sends the last 7 days"
            )
        out.extend(self.push.lines())
        if self.backlog:
            out.append(f"backlog: {self.backlog} due entities left for the next cycle")
        if self.stopped:
            out.append("stopped early on request; the next cycle picks up the rest")
        return out
