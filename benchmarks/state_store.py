"""The state store's bulk writes and look-ups, through ``StateStore``, on a fresh store.

    python benchmarks/state_store.py --rows 20000 --state postgres [--runs 2]

The writes a cycle makes per member or entity, in the order a push makes
them: the evaluations stored (insert, then again: an update), what Mailchimp
accepted (insert, then merged over), the pushed and row digests, the events
recorded sent, their intents cleared. Then the look-ups a push plan makes
for as many members, and the diff's read of stored evaluations. Each is one
call of ``StateStore`` with ``--rows`` items; prints its wall clock and this
process's CPU seconds.
``--state postgres`` uses a schema of its own (``mailsync_state_bench``,
dropped before and after) in the database of ``--pg``; ``sqlite`` a new file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync.mailchimp.ledger import AcceptedPush, SentEvent
from sync.state.entities import EntityEvaluation
from sync.state.store import StateStore

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "mailsync_state_bench"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def writes(store: StateStore, rows: int) -> list[tuple[str, Callable[[], object]]]:
    ids = [str(i) for i in range(rows)]
    emails = [f"u{i}@example.com" for i in range(rows)]
    evaluations = [
        EntityEvaluation("user", i, e, "registered", "registered", T0, T0, T0 + timedelta(days=1))
        for i, e in zip(ids, emails, strict=True)
    ]
    accepted = [AcceptedPush(e, {"STATUS": "registered", "N": n}, T0) for n, e in enumerate(emails)]
    sent = [SentEvent(e, f"k{n}", "welcome", T0) for n, e in enumerate(emails)]
    return [
        ("evaluations stored (new)", lambda: store.upsert_evaluations(evaluations, at=T0)),
        ("evaluations stored (again)", lambda: store.upsert_evaluations(evaluations, at=T0)),
        ("accepted values (new)", lambda: store.record_accepted_many(accepted)),
        ("accepted values (merged)", lambda: store.record_accepted_many(accepted)),
        (
            "pushed and row digests",
            lambda: store.set_pushed_fingerprints(
                "user", {i: f"fp{i}" for i in ids}, {i: f"row{i}" for i in ids}
            ),
        ),
        ("events recorded sent", lambda: store.record_events_sent(sent)),
        (
            "event intents cleared",
            lambda: store.clear_event_intents([(e.email, e.key) for e in sent]),
        ),
        ("look-up: member states", lambda: store.member_states(emails)),
        ("look-up: events sent", lambda: store.sent_events(emails)),
        ("look-up: event intents", lambda: store.pending_events(emails)),
        ("look-up: Mailchimp's side", lambda: store.mailchimp_members(emails)),
        ("look-up: jobs left running", lambda: store.running_emails(emails)),
        ("look-up: stored evaluations", lambda: store.stored_rows("user", ids)),
    ]


def drop_schema(pg: str) -> None:
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    engine.dispose()


def one_run(state: str, pg: str, rows: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        if state == "postgres":
            drop_schema(pg)
            store = StateStore(pg, schema=SCHEMA)
        else:
            store = StateStore(f"sqlite:///{scratch}/state.sqlite")
        try:
            store.migrate()
            for label, write in writes(store, rows):
                wall, cpu = time.perf_counter(), time.process_time()
                write()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"  {label:28s} {wall:7.3f} s wall {cpu:7.3f} s CPU", flush=True)
        finally:
            store.close()
            if state == "postgres":
                drop_schema(pg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--state", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args(argv)
    for run in range(1, args.runs + 1):
        print(f"run {run}: {args.rows} rows, {args.state} state store", flush=True)
        one_run(args.state, args.pg, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
