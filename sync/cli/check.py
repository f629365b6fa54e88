"""``mailsync check``: validate everything before anything runs on it.

In order: the rule file; the sources file (given, else beside a rule file
given with ``--rules``, else the configured one), and that it provides every
action and fact the rules read; with a database configured, every query runs
for no rows in a read-only transaction and must return its columns
(``sync.sources.check``); then, when credentials and an audience are
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
from sync.daemon.config import load_config
from sync.daemon.runtime import contract_problems, has_credentials
from sync.exceptions import Problem, RulesError
from sync.mailchimp.audience import check_audience, check_key, fix_merge_fields, wanted_merge_fields
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.rules.model import Ruleset
from sync.rules.schema import load_rules
from sync.sources.check import probe_sources
from sync.sources.model import SourcesConfig, check_contract, load_sources
from sync.sources.reader import SourceReader
from sync.sql.evaluator import SqlEvaluator


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

    sources_file = _sources_file(sources_path, rules_path, config.sources)
    if sources_file is not None:
        _check_sources(ruleset, sources_file, config.database)
    else:
        beside = Path(rules_path).parent if rules_path else Path()
        click.echo(
            f"sources: not checked (no sources.yaml in {beside.resolve()}; give --sources FILE)"
        )

    _check_mailchimp(ruleset, config.mailchimp.list_id, config.mailchimp.base_url, fix)


def _sources_file(given: str | None, rules_path: str | None, configured: Path) -> Path | None:
    """The sources file to check: the one given; else, with --rules, the
    sources.yaml beside that rule file; else the configured one. None when
    that file does not exist."""
    if given:
        return Path(given)
    candidate = Path(rules_path).parent / "sources.yaml" if rules_path else configured
    return candidate if candidate.exists() else None


def _check_sources(ruleset: Ruleset, sources_file: Path, database: str | None) -> None:
    sources = load_sources(sources_file)
    if database:
        now = datetime.now(UTC)
        with SourceReader(sources, database) as reader:
            # Every query runs first (for no rows): a broken one is reported
            # with its line, and the contract is then checked on declarations.
            problems = probe_sources(reader, sources, tuple(ruleset.entities), now)
            if problems:
                problems += _declared_contract(ruleset, sources)
            else:
                problems = contract_problems(ruleset, sources, reader, now)
        how = "against the database: every query ran, with the columns it must return"
    else:
        problems = _declared_contract(ruleset, sources)
        how = "without a database: queries not run, identity columns not probed"
    if problems:
        raise RulesError(problems)
    click.echo(f"{sources_file}: OK, provides every action and fact the rules read ({how})")
    if database:
        _check_evaluation(ruleset, sources, database)


def _check_evaluation(ruleset: Ruleset, sources: SourcesConfig, database: str) -> None:
    """Say how the daemon's cycles will evaluate each entity type: in SQL,
    or with the Python engine (and why) where the rules or sources cannot be
    compiled for this database."""
    with SqlEvaluator(ruleset, sources, database) as evaluator:
        for name in ruleset.entities:
            if name not in sources.entities:
                continue
            reason = evaluator.supports(name)
            if reason is None:
                click.echo(f"{name}: cycles evaluate in SQL")
            else:
                click.echo(f"{name}: cycles evaluate with the Python engine ({reason})")


def _declared_contract(ruleset: Ruleset, sources: SourcesConfig) -> list[Problem]:
    # Without the list query's identity columns, string facts may come from
    # it: only the others are checked.
    problems: list[Problem] = []
    for entity in ruleset.entities.values():
        if entity.name in sources.entities:
            problems += check_contract(
                sources,
                entity.name,
                actions=tuple(entity.actions),
                facts=tuple(f for f, t in entity.facts.items() if t.value != "string"),
            )
    return problems


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
    wanted = wanted_merge_fields(ruleset.entities.values())
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
