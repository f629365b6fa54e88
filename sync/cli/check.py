"""``mailsync check``: validate the rules before anything runs on them."""

from __future__ import annotations

import click

from sync.cli._common import handle_errors
from sync.schema import load_rules


@click.command()
@click.option(
    "--rules",
    "rules_path",
    default="rules.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The rule file to check.",
)
@handle_errors
def check(rules_path: str) -> None:
    """Check the rule file: exit 0 when valid, 2 with every problem when not.

    Each problem names the file, the line, the path inside the file, what was
    expected and what was found. Warnings (such as a status nothing can
    reach) are printed but do not fail the check.
    """
    ruleset = load_rules(rules_path)
    for warning in ruleset.warnings:
        click.echo(str(warning), err=True)
    for entity in ruleset.entities.values():
        click.echo(
            f"{rules_path}: entity {entity.name}: {len(entity.states)} statuses entered by "
            f"{entity.mode.value}, {len(entity.status_names)} reported status names, "
            f"{len(entity.merge_fields)} merge fields"
        )
    click.echo(f"{rules_path}: OK")
