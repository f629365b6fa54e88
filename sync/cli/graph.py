"""``mailsync graph FILE``: draw a rule file's lifecycle from the rules themselves."""

from __future__ import annotations

import click

from sync.cli._common import handle_errors
from sync.rules.graph import FORMATS, render
from sync.rules.graph_svg import render_svg
from sync.rules.schema import load_rules
from sync.rules.validate import did_you_mean


@click.command()
@click.argument("rules_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, "svg")),
    default="mermaid",
    show_default=True,
    help="mermaid: a stateDiagram-v2 for Markdown; dot: Graphviz, render with `dot -Tsvg`; "
    "svg: drawn by mailsync in a ladder layout, no other tool needed.",
)
@click.option("--entity", help="Draw only this entity type (default: all of them).")
@handle_errors
def graph(rules_path: str, fmt: str, entity: str | None) -> None:
    """Print the diagram of the lifecycle in rule FILE.

    States, their ladders, `then` and `loop` transitions, the actions that
    enter each state, the re-initialisation and condition priority lists,
    and the events sent on entry. Exits 2 when the rules are invalid.
    """
    ruleset = load_rules(rules_path)
    if entity is not None and entity not in ruleset.entities:
        # A usage error (exit 2), raised here so the message can list what exists.
        known = ", ".join(ruleset.entities)
        raise click.BadParameter(
            f"no entity {entity!r} in {rules_path}{did_you_mean(entity, ruleset.entities)}; "
            f"entities: {known}",
            param_hint="'--entity'",
        )
    if fmt == "svg":
        click.echo(render_svg(ruleset, entity), nl=False)
        return
    click.echo(render(ruleset, fmt, entity), nl=False)
