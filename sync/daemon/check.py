"""``mailsync check``: validate everything before anything runs on it.

In order: the rule file; the sources file (given, else beside a rule file
given with ``--rules``, else the configured one), and that it provides every
action and fact the rules read; with a database configured, every query runs
for no rows in a read-only transaction and must return its columns
(``sync.sources.check``); then, when credentials and an audience are
configured, Mailchimp itself: the key works, the audience exists, and every
merge tag the rules push exists with a suitable type (``fix`` creates the
missing ones). Without credentials the Mailchimp part is skipped, and the
output says so.

Each check yields its report lines as it goes (a line is said before the
next, slower step runs); problems with the rules or sources raise
``RulesError``, problems with Mailchimp ``MailchimpCheckFailed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sync.daemon.runtime import contract_problems, has_credentials
from sync.exceptions import Problem, RulesError
from sync.mailchimp.audience import (
    check_audience,
    check_key,
    fix_merge_fields,
    wanted_merge_fields,
)
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.rules.model import Ruleset
from sync.sources.check import probe_sources
from sync.sources.model import SourcesConfig, check_contract
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources
from sync.sql.evaluator import SqlEvaluator


class MailchimpCheckFailed(Exception):
    """The key, the audience or its merge fields are not what the rules need."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def rules_lines(ruleset: Ruleset, rules_file: Path) -> list[str]:
    """What a valid rule file declares, one line per entity type."""
    out = [
        f"{rules_file}: entity {entity.name}: {len(entity.states)} statuses entered by "
        f"{entity.mode.value}, {len(entity.status_names)} reported status names, "
        f"{len(entity.merge_fields)} merge fields"
        for entity in ruleset.entities.values()
    ]
    out.append(f"{rules_file}: OK")
    return out


def sources_file(given: str | None, rules_path: str | None, configured: Path) -> Path | None:
    """The sources file to check: the one given; else, with --rules, the
    sources.yaml beside that rule file; else the configured one. None when
    that file does not exist."""
    if given:
        return Path(given)
    candidate = Path(rules_path).parent / "sources.yaml" if rules_path else configured
    return candidate if candidate.exists() else None


def check_sources(ruleset: Ruleset, sources_file: Path, database: str | None) -> Iterator[str]:
    """The sources provide what the rules read (run against ``database``
    when there is one), then how the cycles will evaluate each type."""
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
    yield f"{sources_file}: OK, provides every action and fact the rules read ({how})"
    if database:
        yield from _evaluation_lines(ruleset, sources, database)


def _evaluation_lines(ruleset: Ruleset, sources: SourcesConfig, database: str) -> Iterator[str]:
    """Say how the daemon's cycles will evaluate each entity type: in SQL,
    or with the Python engine (and why) where the rules or sources cannot be
    compiled for this database."""
    with SqlEvaluator(ruleset, sources, database) as evaluator:
        for name in ruleset.entities:
            if name not in sources.entities:
                continue
            reason = evaluator.supports(name)
            if reason is None:
                yield f"{name}: cycles evaluate in SQL"
            else:
                yield f"{name}: cycles evaluate with the Python engine ({reason})"


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


def check_mailchimp(
    ruleset: Ruleset, list_id: str | None, base_url: str | None, fix: bool
) -> Iterator[str]:
    """The key works, the audience exists and has every merge field the
    rules push (``fix``: created first when missing); skipped, and said so,
    without an audience or credentials."""
    if not list_id or not has_credentials():
        missing = "MAILCHIMP_LIST_ID" if not list_id else "MAILCHIMP_API_KEY"
        yield f"Mailchimp: skipped (no {missing} configured)"
        return
    settings = MailchimpSettings.from_env(list_id, host=base_url)
    client = make_client(settings)
    problems = check_key(client)
    if problems:
        raise MailchimpCheckFailed(problems)
    wanted = wanted_merge_fields(ruleset.entities.values())
    if fix:
        for done in fix_merge_fields(client, list_id, wanted):
            yield f"Mailchimp: {done}"
    problems = check_audience(client, list_id, wanted)
    if problems:
        if not fix:
            problems.append("run `mailsync check --fix` to create the missing merge fields")
        raise MailchimpCheckFailed(problems)
    yield f"Mailchimp: OK, audience {list_id} has the {len(wanted)} merge fields the rules push"
