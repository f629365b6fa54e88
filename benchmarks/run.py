"""Benchmark: every BlouseBrothers user's status in compiled SQL, against its floor and
against the original project's per-user loop.

    python benchmarks/run.py --users 1000000 --json out.json [--pg URL] [--seed 1]

On PostgreSQL, the demo data of ``sync.demo`` (about 5.5 action rows per
user) is generated once into a dedicated database named after N and the
seed (``mailsync_bench_<N>_s<seed>``), and reused when it is already there.
One run measures, in this process:

* ``scan_limit_s``: the floor. The bare aggregate over the same action
  queries (latest instant per user and action, at or before now), counted on
  the server: no evaluation, nothing sent to the client; under the same
  transaction settings as the evaluator (``PG_SETTINGS``);
* ``full_s``: the compiled SQL for every user, streamed to this process and
  decoded into complete ``SqlEvaluation``s (status, instants, merge fields),
  not ordered by id;
* ``naive_s`` / ``naive_users``: the original project's approach (per user,
  one query per action, then the ladder in Python) on a sample of users,
  scaled to the population;
* ``peak_rss_mb``: peak resident memory of this process (``getrusage``).

* the tick (``tick``): an incremental cycle at ``now + 1 h`` after a seeded
  1 % of the users got an account credit: ``tick_1pct_s`` (the users with
  new occurrences and their keys, evaluation of those and the due ones from
  their keys, diff), ``tick_push_s`` (the changed
  members through ``MailchimpSink`` to an in-process emulator),
  ``api_calls_per_tick``, ``changed_per_tick`` and counts.

``benchmarks/median.py`` folds several runs into medians and spreads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sync.addresses import normalise_email  # noqa: E402
from sync.demo import load_demo  # noqa: E402
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator  # noqa: E402
from sync.evaluate.engine import evaluate  # noqa: E402
from sync.evaluate.members import merge_values  # noqa: E402
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields  # noqa: E402
from sync.mailchimp.caller import Caller  # noqa: E402
from sync.mailchimp.client import MailchimpSettings, make_client  # noqa: E402
from sync.mailchimp.ledger import AcceptedPush  # noqa: E402
from sync.mailchimp.sink import MailchimpSink  # noqa: E402
from sync.mailchimp.sink_config import SinkConfig  # noqa: E402
from sync.records import ActionOccurrence, DesiredMember  # noqa: E402
from sync.rules.model import Entity  # noqa: E402
from sync.rules.schema import load_rules  # noqa: E402
from sync.sources.schema import load_sources  # noqa: E402
from sync.sources.values import to_utc  # noqa: E402
from sync.sql.compiled import SqlEvaluation  # noqa: E402
from sync.sql.compiler import PG_SETTINGS  # noqa: E402
from sync.sql.evaluator import SqlEvaluator, later_keys  # noqa: E402
from sync.state.store import StateStore  # noqa: E402

NOW = datetime(2026, 3, 1, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGETS = {
    "full_over_scan": 2.0,
    "naive_over_full_per_user": 50.0,
    "peak_rss_mb": 500.0,
    "tick_over_full": 0.05,
}
#: Instant columns the action queries filter on ``at > :since`` (the changed
#: ids of an incremental cycle): indexed, as an application that wants cheap
#: incremental reads would. Full scans (floor, full) never use them.
INSTANT_COLUMNS = [
    ("users", "date_joined"),
    ("wallets", "created_at"),
    ("credits", "credited_at"),
    ("subscriptions", "bought_at"),
    ("transfers", "received_at"),
    ("balance_notices", "sent_at"),
    ("purchases", "bought_at"),
    ("purchases", "finished_at"),
    ("evaluations", "evaluated_at"),
    ("conferences", "created_at"),
    ("conferences", "finished_at"),
    ("conferences", "published_at"),
]
#: The tick: 1 % of the users get an account credit in the hour after NOW.
TICK_SHARE = 0.01
TICK_NOW = NOW + timedelta(hours=1)
#: The "small constant" of api_calls_per_tick <= ceil(changed / 500) + constant
#: (a /batches job is created, polled once, its results fetched).
CALLS_CONSTANT = 3


def bench_database(admin_url: str, users: int, seed: int, prefix: str = "mailsync_bench") -> str:
    """URL of the dedicated benchmark database, filled once for (users, seed).

    ``prefix`` names it (``<prefix>_<users>_s<seed>``): the daemon benchmark,
    which inserts rows while it runs, keeps a database of its own.
    """
    name = f"{prefix}_{users}_s{seed}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS bench_meta (users INTEGER, seed INTEGER, now TEXT)"
        )
        meta = conn.exec_driver_sql("SELECT users, seed, now FROM bench_meta").first()
    ready = meta is not None and tuple(meta) == (users, seed, NOW.isoformat())
    if not ready:
        started = time.perf_counter()
        load_demo(url, "blousebrothers", users=users, seed=seed, now=NOW, replace=True)
        # As autovacuum would by the time anyone evaluates: statistics for
        # the planner, hint bits and the visibility map set.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM bench_meta")
            conn.execute(
                sa.text("INSERT INTO bench_meta VALUES (:u, :s, :n)"),
                {"u": users, "s": seed, "n": NOW.isoformat()},
            )
        print(f"generated {users} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    engine.dispose()
    index_instants(url)
    return url


def index_instants(url: str) -> None:
    """An index on each instant column the action queries read (``INSTANT_COLUMNS``)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table, column in INSTANT_COLUMNS:
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS ix_bench_{table}_{column} ON {table} ({column})"
            )
    engine.dispose()


def scan_limit(url: str, sources_file: Path) -> tuple[float, int]:
    """The floor: latest instant per (user, action) over the action queries."""
    source = load_sources(sources_file).entity("user")
    branches = [
        f"SELECT id, {order} AS action, at FROM (\n{q.sql}\n) AS a{order} WHERE at <= :now"
        for order, (_, q) in enumerate(source.actions)
    ]
    sql = (
        "SELECT count(*) FROM (SELECT id, action, max(at) AS latest FROM (\n"
        + "\nUNION ALL\n".join(branches)
        + "\n) AS occurrences GROUP BY id, action) AS latest"
    )
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        # The same transaction-local settings as the evaluator's (no JIT, the
        # same work_mem), so that the floor is not handicapped by them.
        started = time.perf_counter()
        for name, value in PG_SETTINGS.items():
            conn.execute(
                sa.text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
            )
        groups = conn.execute(sa.text(sql), {"now": NOW}).scalar_one()
        elapsed = time.perf_counter() - started
        conn.rollback()
    engine.dispose()
    return elapsed, int(groups)


@dataclass
class FullRun:
    elapsed: float
    count: int
    statuses: dict[str, int]
    #: What a state store would hold for the tick: the evaluations of the
    #: sampled users, and the ids whose next change falls before the tick.
    previous: dict[str, SqlEvaluation]
    due: set[str]


def full(
    url: str, rules_file: Path, sources_file: Path, sample: set[str], tick_now: datetime
) -> FullRun:
    """Every user's status through the compiled SQL, streamed and decoded."""
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    statuses: dict[str, int] = {}
    previous: dict[str, SqlEvaluation] = {}
    due: set[str] = set()
    with SqlEvaluator(ruleset, sources, url, batch_size=10_000) as evaluator:
        started = time.perf_counter()
        count = 0
        for result in evaluator.evaluate("user", now=NOW, ordered=False):
            count += 1
            statuses[result.status or "null"] = statuses.get(result.status or "null", 0) + 1
            change = result.next_change_at
            if change is not None and change <= tick_now:
                due.add(result.id)
                previous[result.id] = result
            elif result.id in sample:
                previous[result.id] = result
        elapsed = time.perf_counter() - started
    return FullRun(elapsed, count, statuses, previous, due)


def sample_ids(url: str, seed: int, share: float) -> set[str]:
    """A seeded ``share`` of the user ids."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = [str(row[0]) for row in conn.execute(sa.text("SELECT id FROM users ORDER BY id"))]
    engine.dispose()
    return set(random.Random(seed).sample(ids, max(1, round(len(ids) * share))))


def _member(entity: Entity, result: SqlEvaluation) -> DesiredMember | None:
    """The member one user asks for (the SQL path computes no events)."""
    if not result.email:
        return None
    return DesiredMember(
        email=normalise_email(result.email),
        merge_fields=merge_values(entity, result.merge_fields),
        tags=frozenset(result.tags),
        managed_tags=frozenset(entity.managed_tags),
    )


def tick(
    url: str,
    rules_file: Path,
    sources_file: Path,
    run: FullRun,
    sample: set[str],
    tick_now: datetime,
    scratch: Path,
) -> dict[str, Any]:
    """An incremental cycle after the sampled users got an account credit.

    Untimed set-up: one ``credits`` row per sampled user at an instant in
    (now, tick_now], a scratch state store (SQLite) and an in-process
    emulator both seeded with the members' previous state (every member the
    tick can touch: the sample and the due ids). Timed: (a) the entities with
    occurrences since the full run and their keys
    (``SqlEvaluator.keys_since``), plus the due ids, (b) their evaluation at
    ``tick_now`` from their previous keys (kept in memory from the full run)
    and the new ones (``SqlEvaluator.evaluate(keys=...)``), (c)
    the diff against ``run.previous`` → ``tick_1pct_s``; (d) pushing the
    changed members through ``MailchimpSink`` → ``tick_push_s``. The
    inserted rows are deleted after.
    """
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    entity = ruleset.entity("user")
    rng = random.Random(len(sample))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        top = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM credits")).scalar_one()
    span = int((tick_now - NOW).total_seconds())
    rows = [
        {
            "id": top + n + 1,
            "user_id": int(user_id),
            "amount": 1000,
            "at": NOW + timedelta(seconds=rng.randint(1, span)),
        }
        for n, user_id in enumerate(sorted(sample, key=int))
    ]
    members = {i: m for i, r in run.previous.items() if (m := _member(entity, r)) is not None}
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO credits (id, user_id, amount_cents, credited_at)"
                    " VALUES (:id, :user_id, :amount, :at)"
                ),
                rows,
            )
            conn.exec_driver_sql("ANALYZE credits")
        with Emulator() as emulator:
            client = make_client(
                MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url)
            )
            fix_merge_fields(client, DEFAULT_LIST_ID, wanted_merge_fields([entity]))
            audience = emulator.store.audience(DEFAULT_LIST_ID)
            for member in members.values():
                audience.seed_member(
                    member.email, "subscribed", member.merge_fields, sorted(member.tags)
                )
            store = StateStore(f"sqlite:///{scratch}")
            store.migrate()
            store.record_accepted_many(
                [
                    AcceptedPush(m.email, dict(m.merge_fields), NOW, frozenset(m.tags))
                    for m in members.values()
                ]
            )
            caller = Caller(client, DEFAULT_LIST_ID)
            sink = MailchimpSink(caller, store, SinkConfig(), clock=lambda: tick_now)
            with SqlEvaluator(ruleset, sources, url, batch_size=10_000) as evaluator:
                # A running daemon compiled both queries in an earlier cycle
                # (the evaluator caches them): compile and run them once here,
                # on one user at the previous instant, timed apart.
                started = time.perf_counter()
                one = min(sample)
                evaluator.keys_since("user", since=NOW - timedelta(hours=1), now=NOW)
                warm = {one: run.previous[one].keys}
                for _ in evaluator.evaluate("user", now=NOW, keys=warm, ordered=False):
                    pass
                compile_s = time.perf_counter() - started
                started = time.perf_counter()
                # (a) who has new occurrences since the full run, and their keys
                new = evaluator.keys_since("user", since=NOW, now=tick_now)
                ids = set(new) | run.due
                found_s = time.perf_counter() - started
                # (b) those and the due ones, from their previous keys + the new
                keys = {i: later_keys(run.previous[i].keys, new.get(i)) for i in ids}
                changed: list[DesiredMember] = []
                status_changes = 0
                for result in evaluator.evaluate("user", now=tick_now, keys=keys, ordered=False):
                    before = run.previous.get(result.id)
                    if before is None or before.status != result.status:
                        status_changes += 1
                    wanted = _member(entity, result)
                    if wanted is not None and wanted != members.get(result.id):
                        changed.append(wanted)
                tick_s = time.perf_counter() - started
                started = time.perf_counter()
                summary = sink.push(changed)
                push_s = time.perf_counter() - started
            store.close()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM credits WHERE id > :top"), {"top": top})
        engine.dispose()
        scratch.unlink(missing_ok=True)
    calls = sum(summary.calls.values())
    return {
        "tick_1pct_s": round(tick_s, 3),
        "tick_changed_ids_s": round(found_s, 3),
        "tick_warmup_s": round(compile_s, 3),
        "tick_push_s": round(push_s, 3),
        "api_calls_per_tick": calls,
        "api_calls_by_kind": dict(sorted(summary.calls.items())),
        "changed_per_tick": len(changed),
        "tick_sampled_users": len(sample),
        "tick_changed_ids": len(new),
        "tick_due_ids": len(run.due),
        "tick_evaluated": len(ids),
        "tick_status_changes": status_changes,
        "tick_pushed": summary.pushed,
        "tick_failed": summary.failed,
        "api_calls_expected_max": math.ceil(len(changed) / 500) + CALLS_CONSTANT,
    }


def naive(url: str, rules_file: Path, sources_file: Path, sample: int) -> tuple[float, int]:
    """The original loop: per user, one query per action, the ladder in Python."""
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    entity, source = ruleset.entity("user"), sources.entity("user")
    queries = [
        (name, sa.text(f"SELECT max(at) FROM (\n{q.sql}\n) AS a WHERE id = :id"))
        for name, q in source.actions
    ]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM users ORDER BY id"))]
        step = max(1, len(ids) // sample)
        chosen = ids[::step][:sample]
        started = time.perf_counter()
        for user_id in chosen:
            occurrences = []
            for name, query in queries:
                latest = conn.execute(query, {"id": user_id}).scalar()
                at = to_utc(latest, UTC_ZONE)
                if at is not None:
                    occurrences.append(ActionOccurrence(at, name))
            evaluate(entity, {}, occurrences, NOW)
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, len(chosen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (any database)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules.yaml")
    parser.add_argument("--sources", type=Path, default=ROOT / "sources.yaml")
    args = parser.parse_args(argv)

    url = bench_database(args.pg, args.users, args.seed)
    scan_s, groups = scan_limit(url, args.sources)
    sample = sample_ids(url, args.seed, TICK_SHARE)
    run = full(url, args.rules, args.sources, sample, TICK_NOW)
    full_s, evaluated, statuses = run.elapsed, run.count, run.statuses
    naive_elapsed, naive_users = naive(url, args.rules, args.sources, max(args.naive_sample, 1))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ticked = tick(
        url,
        args.rules,
        args.sources,
        run,
        sample,
        TICK_NOW,
        Path(tempfile.gettempdir()) / f"mailsync_bench_tick_{os.getpid()}.sqlite",
    )

    full_per_user = full_s / max(evaluated, 1)
    naive_per_user = naive_elapsed / max(naive_users, 1)
    figures: dict[str, Any] = {
        "users": args.users,
        "seed": args.seed,
        "now": NOW.isoformat(),
        "scan_limit_s": round(scan_s, 3),
        "scan_groups": groups,
        "full_s": round(full_s, 3),
        "full_users": evaluated,
        "full_over_scan": round(full_s / scan_s, 3),
        "naive_s": round(naive_per_user * args.users, 1),
        "naive_users": naive_users,
        "naive_per_user_ms": round(naive_per_user * 1000, 3),
        "full_per_user_us": round(full_per_user * 1e6, 3),
        "naive_over_full_per_user": round(naive_per_user / full_per_user, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        **ticked,
        "tick_over_full": round(ticked["tick_1pct_s"] / full_s, 4),
        "statuses": dict(sorted(statuses.items())),
        "python": platform.python_version(),
    }
    figures["targets"] = {
        "full_over_scan<=2.0": figures["full_over_scan"] <= TARGETS["full_over_scan"],
        "naive_over_full>=50": figures["naive_over_full_per_user"]
        >= TARGETS["naive_over_full_per_user"],
        "peak_rss_mb<=500": figures["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "tick_over_full<=0.05": figures["tick_over_full"] <= TARGETS["tick_over_full"],
        "api_calls<=ceil(changed/500)+3": figures["api_calls_per_tick"]
        <= figures["api_calls_expected_max"],
    }
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    shown = {k: v for k, v in figures.items() if k != "statuses"}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
