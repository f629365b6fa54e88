"""``mailsync status``: what the state store knows, at a glance."""

from __future__ import annotations

import json

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.mailchimp.reconciliation import WATERMARK as POLL_WATERMARK
from sync.rules.schema import load_rules
from sync.state.store import StateStore


@click.command()
@config_option
@at_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools.")
@handle_errors
def status(config_path: str | None, at: str | None, as_json: bool) -> None:
    """Counts per status, entities due, pending and failed pushes, audience
    problems (merge tags missing from the audience), last good cycle."""
    config = load_config(config_path)
    ruleset = load_rules(config.rules)
    now = parse_at(at) or system_clock()
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
    finally:
        state.close()
    good = [c for c in cycles if c.ok]
    last_good = good[0].started_at.isoformat() if good else None
    if as_json:
        report = {
            "now": now.isoformat(),
            "statuses": statuses,
            "due": due,
            "failed_pushes": {"transient": transient, "permanent": permanent},
            "audience_problems": [
                {
                    "merge_tag": p.tag,
                    "reason": p.reason,
                    "values_not_kept": p.members,
                    "first_seen_at": (p.first_seen_at or p.seen_at).isoformat(),
                    "last_seen_at": p.seen_at.isoformat(),
                }
                for p in audience
            ],
            "last_successful_cycle": last_good,
            "mailchimp_side": mailchimp_side,
            "last_cycles": [
                {
                    "started_at": c.started_at.isoformat(),
                    "ok": c.ok,
                    "full": c.counts.get("full"),
                    "duration_s": c.counts.get("duration_s"),
                }
                for c in cycles[:5]
            ],
        }
        click.echo(json.dumps(report, indent=2))
        return
    for name, counts in statuses.items():
        click.echo(f"{name}: {sum(counts.values())} entities")
        for status_name, count in counts.items():
            click.echo(f"  {status_name:<32} {count}")
    click.echo(f"due now: {due}")
    click.echo(f"failed pushes: {transient} transient (will retry), {permanent} permanent")
    if audience:
        click.echo(f"AUDIENCE PROBLEMS: {len(audience)} merge tag(s) missing from the audience")
        for p in audience:
            since = (p.first_seen_at or p.seen_at).isoformat()
            click.echo(f"  {p.tag}: since {since}, {p.members} value(s) not kept last time")
            click.echo(f"    {p.reason}")
    click.echo(f"last successful cycle: {last_good or 'never'}")
    side = mailchimp_side["statuses"]
    changed = ", ".join(f"{n} {s}" for s, n in side.items() if s != "subscribed") or "nothing"
    click.echo(
        f"changed in Mailchimp: {changed}; "
        f"{mailchimp_side['addresses_moved']} addresses moved "
        f"(last webhook: {mailchimp_side['last_webhook_at'] or 'never'}, "
        f"polled up to: {mailchimp_side['poll_watermark'] or 'never'})"
    )
