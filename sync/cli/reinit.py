"""``mailsync reinit``: give every entity a fresh status from current facts."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.config import load_config
from sync.daemon import load_checked, system_clock
from sync.engine import reinit_state
from sync.rules import Entity
from sync.source_reader import SourceReader
from sync.state import Baseline, StateStore


@click.command()
@config_option
@at_option
@click.option("--dry-run", is_flag=True, help="Count what each entity would get; write nothing.")
@handle_errors
def reinit(config_path: str | None, at: str | None, dry_run: bool) -> None:
    """Re-initialise: every entity enters the status its `reinit` rules give
    from current facts, now (or at --at). Actions at or before that instant
    are superseded; later ones count as usual.

    Atomic: the new baselines take effect only once all are written, so an
    interruption leaves the previous ones in force. The next cycle re-reads
    everything and pushes the new statuses.
    """
    config = load_config(config_path)
    ruleset, sources = load_checked(config)
    instant = parse_at(at) or system_clock()
    state = StateStore(config.state, schema=config.state_schema)
    state.migrate()
    try:
        with SourceReader(sources, config.require_database()) as reader:
            for entity in ruleset.entities.values():
                if not entity.reinit or entity.name not in sources.entities:
                    continue
                counts: Counter[str | None] = Counter()
                stream = _baselines(reader, entity, instant, counts)
                if dry_run:
                    for _ in stream:
                        pass
                else:
                    state.replace_baselines(entity.name, instant, stream)
                verb = "would enter" if dry_run else "entered"
                total = sum(counts.values())
                click.echo(f"{entity.name}: {total} re-initialised at {instant.isoformat()}")
                for status, count in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
                    click.echo(f"  {verb} {status or '(no status)'}: {count}")
    finally:
        state.close()
    if dry_run:
        click.echo("DRY RUN: nothing was written.")


def _baselines(
    reader: SourceReader, entity: Entity, instant: datetime, counts: Counter[str | None]
) -> Iterator[Baseline]:
    """Stream the new baselines, counting them by status, with a progress bar."""
    records = reader.read_entities(entity.name, now=instant)
    with click.progressbar(
        records, label=f"re-initialising {entity.name}", file=sys.stderr, show_pos=True
    ) as bar:
        for record in bar:
            status = reinit_state(entity, record.facts, instant)
            counts[status] += 1
            if status is not None:
                yield Baseline(record.id, status, instant)
