"""``mailsync check``: validate everything before anything runs on it.

In order: the rule file; the sources file, and that it provides every action
and fact the rules read (the entity list query is probed, without rows, when a
database is configured); then, when credentials and an audience are
configured, Mailchimp itself: the key works, the audience exists, and every
merge tag the rules push exists with a suitable type (``--fix`` creates the
missing ones). Without credentials the Mailchimp part is skipped, and the
output says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from sync.cli._common import EXIT_INVALID, config_option, handle_errors
from sync.config import load_config
from sync.daemon import contract_problems, has_credentials
from sync.exceptions import RulesError
from sync.mailchimp import (
    MailchimpSettings,
    check_audience,
    check_key,
    fix_merge_fields,
    make_client,
)
from sync.rules import Ruleset
from sync.schema import load_rules
from sync.source_reader import SourceReader
from sync.sources import check_contract, load_sources


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
    for entity in ruleset.entities.values():
        click.echo(
            f"{rules_file}: entity {entity.name}: {len(entity.states)} statuses entered by "
            f"{entity.mode.value}, {len(entity.status_names)} reported status names, "
            f"{len(entity.merge_fields)} merge fields"
        )
    click.echo(f"{rules_file}: OK")

    sources_file = Path(sources_path) if sources_path else config.sources
    if sources_path or (sources_file.exists() and rules_path is None):
        _check_sources(ruleset, sources_file, config.database)
    else:
        click.echo("sources: not checked (no sources file given)")

    _check_mailchimp(ruleset, config.mailchimp.list_id, config.mailchimp.base_url, fix)


def _check_sources(ruleset: Ruleset, sources_file: Path, database: str | None) -> None:
    sources = load_sources(sources_file)
    if database:
        with SourceReader(sources, database) as reader:
            problems = contract_problems(ruleset, sources, reader, datetime.now(UTC))
        how = "against the database"
    else:
        # Without a database the list query's identity columns are unknown:
        # string facts may come from it, so only the others are checked.
        problems = []
        for entity in ruleset.entities.values():
            if entity.name in sources.entities:
                problems += check_contract(
                    sources,
                    entity.name,
                    actions=tuple(entity.actions),
                    facts=tuple(f for f, t in entity.facts.items() if t.value != "string"),
                )
        how = "without a database (identity columns not probed)"
    if problems:
        raise RulesError(problems)
    click.echo(f"{sources_file}: OK, provides every action and fact the rules read ({how})")


def _check_mailchimp(
    ruleset: Ruleset, list_id: str | None, base_url: str | None, fix: bool
) -> None:
    if not list_id or not has_credentials():
        missing = "MAILCHIMP_LIST_ID" if not list_id else "MAILCHIMP_API_KEY"
        click.echo(f"Mailchimp: skipped (no {missing} configured)")
        return
    settings = MailchimpSettings.from_env(list_id, host=base_url)
    client = make_client(settings)
    problems = check_key(client)
    if problems:
        _fail(problems)
    wanted = {f.tag: f.type for e in ruleset.entities.values() for f in e.merge_fields}
    if fix:
        for done in fix_merge_fields(client, list_id, wanted):
            click.echo(f"Mailchimp: {done}")
    problems = check_audience(client, list_id, wanted)
    if problems:
        if not fix:
            problems.append("run `mailsync check --fix` to create the missing merge fields")
        _fail(problems)
    click.echo(
        f"Mailchimp: OK, audience {list_id} has the {len(wanted)} merge fields the rules push"
    )


def _fail(messages: list[str]) -> None:
    for message in messages:
        click.echo(f"Mailchimp: {message}", err=True)
    raise click.exceptions.Exit(EXIT_INVALID)
