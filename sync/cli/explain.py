"""``mailsync explain EMAIL|ID``: one entity's story, from the rules and the data."""

from __future__ import annotations

import json

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.runtime import load_checked
from sync.evaluate.explain import explain_entity, find_records, render_text
from sync.exceptions import ConfigurationError
from sync.sources.reader import SourceReader
from sync.state.store import StateStore


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
    ruleset, sources = load_checked(config)
    now = parse_at(at) or system_clock()
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
    if as_json:
        payload = [e.as_json() for e in explanations]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    for index, explanation in enumerate(explanations):
        if index:
            click.echo("")
        for line in render_text(explanation):
            click.echo(line)
