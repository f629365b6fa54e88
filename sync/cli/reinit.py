"""``mailsync reinit``: give every entity a fresh status from current facts."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.daemon.plan import plan_reinit
from sync.daemon.runtime import load_checked
from sync.evaluate.engine import reinit_state
from sync.rules.model import Entity
from sync.sources.reader import SourceReader
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import Baseline, StateStore


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
    ruleset, sources = load_checked(config)
    instant = parse_at(at) or system_clock()
    state = StateStore(config.state, schema=config.state_schema)
    database = config.require_database()
    try:
        state.migrate()
        with (
            SourceReader(sources, database) as reader,
            SqlEvaluator(ruleset, sources, database) as sql,
        ):

            def states_of(entity: Entity) -> Iterable[tuple[str, str | None]]:
                if evaluator == "sql":
                    return sql.reinit_states(entity.name, at=instant)
                return _python_states(reader, entity, instant)

            if dry_run:
                # The same table as `mailsync plan --reinit`, from the same function.
                report = plan_reinit(
                    ruleset, sources, state, states_of, rules=config.rules, now=instant
                )
                for entity_type, total in sorted(report.entities_read.items()):
                    click.echo(
                        f"{entity_type}: would re-initialise {total} at {instant.isoformat()}"
                    )
                for line in report.table_lines():
                    click.echo(line)
                click.echo("DRY RUN: nothing was written.")
                return
            for entity in ruleset.entities.values():
                if not entity.reinit or entity.name not in sources.entities:
                    continue
                counts: Counter[str | None] = Counter()
                stream = _baselines(states_of(entity), entity, instant, counts)
                state.replace_baselines(entity.name, instant, stream)
                total = sum(counts.values())
                click.echo(f"{entity.name}: {total} re-initialised at {instant.isoformat()}")
                for status, count in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
                    click.echo(f"  entered {status or '(no status)'}: {count}")
    finally:
        state.close()


def _python_states(
    reader: SourceReader, entity: Entity, instant: datetime
) -> Iterator[tuple[str, str | None]]:
    for record in reader.read_entities(entity.name, now=instant):
        yield record.id, reinit_state(entity, record.facts, instant)


def _baselines(
    states: Iterable[tuple[str, str | None]],
    entity: Entity,
    instant: datetime,
    counts: Counter[str | None],
) -> Iterator[Baseline]:
    """Stream the new baselines, counting them by state, with a progress bar."""
    with click.progressbar(
        states, label=f"re-initialising {entity.name}", file=sys.stderr, show_pos=True
    ) as bar:
        for ident, name in bar:
            counts[name] += 1
            if name is not None:
                yield Baseline(ident, name, instant)
