"""``mailsync demo-data``: fill a database with one demo application's data.

Creates the schema of the chosen example (``sync/demo/``) and writes
deterministic synthetic data: the same ``--seed`` and ``--now`` give the same
rows, byte for byte. ``--now`` defaults to today at 00:00 UTC, so that two runs
on the same day agree without it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from sync.cli._common import handle_errors
from sync.database_faults import database_errors, describe
from sync.demo import EXAMPLES, load_demo
from sync.exceptions import ConfigurationError
from sync.records import parse_instant


def _parse_now(value: str | None) -> datetime:
    if value is None:
        today = datetime.now(UTC).date()
        return datetime(today.year, today.month, today.day, tzinfo=UTC)
    try:
        return parse_instant(value).astimezone(UTC)
    except ValueError as exc:
        raise ConfigurationError(f"--now: {exc}") from None


@click.command("demo-data")
@click.option(
    "--example",
    type=click.Choice(sorted(EXAMPLES)),
    required=True,
    help="Which demo application's schema and data to create.",
)
@click.option("--users", type=click.IntRange(min=0), required=True, help="How many users.")
@click.option("--db", "url", required=True, help="SQLAlchemy URL, e.g. sqlite:///demo.sqlite.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--now", "now_text", help="The instant the data leads up to (default: today 00:00Z).")
@click.option("--replace", is_flag=True, help="Drop existing demo tables first.")
@handle_errors
def demo_data(
    example: str, users: int, url: str, seed: int, now_text: str | None, replace: bool
) -> None:
    """Create a demo application's schema and fill it with synthetic data."""
    now = _parse_now(now_text)
    started = time.perf_counter()
    with database_errors(f"database {describe(url)}"):
        counts = load_demo(url, example, users=users, seed=seed, now=now, replace=replace)
    elapsed = time.perf_counter() - started
    for table, count in counts.items():
        click.echo(f"{table:>16} {count:>10}")
    total = sum(counts.values())
    click.echo(
        f"{example}: {total} rows for {users} users, seed {seed}, now "
        f"{now.isoformat().replace('+00:00', 'Z')}, in {elapsed:.1f}s"
    )
