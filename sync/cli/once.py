"""``mailsync once``: one full cycle, then exit with a summary."""

from __future__ import annotations

import sys

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at, parse_backfill
from sync.daemon.clock import clock_from_env
from sync.daemon.config import load_config
from sync.daemon.logs import progress_to
from sync.daemon.once import poll_mailchimp, run_once
from sync.daemon.runtime import build_runtime


@click.command()
@config_option
@at_option
@click.option(
    "--dry-run", is_flag=True, help="Write what would be sent as JSON lines; send nothing."
)
@click.option("--full", is_flag=True, help="Re-read every entity, not only what changed.")
@click.option(
    "--backfill-events",
    default=None,
    metavar="DURATION",
    help="Going live (a new state store): also send the events of this long before "
    "(e.g. 7d); by default none that happened before the first cycle.",
)
@handle_errors
def once(
    config_path: str | None,
    at: str | None,
    dry_run: bool,
    full: bool,
    backfill_events: str | None,
) -> None:
    """Run one cycle (read, evaluate, diff, push, record) and exit.

    Prints what was read, the statuses entered, the members pushed, the API
    calls by answer class and the failures. Without an audience or API key
    configured, it is a dry run, and says so.
    """
    config = load_config(config_path)
    runtime = build_runtime(config, dry_run=dry_run, out=sys.stdout, clock=clock_from_env())
    runtime.backfill_events = parse_backfill(backfill_events)
    try:
        poll_mailchimp(runtime)
        # Going live at a million users takes minutes: say how far it got.
        with progress_to(sys.stderr):
            summary = run_once(runtime, now=parse_at(at), full=True if full else None)
    finally:
        runtime.close()
    for line in summary.lines():
        click.echo(line, err=runtime.dry_run)
