"""``mailsync reinit``: give every entity a fresh status from current facts."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.reinit import States, preview, reinitialise
from sync.rules.model import Entity


@click.command()
@config_option
@at_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the table of stored status -> new status (as `mailsync plan --reinit`); "
    "write nothing.",
)
@click.option(
    "--evaluator",
    type=click.Choice(["sql", "python"]),
    default="sql",
    show_default=True,
    help="sql: the database computes every state in one query (reads no action);"
    " python: entity by entity through the sources' queries.",
)
@handle_errors
def reinit(config_path: str | None, at: str | None, dry_run: bool, evaluator: str) -> None:
    """Re-initialise: every entity enters the status its `reinit` rules give
    from current facts, now (or at --at). Actions at or before that instant
    are superseded; later ones count as usual.

    Atomic: the new baselines take effect only once all are written, so an
    interruption leaves the previous ones in force. The next cycle re-reads
    everything and pushes the new statuses.

    The states are computed in SQL by default (sync.sql.evaluator); the
    Python evaluator gives the same states (a parity test holds them equal)
    and also works for SQLite data in a time zone other than UTC.
    """
    config = load_config(config_path)
    instant = parse_at(at) or system_clock()
    if dry_run:
        report = preview(config, at=instant, evaluator=evaluator)
        for entity_type, total in sorted(report.entities_read.items()):
            click.echo(f"{entity_type}: would re-initialise {total} at {instant.isoformat()}")
        for line in report.table_lines():
            click.echo(line)
        click.echo("DRY RUN: nothing was written.")
        return
    for done in reinitialise(config, at=instant, evaluator=evaluator, progress=_progress_bar):
        for line in done.lines():
            click.echo(line)


def _progress_bar(entity: Entity, states: States) -> AbstractContextManager[States]:
    """The states of one type as they stream, with a progress bar on stderr."""
    return click.progressbar(
        states, label=f"re-initialising {entity.name}", file=sys.stderr, show_pos=True
    )
