"""Page times of the dashboard on a state store of N entities (default 1,000,000).

Builds a SQLite state store the size of a large audience (entities spread over
the 48 statuses of rules.yaml, 90 days of hourly history, 200 cycles, 5,000
failed pushes), opens it read-only as `mailsync dashboard` does, and times
each page through ``Dashboard.handle`` (the code both servers call), cold
then warm: the median of the warm runs is reported.

    python benchmarks/dashboard.py --entities 1000000 --store /tmp/dash-bench.sqlite

The Person page needs the application database for the explain timeline; it
is timed here on the stored state only (the lookup by email through the
index), which is the part that grows with the state store.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sync.daemon import history
from sync.daemon.cycle_summary import CycleSummary
from sync.dashboard import Dashboard, ReadOnlyStore
from sync.rules.schema import load_rules
from sync.state.store import StateStore

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def build(path: Path, entities: int) -> None:
    if path.exists():
        path.unlink()
    store = StateStore(f"sqlite:///{path}")
    store.migrate()
    statuses = load_rules(ROOT / "rules.yaml").entity("user").status_names
    with store.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("CREATE TEMP TABLE st (k INTEGER PRIMARY KEY, name TEXT)")
        raw.executemany("INSERT INTO st VALUES (?, ?)", list(enumerate(statuses)))
        # Timestamps as SQLite stores them (naive UTC text), spread over 60 days.
        raw.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO entity_state SELECT 'user', CAST(i AS TEXT), 'u' || i || '@example.com', "
            "st.name, st.name, datetime(?, '-' || (i % 60) || ' days'), "
            "datetime(?, '-' || (i % 1440) || ' hours'), "
            "datetime(?, '+' || (i % 30) || ' days'), ? "
            "FROM n JOIN st ON st.k = i % ?",
            (entities, NOW.strftime("%Y-%m-%d %H:%M:%S"), NOW.strftime("%Y-%m-%d %H:%M:%S"),
             NOW.strftime("%Y-%m-%d %H:%M:%S"), NOW.strftime("%Y-%m-%d %H:%M:%S"),
             len(statuses)),
        )  # fmt: skip
        hours = 90 * 24
        # The latest point is what the daemon writes after its last cycle: the real counts.
        live = dict(raw.execute(
            "SELECT status, count(*) FROM entity_state WHERE entity_type = 'user' GROUP BY status"
        ).fetchall())  # fmt: skip
        raw.executemany(
            "INSERT INTO status_history VALUES ('user', 'hour', ?, ?, ?)",
            [((NOW - timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S.000000"), s,
              live[s] if h == 0 else entities // len(statuses) - h % 7)
             for h in range(hours) for s in statuses],
        )  # fmt: skip
        raw.execute(
            "INSERT INTO watermark VALUES ('status_history_at', ?, ?)",
            (NOW.isoformat(), NOW.strftime("%Y-%m-%d %H:%M:%S.000000")),
        )
        raw.executemany(
            "INSERT INTO transition_history VALUES ('user', 'hour', ?, ?, ?, ?)",
            [((NOW - timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S.000000"), a, b, 40)
             for h in range(hours) for a, b in itertools.pairwise(statuses)],
        )  # fmt: skip
        counts = {"full": False, "entities_read": {"user": 5000}, "members_pushed": 1200,
                  "api_calls": {"success": 3}, "duration_s": 4.2, "backlog": 0}  # fmt: skip
        raw.executemany(
            "INSERT INTO cycle (started_at, finished_at, ok, counts_json) VALUES (?, ?, 1, ?)",
            [((NOW - timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.000000"),
              (NOW - timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.000000"),
              json.dumps({**counts, "now": (NOW - timedelta(minutes=i)).isoformat()}))
             for i in reversed(range(200))],
        )  # fmt: skip
        raw.executemany(
            "INSERT INTO push VALUES "
            "(?, 'failed', 'Member In Compliance State', ?, 'f', 1, ?, NULL)",
            [(f"u{i}@example.com", i % 2, NOW.strftime("%Y-%m-%d %H:%M:%S.000000"))
             for i in range(1, 5001)],
        )  # fmt: skip
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    store.close()


def measure(path: Path, runs: int) -> dict[str, dict[str, float]]:
    ruleset = load_rules(ROOT / "rules.yaml")
    app = Dashboard(ReadOnlyStore(f"sqlite:///{path}"), lambda: ruleset, clock=lambda: NOW,
                    rules_file=ROOT / "rules.yaml")  # fmt: skip
    pages = {
        "lifecycle": "/lifecycle",
        "lifecycle, counted live (no history)": "/lifecycle",
        "status (a sample of 50)": "/status?entity=user&status=registered_J7",
        "trends (30 days)": "/trends?entity=user&days=30",
        "trends (90 days)": "/trends?entity=user&days=90",
        "trends (a year)": "/trends?entity=user&days=365",
        "person (by email, stored state)": "/person?q=u777@example.com",
        "operations": "/operations",
    }
    results: dict[str, dict[str, float]] = {}
    try:
        for name, target in pages.items():
            times = []
            app.store.has_history = "no history" not in name
            for _ in range(runs + 1):
                start = time.perf_counter()
                response = app.handle("GET", target, {})
                times.append((time.perf_counter() - start) * 1000)
                assert response.status == 200, response.body[:300]
            results[name] = {"cold_ms": round(times[0], 1),
                             "median_ms": round(statistics.median(times[1:]), 1)}  # fmt: skip
    finally:
        app.close()
    return results


def measure_record(path: Path, runs: int = 3) -> list[float]:
    """What the daemon pays after each cycle to record the history point
    (counts per status: a GROUP BY over the store; 20,000 moves), on a copy."""
    copy = path.with_suffix(".record.sqlite")
    shutil.copyfile(path, copy)
    ruleset = load_rules(ROOT / "rules.yaml")
    store = StateStore(f"sqlite:///{copy}")
    times = []
    try:
        for i in range(runs):
            summary = CycleSummary(now=NOW + timedelta(hours=i + 1), full=False)
            summary.status_changes = Counter({("user", "registered_H24"): 20_000})
            summary.changed = [
                ("user", str(j), "registered", "registered_H24") for j in range(10_000)
            ]
            start = time.perf_counter()
            history.record_cycle(store, ruleset, summary)
            times.append(round((time.perf_counter() - start) * 1000, 1))
    finally:
        store.close()
        copy.unlink()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/dash-bench.sqlite"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="Keep an existing store file.")
    args = parser.parse_args()
    if not (args.reuse and args.store.exists()):
        started = time.perf_counter()
        build(args.store, args.entities)
        print(f"built {args.entities:,} entities in {time.perf_counter() - started:.1f}s")
    for name, figures in measure(args.store, args.runs).items():
        cold, median = figures["cold_ms"], figures["median_ms"]
        print(f"{name:<36} cold {cold:>8.1f} ms   median {median:>8.1f} ms")
    print("history point recorded after a cycle (ms):", measure_record(args.store))


if __name__ == "__main__":
    main()
