"""Benchmark: the daemon's cycles, as operators run them, on BlouseBrothers at N users.

    python benchmarks/daemon.py --users 100000 --json out.json \\
        [--state sqlite|postgres|both] [--service-delay 0.25] [--connect-delay 0] \\
        [--batch-delay 0] [--batch-wait 60] [--pause 0] [--pg URL] [--seed 1]

Only the daemon's public entry points are used for the cycles:
``sync.daemon.config.Config`` -> ``sync.daemon.runtime.build_runtime`` ->
``sync.daemon.once.run_once``
(its ``CycleSummary``), with the sink the configuration chooses (an audience,
a base URL and ``MAILCHIMP_API_KEY``, as in production). Whatever the cycle
does inside, this measures what a user gets.

Set-up (untimed): the demo data of ``sync.demo`` in a PostgreSQL database
of its own, ``mailsync_daemon_<N>_s<seed>`` (generated once and reused, or
the database given by ``--app-db``), and ``mailsync emulator`` in a process
of its own with ``--service-delay`` (Mailchimp's latency) and ``--connect-delay``
(a new connection's handshakes), fresh for each
state store. Then, in this process:

* ``scan_floor_s``: the floor of ``benchmarks/run.py`` (the bare aggregate
  over the action queries, counted on the server);
* ``sql_eval_s``: ``SqlEvaluator.evaluate`` of every user, as in ``run.py``;

and, for each state store (``--state``: SQLite in a scratch file, and/or
PostgreSQL in the application database under ``state_schema``), in a CHILD
process so that neither the data generation nor the emulator counts in its
memory, four cycles on a new state store:

1. ``first_cycle_s``: ``run_once(full=True)`` at ``T0``, every member new;
2. ``full_nochange_s``: ``run_once(full=True)`` at ``T0 + 5 min``;
   ``state_rows_written_nochange`` counts the rows it wrote to the state store;
3. 1 % of the users get a new action (an account credit or a transfer, one
   in four back-dated before the previous cycle), then
   ``full_1pct_s``: ``run_once(full=True)`` at ``T0 + 10 min``;
4. another 1 % the same way, then ``tick_1pct_s``:
   ``run_once(full=False)`` at ``T0 + 15 min``.

Each cycle also records its CPU seconds: this process's (every thread) and
the emulator's (``/proc``), which share the machine's cores with it.
API calls come from ``summary.push.calls``; what Mailchimp had to do (members
created, updates, tag and event operations) from the emulator's own records,
so the bounds do not depend on how the daemon works. The inserted rows are
deleted at the end. ``benchmarks/README.md`` ("Daemon benchmark") says what
each figure means and lists the targets.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import run as floor  # noqa: E402  (benchmarks/run.py: the database, the floor, the SQL)

from sync.daemon.config import Config, MailchimpConfig  # noqa: E402
from sync.daemon.cycle_summary import CycleSummary  # noqa: E402
from sync.daemon.once import run_once  # noqa: E402
from sync.daemon.runtime import build_runtime  # noqa: E402
from sync.demo import load_demo  # noqa: E402
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID  # noqa: E402
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields  # noqa: E402
from sync.mailchimp.client import MailchimpSettings, make_client  # noqa: E402

NOW = floor.NOW
#: The cycles' instants: a poll interval of a few minutes between them.
T_FIRST = NOW
T_NOCHANGE = NOW + timedelta(minutes=5)
T_FULL = NOW + timedelta(minutes=10)
T_TICK = NOW + timedelta(minutes=15)
SHARE = 0.01
#: One sampled user in this many gets its action back-dated before the
#: previous cycle's instant (a late, replicated or back-filled row).
BACKDATED_EVERY = 4
#: Connections to Mailchimp: it allows 10 per key, mailsync uses 9.
CONNECTIONS = 9
MEMBERS_PER_CALL = 500  # batch subscribe
JOB_SIZE = 5000  # operations per /batches job
CALLS_PER_JOB = 3  # start, a poll, the results download
#: The "small constant" of issue 11's call bound.
CALLS_CONSTANT = 3
DEFAULT_STATE_SCHEMA = "mailsync_bench_state"
STATES = ("sqlite", "postgres")
#: Emulator endpoints by what Mailchimp does for them.
CREATE = "POST /lists/{list_id}"
UPDATE = (
    "PUT /lists/{list_id}/members/{subscriber_hash}",
    "PATCH /lists/{list_id}/members/{subscriber_hash}",
)
TAGS = "POST /lists/{list_id}/members/{subscriber_hash}/tags"
EVENTS = "POST /lists/{list_id}/members/{subscriber_hash}/events"
#: This benchmark's own probe of the audience size; not the daemon's.
PROBE = "GET /lists/{list_id}"
#: Action tables the 1 % scenarios insert into: (table, instant column).
INSERTED = (("credits", "credited_at"), ("transfers", "received_at"))


# -- the emulator, in a process of its own -----------------------------------------


@contextmanager
def emulator_process(service_delay: float, connect_delay: float = 0.0) -> Iterator[tuple[str, int]]:
    """``mailsync emulator`` on a free port; yields its API base URL and its pid."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sync", "emulator", "--port", "0"]
    command += ["--service-delay", str(service_delay), "--connect-delay", str(connect_delay)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if "listening on" in line:
                url = line.split("listening on", 1)[1].strip()
                break
        if url is None:
            raise RuntimeError(f"mailsync emulator did not start (exit {process.wait()})")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def emulator_settings(api_url: str, settings: dict[str, Any]) -> None:
    """Change the emulator's settings (``POST /_emulator/settings``)."""
    root = api_url.removesuffix("/3.0")
    request = urllib.request.Request(
        f"{root}/_emulator/settings",
        data=json.dumps(settings).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        answer.read()


@dataclass(frozen=True)
class Audit:
    """What the emulator had done so far, by its own records."""

    calls: Counter[str]
    operations: Counter[str]
    members: int
    #: TCP connections the emulator accepted so far.
    connections: int

    @classmethod
    def read(cls, api_url: str) -> Audit:
        root = api_url.removesuffix("/3.0")
        with urllib.request.urlopen(f"{root}/_emulator/calls") as answer:
            log = json.load(answer)
        request = urllib.request.Request(f"{api_url}/lists/{DEFAULT_LIST_ID}")
        token = base64.b64encode(f"bench:{DEFAULT_API_KEY}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request) as answer:
            stats = json.load(answer)["stats"]
        members = stats["member_count"] + stats["unsubscribe_count"] + stats["cleaned_count"]
        return cls(
            Counter(log["by_endpoint"]),
            Counter(log["batch_operations"]["by_endpoint"]),
            int(members),
            int(log.get("connections", 0)),
        )

    def since(self, before: Audit) -> dict[str, int]:
        """Work done between two audits: calls and, direct or in jobs, operations."""
        calls = self.calls - before.calls
        calls[PROBE] -= 1  # the probe of ``before``
        done = calls + (self.operations - before.operations)
        events = done[EVENTS]
        tags = done[TAGS]
        return {
            "api_calls_emulator": sum(n for n in calls.values() if n > 0),
            "members_new": self.members - before.members,
            "updates": sum(done[e] for e in UPDATE),
            "tag_operations": tags,
            "event_operations": events,
            # Not counted: the probe of ``before`` and this audit's own read,
            # a connection each.
            "connections_opened": self.connections - before.connections - 2,
        }


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far, from
    ``/proc`` (Linux): how the emulator's own work compares with mailsync's."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The fields after the command name (in parentheses, which may hold spaces):
    # utime and stime are the 14th and 15th fields of the line.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calls_needed(work: dict[str, int]) -> int:
    """The fewest calls Mailchimp needs for this work: members created 500 per
    call, updates, tags and events in /batches jobs of 5000 operations."""
    return (
        math.ceil(work["members_new"] / MEMBERS_PER_CALL)
        + math.ceil(work["updates"] / JOB_SIZE) * CALLS_PER_JOB
        + math.ceil((work["tag_operations"] + work["event_operations"]) / JOB_SIZE) * CALLS_PER_JOB
    )


# -- rows written to the state store -------------------------------------------------

_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|MERGE|WITH)\b", re.IGNORECASE)
_TARGET = re.compile(
    r"\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO)"
    r"\s+((?:\"?\w+\"?\.)?\"?\w+\"?)",
    re.IGNORECASE,
)


class WriteCounter:
    """Rows written to the state store's tables, whoever writes them.

    A SQLAlchemy listener on every engine of the process (the class, not an
    instance: no internals needed) adds up the ``rowcount`` of each INSERT,
    UPDATE, DELETE or MERGE whose target is one of the state store's tables,
    as the database lists them after migration. An UPDATE that rewrites
    identical values counts: it is a write all the same.
    """

    def __init__(self, tables: set[str]) -> None:
        self.tables = tables
        self.rows = 0
        self.statements = 0
        self.by_table: Counter[str] = Counter()
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._seen)

    def reset(self) -> None:
        self.rows, self.statements = 0, 0
        self.by_table.clear()

    def _seen(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not _WRITE.match(statement):
            return
        target = _TARGET.search(statement)
        if target is None:
            return
        table = target.group(1).replace('"', "").rsplit(".", 1)[-1].lower()
        if table not in self.tables:
            return
        self.statements += 1
        if cursor.rowcount > 0:
            self.rows += cursor.rowcount
            self.by_table[table] += cursor.rowcount


class RowVersions:
    """Rows written since a point, as PostgreSQL itself sees them: a cross-check
    of ``WriteCounter`` that also sees writes bypassing SQLAlchemy.

    Every INSERT or UPDATE stamps the row version with its transaction id
    (``xmin``): the live rows of the state schema whose ``xmin`` is newer than a
    transaction started before the cycle were written by the cycle (a row
    inserted then deleted in the cycle is not among them).
    """

    def __init__(self, url: str, schema: str, tables: set[str]) -> None:
        self.engine = sa.create_engine(url)
        self.schema = schema
        self.tables = sorted(tables)
        self.mark = 0

    def start(self) -> None:
        with self.engine.begin() as conn:
            self.mark = int(conn.execute(sa.text("SELECT txid_current()")).scalar_one())

    def written(self) -> int:
        total = 0
        with self.engine.connect() as conn:
            for table in self.tables:
                # xmin is a 32-bit xid: compare ages, which survive wraparound.
                total += conn.execute(
                    sa.text(
                        f'SELECT count(*) FROM "{self.schema}"."{table}"'
                        " WHERE age(xmin) < age((:mark % 4294967296)::text::xid)"
                    ),
                    {"mark": self.mark},
                ).scalar_one()
        return int(total)

    def close(self) -> None:
        self.engine.dispose()


def state_tables(url: str, schema: str | None) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {t.lower() for t in sa.inspect(engine).get_table_names(schema=schema)}
    finally:
        engine.dispose()


# -- the 1 % scenarios ----------------------------------------------------------------


def sample(url: str, salt: str, users: int) -> list[int]:
    """A deterministic 1 % of the users (hashed ids: no id list in memory)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text("SELECT id FROM users ORDER BY md5(id::text || :salt) LIMIT :k"),
            {"salt": salt, "k": max(1, round(users * SHARE))},
        ).scalars()
        chosen = sorted(int(i) for i in ids)
    engine.dispose()
    return chosen


def insert_actions(
    url: str, ids: Sequence[int], before: datetime, after: datetime, until: datetime, seed: int
) -> int:
    """One action per user in ``ids``: an account credit or a transfer, at an
    instant in (``after``, ``until``], or for one in ``BACKDATED_EVERY`` in
    (``before``, ``after``), i.e. before the previous cycle. Returns how many
    were back-dated."""
    rng = random.Random(seed)
    engine = sa.create_engine(url)
    backdated = 0
    with engine.begin() as conn:
        rows: dict[str, list[dict[str, Any]]] = {table: [] for table, _ in INSERTED}
        tops = {
            table: conn.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
            for table, _ in INSERTED
        }
        for n, user_id in enumerate(ids):
            late = n % BACKDATED_EVERY == 0
            # Alternating tables, the late rows included.
            table, _ = INSERTED[(n + n // BACKDATED_EVERY) % len(INSERTED)]
            low, high = (before, after) if late else (after, until)
            backdated += late
            seconds = rng.uniform(1, (high - low).total_seconds() - 1)
            rows[table].append(
                {
                    "id": tops[table] + len(rows[table]) + 1,
                    "user_id": user_id,
                    "amount": 1000,
                    "at": low + timedelta(seconds=seconds),
                }
            )
        for table, column in INSERTED:
            if rows[table]:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} (id, user_id, amount_cents, {column})"
                        " VALUES (:id, :user_id, :amount, :at)"
                    ),
                    rows[table],
                )
    engine.dispose()
    return backdated


def delete_inserted(url: str) -> None:
    """Remove what the scenarios inserted: the demo data has nothing after NOW.
    The tables are vacuumed after: with autovacuum off (as on the benchmark
    machines), the dead rows of run after run would slow every later scan."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table, column in INSERTED:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} > :now"), {"now": NOW})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(t for t, _ in INSERTED)}")
    engine.dispose()


# -- the cycles, in a child process -------------------------------------------------


def state_config(state: str, app_url: str, schema: str, scratch: Path) -> tuple[str, str | None]:
    """(state URL, state_schema) of a NEW state store."""
    if state == "sqlite":
        scratch.unlink(missing_ok=True)
        return f"sqlite:///{scratch}", None
    engine = sa.create_engine(app_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()
    return app_url, schema


def cycle_figures(summary: CycleSummary, elapsed: float, work: dict[str, int]) -> dict[str, Any]:
    push = summary.push
    return {
        "s": round(elapsed, 3),
        "api_calls": sum(push.calls.values()),
        "changed": push.pushed + push.failed,
        "pushed": push.pushed,
        "failed": push.failed,
        "events_sent": push.events_sent,
        "entities_read": sum(summary.entities_read.values()),
        "status_changes": sum(summary.status_changes.values()),
        # Pushing (sending and recording) and the part of it the cycle
        # waited for, not deriving meanwhile.
        "push_s": round(summary.push_s, 3),
        "push_wait_s": round(summary.push_wait_s, 3),
        # /batches jobs: members whose job this cycle left running, and
        # operations of earlier cycles' jobs it collected.
        "left_running": len(set(push.running_members)),
        "collected": push.collected,
        **work,
    }


def cycles(args: argparse.Namespace) -> dict[str, Any]:
    """The four cycles on a new state store; runs in the child process."""
    scratch = Path(tempfile.gettempdir()) / f"mailsync_daemon_state_{os.getpid()}.sqlite"
    state_url, schema = state_config(args.child, args.app_db, args.state_schema, scratch)
    config = Config(
        rules=args.rules,
        sources=args.sources,
        database=args.app_db,
        state=state_url,
        state_schema=schema,
        mailchimp=MailchimpConfig(
            list_id=DEFAULT_LIST_ID, base_url=args.emulator, batch_wait=args.batch_wait
        ),
    )
    # The sink the configuration chooses needs a key, as in production.
    os.environ["MAILCHIMP_API_KEY"] = DEFAULT_API_KEY
    clock = {"now": T_FIRST}
    runtime = build_runtime(config, clock=lambda: clock["now"])
    figures: dict[str, Any] = {"state": args.child}
    versions: RowVersions | None = None
    try:
        # As `mailsync check --fix` would, once, before the daemon starts.
        wanted = wanted_merge_fields(runtime.ruleset.entities.values())
        settings = MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=args.emulator)
        fix_merge_fields(make_client(settings), DEFAULT_LIST_ID, wanted)
        tables = state_tables(state_url, schema)
        writes = WriteCounter(tables)
        versions = RowVersions(state_url, schema, tables) if schema is not None else None

        def cycle(name: str, now: datetime, full: bool) -> dict[str, Any]:
            if now != T_FIRST:
                # The daemon's interval between cycles, Mailchimp's time to
                # run the jobs a cycle left running (--pause).
                time.sleep(args.pause)
            clock["now"] = now
            before = Audit.read(args.emulator)
            writes.reset()
            if versions is not None:
                versions.start()
            emulator_cpu = process_cpu_s(args.emulator_pid)
            cpu, started = time.process_time(), time.perf_counter()
            summary = run_once(runtime, now=now, full=full)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            emulator_cpu = process_cpu_s(args.emulator_pid) - emulator_cpu
            work = Audit.read(args.emulator).since(before)
            result = cycle_figures(summary, elapsed, work)
            result["cpu_s"] = round(cpu, 3)
            result["emulator_cpu_s"] = round(emulator_cpu, 3)
            result["state_rows_written"] = writes.rows
            if versions is not None:
                result["state_rows_written_xmin"] = versions.written()
            result["state_write_statements"] = writes.statements
            result["state_rows_by_table"] = dict(sorted(writes.by_table.items()))
            print(f"  {args.child}: {name} {elapsed:.2f} s", file=sys.stderr, flush=True)
            return result

        first = cycle("first cycle", T_FIRST, full=True)
        nochange = cycle("full cycle, nothing changed", T_NOCHANGE, full=True)
        full_ids = sample(args.app_db, "full", args.users)
        full_late = insert_actions(args.app_db, full_ids, T_FIRST, T_NOCHANGE, T_FULL, args.seed)
        full = cycle("full cycle, 1 % changed", T_FULL, full=True)
        tick_ids = sample(args.app_db, "tick", args.users)
        tick_late = insert_actions(args.app_db, tick_ids, T_NOCHANGE, T_FULL, T_TICK, args.seed + 1)
        tick = cycle("incremental cycle, 1 % changed", T_TICK, full=False)
    finally:
        runtime.close()
        if versions is not None:
            versions.close()
        delete_inserted(args.app_db)
        if args.keep_state is not None and scratch.exists():
            # For `mailsync plan` measured on the same state store.
            shutil.copyfile(scratch, args.keep_state)
        scratch.unlink(missing_ok=True)
    figures.update(
        {
            "first_cycle_s": first["s"],
            "first_cycle_calls_needed": calls_needed(first),
            "first_cycle_cpu_s": first["cpu_s"],
            "first_cycle_emulator_cpu_s": first["emulator_cpu_s"],
            "full_nochange_s": nochange["s"],
            "state_rows_written_nochange": nochange["state_rows_written"],
            # PostgreSQL's own count of the live rows written (None on SQLite).
            "state_rows_written_nochange_xmin": nochange.get("state_rows_written_xmin"),
            "full_1pct_s": full["s"],
            "changed_full_1pct": full["changed"],
            "api_calls_full_1pct": full["api_calls"],
            "api_calls_full_1pct_max": calls_needed(full) + CALLS_CONSTANT,
            "tick_1pct_s": tick["s"],
            "tick_1pct_cpu_s": tick["cpu_s"],
            "changed_tick_1pct": tick["changed"],
            "api_calls_tick_1pct": tick["api_calls"],
            "api_calls_tick_1pct_max": calls_needed(tick) + CALLS_CONSTANT,
            "users_with_new_actions": {"full_1pct": len(full_ids), "tick_1pct": len(tick_ids)},
            "backdated_actions": {"full_1pct": full_late, "tick_1pct": tick_late},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cycles": {
                "first": first,
                "full_nochange": nochange,
                "full_1pct": full,
                "tick_1pct": tick,
            },
        }
    )
    return figures


# -- the parent: set-up, children, verdicts ----------------------------------------


def prepare(args: argparse.Namespace) -> str:
    """The application database's URL, with the demo data of N users."""
    if args.app_db is None:
        return floor.bench_database(args.pg, args.users, args.seed, prefix="mailsync_daemon")
    load_demo(
        args.app_db, "blousebrothers", users=args.users, seed=args.seed, now=NOW, replace=True
    )
    floor.index_instants(args.app_db)
    return str(args.app_db)


def run_child(
    args: argparse.Namespace, state: str, url: str, emulator: tuple[str, int]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "figures.json"
        command = [sys.executable, __file__, "--users", str(args.users), "--seed", str(args.seed)]
        api_url, pid = emulator
        command += ["--json", str(out), "--app-db", url, "--child", state]
        command += ["--emulator", api_url, "--emulator-pid", str(pid)]
        command += ["--state-schema", args.state_schema, "--batch-wait", str(args.batch_wait)]
        command += ["--pause", str(args.pause)]
        command += ["--rules", str(args.rules), "--sources", str(args.sources)]
        if args.keep_state is not None:
            command += ["--keep-state", str(args.keep_state)]
        subprocess.run(command, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def verdicts(figures: dict[str, Any], scan_floor: float) -> dict[str, bool]:
    return {
        "full_nochange_s<=3*scan_floor_s": figures["full_nochange_s"] <= 3 * scan_floor,
        "tick_1pct_s<=0.05*full_nochange_s": figures["tick_1pct_s"]
        <= 0.05 * figures["full_nochange_s"],
        "api_calls_full_1pct<=bound": figures["api_calls_full_1pct"]
        <= figures["api_calls_full_1pct_max"],
        "api_calls_tick_1pct<=bound": figures["api_calls_tick_1pct"]
        <= figures["api_calls_tick_1pct_max"],
        "first_cycle_s<=1.3*first_cycle_bound_s": figures["first_cycle_s"]
        <= 1.3 * figures["first_cycle_bound_s"],
        "peak_rss_mb<=500": figures["peak_rss_mb"] <= 500,
    }


ROWS = [
    "first_cycle_s",
    "first_cycle_bound_s",
    "first_cycle_calls_needed",
    "first_cycle_cpu_s",
    "first_cycle_emulator_cpu_s",
    "full_nochange_s",
    "state_rows_written_nochange",
    "full_1pct_s",
    "changed_full_1pct",
    "api_calls_full_1pct",
    "api_calls_full_1pct_max",
    "tick_1pct_s",
    "tick_1pct_cpu_s",
    "changed_tick_1pct",
    "api_calls_tick_1pct",
    "api_calls_tick_1pct_max",
    "peak_rss_mb",
]


def report(figures: dict[str, Any]) -> None:
    states = list(figures["states"])
    print(f"\n{figures['users']} users, service delay {figures['service_delay_s']} s")
    print(f"scan_floor_s {figures['scan_floor_s']}   sql_eval_s {figures['sql_eval_s']}")
    print(f"{'':32}" + "".join(f"{s:>14}" for s in states))
    for row in ROWS:
        print(f"{row:32}" + "".join(f"{figures['states'][s][row]:>14}" for s in states))
    for state in states:
        for target, met in figures["states"][state]["targets"].items():
            print(f"{state:9} {target:42} {'PASS' if met else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--state", choices=[*STATES, "both"], default="both")
    parser.add_argument("--service-delay", type=float, default=0.25, help="seconds per API call")
    parser.add_argument(
        "--connect-delay",
        type=float,
        default=0.0,
        help="seconds a new connection takes before its first request (handshakes)",
    )
    parser.add_argument(
        "--batch-delay",
        type=float,
        default=0.0,
        help="seconds the emulator keeps a /batches job pending, then started (Mailchimp's queue)",
    )
    parser.add_argument(
        "--batch-wait",
        type=float,
        default=MailchimpConfig.batch_wait,
        help="mailchimp.batch_wait: seconds a cycle waits for a /batches job",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds between two cycles (the daemon's interval), not counted in any figure",
    )
    parser.add_argument("--pg", default=floor.DEFAULT_PG, help="PostgreSQL URL (any database)")
    parser.add_argument("--app-db", help="use this database (demo data replaced) instead")
    parser.add_argument("--state-schema", default=DEFAULT_STATE_SCHEMA)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules.yaml")
    parser.add_argument("--sources", type=Path, default=ROOT / "sources.yaml")
    # Internal: the child process that runs the cycles of one state store.
    parser.add_argument(
        "--keep-state",
        type=Path,
        help="copy the SQLite state store here after the cycles (to measure `plan` on it)",
    )
    parser.add_argument("--child", choices=STATES, help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--emulator-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.json.write_text(json.dumps(cycles(args), indent=2) + "\n")
        return 0

    url = prepare(args)
    delete_inserted(url)  # left by an interrupted run
    scan_floor, _ = floor.scan_limit(url, args.sources)
    sql_eval = floor.full(url, args.rules, args.sources, set(), NOW).elapsed
    figures: dict[str, Any] = {
        "users": args.users,
        "seed": args.seed,
        "now": NOW.isoformat(),
        "service_delay_s": args.service_delay,
        "connect_delay_s": args.connect_delay,
        "batch_delay_s": args.batch_delay,
        "batch_wait_s": args.batch_wait,
        "pause_s": args.pause,
        "connections": CONNECTIONS,
        "scan_floor_s": round(scan_floor, 3),
        "sql_eval_s": round(sql_eval, 3),
        "states": {},
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, shared with other work: timings vary by ±30 %",
    }
    for state in STATES if args.state == "both" else (args.state,):
        with emulator_process(args.service_delay, args.connect_delay) as emulator:
            if args.batch_delay:
                emulator_settings(emulator[0], {"batch_delay": args.batch_delay})
            result = run_child(args, state, url, emulator)
            # The emulator's CPU over its whole life, start-up included: the
            # cycles' own shares can each round to zero at a tiny population.
            result["emulator_cpu_s"] = round(process_cpu_s(emulator[1]), 3)
        result["first_cycle_bound_s"] = round(
            sql_eval + result["first_cycle_calls_needed"] * args.service_delay / CONNECTIONS, 3
        )
        result["targets"] = verdicts(result, scan_floor)
        figures["states"][state] = result
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
