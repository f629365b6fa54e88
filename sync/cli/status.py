"""``mailsync status``: what the state store knows, at a glance."""

from __future__ import annotations

import json

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.reports import status_report


@click.command()
@config_option
@at_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools.")
@handle_errors
def status(config_path: str | None, at: str | None, as_json: bool) -> None:
    """Counts per status, entities due, pending and failed pushes, audience
    problems (merge tags missing from the audience), last good cycle."""
    config = load_config(config_path)
    now = parse_at(at) or system_clock()
    report = status_report(config, now=now)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in report.lines():
        click.echo(line)
