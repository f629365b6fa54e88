"""``mailsync plan``: preview a rules change, or a re-initialisation, now."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sync.cli._common import (
    EXIT_OK,
    at_option,
    config_option,
    handle_errors,
    parse_at,
)
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.plan import plan_rules, preview_reinit

#: Exit status of a plan that found changes (0: none; 2: invalid input).
EXIT_CHANGES = 3


@click.command(
    epilog="Exit status: 0 no change, 3 changes (listed), 2 invalid rules, sources or "
    "settings (the file and line are named), 1 another failure."
)
@config_option
@click.option(
    "--rules",
    "rules",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="NEW.yaml",
    help="The rules to preview (default: the rules in force).",
)
@at_option
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Examples shown per transition, and of members.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--reinit", is_flag=True, help="Preview `mailsync reinit` instead.")
@handle_errors
def plan(
    config_path: str | None,
    rules: str | None,
    at: str | None,
    samples: int,
    as_json: bool,
    reinit: bool,
) -> None:
    """Preview what a rules change would do to the live audience, now (or at
    --at), without sending or recording anything.

    It runs a full cycle under NEW.yaml against the application database and
    the state store, and lists: the entities that would move from one status
    to another (with counts and examples), the members whose merge fields
    would change, the tags and the events the next cycle would send, and an
    estimate of the Mailchimp calls. Without --rules it previews the next
    full pass under the rules in force.

    With --reinit, it lists the status each entity would enter if
    `mailsync reinit` ran now (its stored status -> its new one).
    """
    config = load_config(config_path)
    new_rules = Path(rules) if rules is not None else None
    now = parse_at(at) or system_clock()
    preview = preview_reinit if reinit else plan_rules
    report = preview(config, rules=new_rules, now=now, samples=samples)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, default=str))
    else:
        for line in report.lines():
            click.echo(line)
    if report.changed:
        raise click.exceptions.Exit(EXIT_CHANGES)
    raise click.exceptions.Exit(EXIT_OK)
