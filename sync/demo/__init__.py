"""Demo applications: a realistic schema and deterministic synthetic data per example.

mailsync reads an application's own database. To try it (and to benchmark
it) without one, ``mailsync demo-data`` creates the schema of one of the
three reference applications and fills it with plausible data:

* ``blousebrothers`` (``blousebrothers.py``): marketplace of case files;
* ``littleworld`` (``littleworld.py``): language-learning volunteer matching;
* ``rallia`` (``rallia.py``): sports matches with participants.

Each example module exposes ``NAME``, ``metadata`` (SQLAlchemy Core tables)
and ``generate(n_users, seed, now) -> Iterator[Batch]``; ``load_demo`` writes
the batches with ``writer.BulkWriter``. The matching ``sources.yaml`` files
live at the repository root and in ``examples/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from sync.demo import blousebrothers, littleworld, rallia
from sync.demo.synthetic import Batch, epoch
from sync.demo.writer import BulkWriter
from sync.exceptions import ConfigurationError


@dataclass(frozen=True)
class Example:
    name: str
    metadata: sa.MetaData
    generate: Callable[[int, int, int], Iterator[Batch]]


EXAMPLES: dict[str, Example] = {
    module.NAME: Example(module.NAME, module.metadata, module.generate)
    for module in (blousebrothers, littleworld, rallia)
}


def load_demo(
    url: str | sa.URL,
    example: str,
    *,
    users: int,
    seed: int,
    now: datetime,
    replace: bool = False,
) -> dict[str, int]:
    """Create ``example``'s schema at ``url`` and fill it; returns rows per table.

    Refuses to touch existing tables of the same names unless ``replace``
    (which drops them first): demo data must never land in a real database
    by accident.
    """
    if example not in EXAMPLES:
        raise ConfigurationError(
            f"unknown example {example!r} (choose from {', '.join(sorted(EXAMPLES))})"
        )
    if now.tzinfo is None:
        raise ConfigurationError("--now must carry a time zone offset (e.g. Z)")
    if users < 0:
        raise ConfigurationError("--users must be zero or more")
    spec = EXAMPLES[example]
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            existing = set(sa.inspect(conn).get_table_names()) & set(spec.metadata.tables)
            if existing and not replace:
                raise ConfigurationError(
                    f"the database already has table(s) {', '.join(sorted(existing))};"
                    " pass --replace to drop and recreate them"
                )
            if existing:
                _drop_demo_tables(conn)
            spec.metadata.create_all(conn)
            writer = BulkWriter(conn)
            return writer.write_all(spec.generate(users, seed, epoch(now)))
    finally:
        engine.dispose()


def _drop_demo_tables(conn: sa.Connection) -> None:
    """Drop every demo table present, whichever example created it.

    The examples share table names (``users``, ``matches``) but not their
    foreign keys, so replacing one example by another must drop all of them,
    children first; reflecting what is there gives that order.
    """
    names = {name for example in EXAMPLES.values() for name in example.metadata.tables}
    present = names & set(sa.inspect(conn).get_table_names())
    reflected = sa.MetaData()
    reflected.reflect(conn, only=sorted(present))
    reflected.drop_all(conn)
