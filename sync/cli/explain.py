"""``mailsync explain EMAIL|ID``: one entity's story, from the rules and the data."""

from __future__ import annotations

import json

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.reports import explain as explain_who
from sync.evaluate.explain import render_text


@click.command()
@click.argument("who")
@config_option
@at_option
@click.option(
    "--entity", "entity_type", default=None, help="Entity type (default: all that match)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools.")
@click.option("--limit", default=50, show_default=True, help="Timeline entries at most.")
@handle_errors
def explain(
    who: str,
    config_path: str | None,
    at: str | None,
    entity_type: str | None,
    as_json: bool,
    limit: int,
) -> None:
    """Explain WHO (an email address or an entity id): its timeline of actions
    and timed transitions, current status and since when, the next change,
    merge fields and events, what was last pushed to Mailchimp, and any
    pending error."""
    config = load_config(config_path)
    now = parse_at(at) or system_clock()
    explanations = explain_who(config, who, now=now, entity_type=entity_type, limit=limit)
    if as_json:
        payload = [e.as_json() for e in explanations]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    for index, explanation in enumerate(explanations):
        if index:
            click.echo("")
        for line in render_text(explanation):
            click.echo(line)
