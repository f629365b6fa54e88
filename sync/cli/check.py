"""``mailsync check``: validate everything before anything runs on it.

The checks and their order are in ``sync.daemon.check``; this command prints
their lines, and the Mailchimp problems on stderr (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from sync.cli._common import EXIT_INVALID, config_option, handle_errors
from sync.daemon.check import (
    MailchimpCheckFailed,
    check_mailchimp,
    check_sources,
    rules_lines,
    sources_file,
)
from sync.daemon.config import load_config
from sync.rules.schema import load_rules


@click.command()
@config_option
@click.option(
    "--rules",
    "rules_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="The rule file to check (default: from the settings, else rules.yaml).",
)
@click.option(
    "--sources",
    "sources_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="The sources file to check (default: from the settings, if it exists).",
)
@click.option("--fix", is_flag=True, help="Create missing merge fields in the audience.")
@handle_errors
def check(
    config_path: str | None, rules_path: str | None, sources_path: str | None, fix: bool
) -> None:
    """Check the rules, the sources and the Mailchimp audience.

    Exits 0 when everything checked is valid, 2 with every problem when not.
    Each problem names the file, the line, the path inside the file, what was
    expected and what was found. Warnings (such as a status nothing can
    reach) are printed but do not fail the check.
    """
    config = load_config(config_path)
    rules_file = Path(rules_path) if rules_path else config.rules
    ruleset = load_rules(rules_file)
    for warning in ruleset.warnings:
        click.echo(str(warning), err=True)
    for line in rules_lines(ruleset, rules_file):
        click.echo(line)

    found = sources_file(sources_path, rules_path, config.sources)
    if found is not None:
        for line in check_sources(ruleset, found, config.database):
            click.echo(line)
    else:
        beside = Path(rules_path).parent if rules_path else Path()
        click.echo(
            f"sources: not checked (no sources.yaml in {beside.resolve()}; give --sources FILE)"
        )

    try:
        for line in check_mailchimp(
            ruleset, config.mailchimp.list_id, config.mailchimp.base_url, fix
        ):
            click.echo(line)
    except MailchimpCheckFailed as exc:
        for message in exc.messages:
            click.echo(f"Mailchimp: {message}", err=True)
        raise click.exceptions.Exit(EXIT_INVALID) from None
