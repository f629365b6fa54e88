"""What the read-only commands report, from the operator's settings.

``explain`` (``mailsync explain``): the story of one entity, found in the
sources by email address or id. ``status_report`` (``mailsync status``):
the state store at a glance. ``opt_outs`` (``mailsync unsubscribes``): who
unsubscribed or was cleaned in Mailchimp, with the entities feeding them.
Each opens what it reads and closes it before returning; none writes
anything but the state store's migrations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.daemon.config import Config
from sync.daemon.runtime import load_checked
from sync.evaluate.explain import Explanation, explain_entity, find_records
from sync.exceptions import ConfigurationError
from sync.mailchimp.ledger import AudienceProblem
from sync.mailchimp.reconciliation import WATERMARK as POLL_WATERMARK
from sync.rules.schema import load_rules
from sync.sources.reader import SourceReader
from sync.state.cycles import Cycle as StoredCycle
from sync.state.store import StateStore


def explain(
    config: Config,
    who: str,
    *,
    now: datetime,
    entity_type: str | None = None,
    limit: int = 50,
) -> list[Explanation]:
    """The explanation of each entity ``who`` (an email address or an entity
    id) is, in every type (or ``entity_type`` only): its timeline, current
    status, next change, merge fields, events and what Mailchimp accepted."""
    ruleset, sources = load_checked(config)
    types = [entity_type] if entity_type else list(ruleset.entities)
    for name in types:
        if name not in ruleset.entities:
            raise ConfigurationError(f"no entity type {name!r} in {config.rules}")
    state = StateStore(config.state, schema=config.state_schema)
    state.migrate()
    with SourceReader(sources, config.require_database()) as reader:
        found = find_records(who, types, sources, reader, state, now)
    try:
        explanations = [
            explain_entity(
                ruleset.entity(name),
                record,
                now,
                state,
                limit=limit,
                events_since=now - config.daemon.events_max_age,
            )
            for name, record in found
        ]
    finally:
        state.close()
    if not explanations:
        raise ConfigurationError(f"no entity {who!r} in the sources ({', '.join(types)})")
    return explanations


@dataclass
class StatusReport:
    """What the state store knows at ``now``, for ``mailsync status``."""

    now: datetime
    #: entity type -> status -> entities in it
    statuses: dict[str, dict[str, int]]
    due: int
    transient: int
    permanent: int
    #: the latest cycles, newest first
    cycles: list[StoredCycle]
    audience: list[AudienceProblem]
    mailchimp_side: dict[str, Any]
    #: ``/batches`` jobs left running: job id -> (submitted at, operations, members)
    running: dict[str, tuple[datetime, int, int]] = field(default_factory=dict)

    @property
    def last_good(self) -> str | None:
        """When the last successful cycle started."""
        good = [c for c in self.cycles if c.ok]
        return good[0].started_at.isoformat() if good else None

    def as_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "statuses": self.statuses,
            "due": self.due,
            "failed_pushes": {"transient": self.transient, "permanent": self.permanent},
            "audience_problems": [
                {
                    "merge_tag": p.tag,
                    "reason": p.reason,
                    "values_not_kept": p.members,
                    "first_seen_at": (p.first_seen_at or p.seen_at).isoformat(),
                    "last_seen_at": p.seen_at.isoformat(),
                }
                for p in self.audience
            ],
            "jobs_left_running": [
                {
                    "batch_id": batch_id,
                    "submitted_at": at.isoformat(),
                    "operations": operations,
                    "members": members,
                }
                for batch_id, (at, operations, members) in self.running.items()
            ],
            "last_successful_cycle": self.last_good,
            "mailchimp_side": self.mailchimp_side,
            "last_cycles": [
                {
                    "started_at": c.started_at.isoformat(),
                    "ok": c.ok,
                    "full": c.counts.get("full"),
                    "duration_s": c.counts.get("duration_s"),
                }
                for c in self.cycles[:5]
            ],
        }

    def lines(self) -> list[str]:
        out: list[str] = []
        for name, counts in self.statuses.items():
            out.append(f"{name}: {sum(counts.values())} entities")
            for status_name, count in counts.items():
                out.append(f"  {status_name:<32} {count}")
        out.append(f"due now: {self.due}")
        out.append(
            f"failed pushes: {self.transient} transient (will retry), {self.permanent} permanent"
        )
        for batch_id, (at, operations, members) in self.running.items():
            out.append(
                f"/batches job {batch_id} left running since {at.isoformat()}: {operations} "
                f"operations for {members} members (the next cycle collects it once finished)"
            )
        if self.audience:
            out.append(
                f"AUDIENCE PROBLEMS: {len(self.audience)} merge tag(s) missing from the audience"
            )
            for p in self.audience:
                since = (p.first_seen_at or p.seen_at).isoformat()
                out.append(f"  {p.tag}: since {since}, {p.members} value(s) not kept last time")
                out.append(f"    {p.reason}")
        out.append(f"last successful cycle: {self.last_good or 'never'}")
        mailchimp_side = self.mailchimp_side
        side = mailchimp_side["statuses"]
        changed = ", ".join(f"{n} {s}" for s, n in side.items() if s != "subscribed") or "nothing"
        out.append(
            f"changed in Mailchimp: {changed}; "
            f"{mailchimp_side['addresses_moved']} addresses moved "
            f"(last webhook: {mailchimp_side['last_webhook_at'] or 'never'}, "
            f"polled up to: {mailchimp_side['poll_watermark'] or 'never'})"
        )
        return out


def status_report(config: Config, *, now: datetime) -> StatusReport:
    """Counts per status, entities due, pending and failed pushes, audience
    problems (merge tags missing from the audience), the latest cycles."""
    ruleset = load_rules(config.rules)
    state = StateStore(config.state, schema=config.state_schema)
    try:
        state.migrate()
        statuses = {
            name: {str(k): v for k, v in sorted(state.status_counts(name).items(), key=str)}
            for name in ruleset.entities
        }
        due = state.count_due(now)
        transient = len(state.failures(permanent=False))
        permanent = len(state.failures(permanent=True))
        cycles = state.cycles(limit=100)
        audience = state.audience_problems()
        mailchimp_side = state.mailchimp_summary()
        mailchimp_side["poll_watermark"] = state.get_watermark(POLL_WATERMARK)
        running = {
            batch_id: (ops[0].submitted_at, len(ops), len({o.email for o in ops}))
            for batch_id, ops in state.running_operations().items()
        }
    finally:
        state.close()
    return StatusReport(
        now, statuses, due, transient, permanent, cycles, audience, mailchimp_side, running
    )


def opt_outs(config: Config, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Members now unsubscribed or cleaned in Mailchimp (those whose status
    changed at or after ``since``), oldest first, each with its previous
    addresses and the entities of the application that feed it."""
    state = StateStore(config.state, schema=config.state_schema)
    try:
        state.migrate()
        opted_out = state.mailchimp_opt_outs(since)
        emails = [m.email for m in opted_out]
        previous = state.mailchimp_previous_addresses(emails)
        entities = state.entities_by_email(
            [*emails, *(old for olds in previous.values() for old in olds)]
        )
    finally:
        state.close()
    rows: list[dict[str, Any]] = []
    for m in opted_out:
        addresses = [m.email, *previous.get(m.email, [])]
        rows.append(
            {
                "email": m.email,
                "status": m.status,
                "reason": m.reason,
                "at": m.status_at.isoformat() if m.status_at else None,
                "source": m.source,
                "previous_emails": previous.get(m.email, []),
                "entities": [
                    {"type": t, "id": i} for a in addresses for t, i in entities.get(a, [])
                ],
            }
        )
    return rows
