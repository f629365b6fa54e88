"""Killed at any instant, mailsync loses nothing and sends nothing twice.

First, in-process: a cycle that dies in the middle of its push (what a
SIGKILL does to it) must be redone by the next cycle. Then the real thing:
``mailsync run`` as a subprocess, killed with SIGKILL at random instants
(mid-cycle, mid-push) over many restarts, with data changing and the
simulated clock advancing; a clean final run; then the audience must equal
what the engine computes, and every event due must have arrived exactly once.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from sync.daemon.config import load_config
from sync.daemon.once import run_once
from sync.daemon.push import Sink
from sync.daemon.runtime import build_runtime
from sync.demo import load_demo
from sync.emulator import Emulator
from sync.mailchimp.audience import fix_merge_fields
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.summary import PushSummary
from sync.records import DesiredMember
from tests.support.clock import Clock
from tests.support.cycle import NOW, audience_fields, expected_members, make_runtime
from tests.support.daemon_process import Daemon, write_settings
from tests.support.events import EVENT_WINDOW, expected_events, received_events


class Killed(BaseException):
    """What SIGKILL does to a cycle, as far as the state store can tell."""


class DiesMidPush:
    """A sink that sends half the members, then dies."""

    def __init__(self, real: Sink) -> None:
        self.real = real

    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        chosen = list(members)
        self.real.push(chosen[: len(chosen) // 2])
        raise Killed

    def collect_running(self) -> PushSummary:
        return self.real.collect_running()

    def change_address(self, old: str, new: str) -> bool:
        return self.real.change_address(old, new)

    def remove_member(self, email: str, how: str) -> bool:
        return self.real.remove_member(email, how)


def test_a_cycle_killed_mid_push_is_redone(sqlite_url, tmp_path, mailchimp_emulator):
    load_demo(sqlite_url, "blousebrothers", users=80, seed=21, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", sqlite_url, tmp_path, mailchimp_emulator, clock)
    try:
        run_once(runtime)
        # Days later, statuses move along their ladders; the push dies half-way.
        clock.now = NOW + timedelta(days=3)
        real, runtime.sink = runtime.sink, DiesMidPush(runtime.sink)
        try:
            run_once(runtime)
        except Killed:
            pass
        runtime.sink = real
        clock.now += timedelta(minutes=10)
        run_once(runtime)
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", clock.now)
    finally:
        runtime.close()


# -- SIGKILL at random instants ------------------------------------------------------


@dataclass
class KillReport:
    users: int
    restarts: int = 0
    killed_mid_cycle: int = 0  # cycles started and never finished
    killed_mid_push: int = 0  # calls in flight or a /batches job unfinished at the kill
    cycles_ok: int = 0
    rows_inserted: int = 0
    simulated_hours: float = 0.0
    members_checked: int = 0
    events_expected: int = 0
    events_received: int = 0
    events_missing: int = 0
    events_duplicated: int = 0
    events_confirmed: int = 0
    events_resent: int = 0
    calls: int = 0
    batch_jobs: int = 0
    runtime_s: float = 0.0
    kill_delays: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["kill_delays"] = [round(d, 2) for d in self.kill_delays]
        return out


class StateView:
    """The daemon's state store as the test reads it (the same PostgreSQL schema)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def _scalar(self, sql: str) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(sql)).scalar()
        except sa.exc.ProgrammingError:
            return None  # tables not created yet

    def cycles(self) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT id, started_at, finished_at, ok, counts_json FROM cycle")
                )
                return [dict(r._mapping) for r in rows]
        except sa.exc.ProgrammingError:
            return []

    def ok_cycles(self) -> int:
        return sum(1 for c in self.cycles() if c["ok"])

    def latest_start(self) -> datetime | None:
        started: datetime | None = self._scalar("SELECT max(started_at) FROM cycle")
        return started

    def unsettled(self) -> int:
        """Transient failures plus event intents left: work for another cycle."""
        failures = self._scalar("SELECT count(*) FROM push WHERE NOT permanent") or 0
        pending = self._scalar("SELECT count(*) FROM event_pending") or 0
        return int(failures) + int(pending)


class Activity:
    """New rows while the daemon is down, always later than any row before."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.engine = sa.create_engine(url)
        self.rng = rng
        with self.engine.connect() as conn:
            self.users = int(conn.execute(sa.text("SELECT max(id) FROM users")).scalar_one())
            self.credit_id = 1 + int(
                conn.execute(sa.text("SELECT COALESCE(max(id), 0) FROM credits")).scalar_one()
            )
        self.latest = NOW

    def close(self) -> None:
        self.engine.dispose()

    def add(self, after: datetime, count: int) -> int:
        # Strictly after every earlier row, so the sources' watermark sees them.
        self.latest = max(self.latest, after)
        with self.engine.begin() as conn:
            for _ in range(count):
                self.latest += timedelta(seconds=self.rng.randint(1, 120))
                conn.execute(
                    sa.text(
                        "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
                        "VALUES (:id, :u, 1000, :at)"
                    ),
                    {"id": self.credit_id, "u": self.rng.randint(1, self.users), "at": self.latest},
                )
                self.credit_id += 1
        return count


def run_kills(
    pg_url: str, tmp_path: Any, emulator: Emulator, *, users: int, restarts: int, seed: int
) -> KillReport:
    started = time.monotonic()
    report = KillReport(users=users)
    rng = random.Random(seed)
    load_demo(pg_url, "blousebrothers", users=users, seed=seed, now=NOW)
    client = make_client(MailchimpSettings(emulator.api_key, emulator.list_id, host=emulator.url))
    fix_merge_fields(
        client,
        emulator.list_id,
        {t: "text" for t in ("MMERGE25", "MMERGE28", "FNAME", "LNAME", "MMERGE3")},
    )
    # Slow enough that a random kill often lands while calls are in flight.
    emulator.service_delay = 0.01
    emulator.batch_delay = 0.8
    # Every event of the window is due from the first cycle on (no go-live cut).
    settings = write_settings(tmp_path, pg_url, pg_url, emulator, extra="  backfill_events: 7d\n")
    state = StateView(pg_url)
    activity = Activity(pg_url, rng)
    try:
        clock = NOW
        for _ in range(restarts):
            daemon = Daemon(settings, clock)
            delay = rng.uniform(0.3, 6.0)
            report.kill_delays.append(delay)
            time.sleep(delay)
            in_push = emulator.calls.in_flight() > 0 or emulator.batches.pending_count() > 0
            daemon.stop(signal.SIGKILL)
            report.restarts += 1
            report.killed_mid_push += in_push
            clock = state.latest_start() or clock
            report.rows_inserted += activity.add(clock, rng.randint(users // 100, users // 40))
        # A clean run until nothing is left to retry, then a clean stop
        # between two cycles (the last cycle is then complete).
        daemon = Daemon(settings, clock)
        deadline = time.monotonic() + 120
        before = state.ok_cycles()
        while state.ok_cycles() < before + 2 or state.unsettled():
            assert time.monotonic() < deadline, f"no quiet state:\n{daemon.text()[-3000:]}"
            assert daemon.process.poll() is None, daemon.text()[-3000:]
            time.sleep(0.2)
        done = state.ok_cycles()
        while state.ok_cycles() == done:
            time.sleep(0.02)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        activity.close()
    cycles = sorted(state.cycles(), key=lambda c: c["id"])
    state.close()
    assert cycles[-1]["ok"], "the last cycle finished before the stop"
    final = cycles[-1]["started_at"]
    report.cycles_ok = sum(1 for c in cycles if c["ok"])
    report.killed_mid_cycle = sum(1 for c in cycles if c["finished_at"] is None)
    for c in cycles:
        counts = json.loads(c["counts_json"] or "{}")
        report.events_confirmed += counts.get("events_confirmed", 0)
        report.events_resent += counts.get("events_resent", 0)
    report.simulated_hours = (final - NOW).total_seconds() / 3600

    runtime = build_runtime(load_config(settings))
    try:
        expected = expected_members(runtime, "user", final)
        actual = audience_fields(emulator)
        wrong = {e: (actual.get(e), v) for e, v in expected.items() if actual.get(e) != v}
        assert not wrong, f"{len(wrong)} members differ, e.g. {list(wrong.items())[:3]}"
        assert set(actual) == set(expected)
        report.members_checked = len(actual)
        # Due for sure: within the window of the first cycle that completed.
        # An event that aged out while no cycle could finish is not sent,
        # unless a killed cycle had already committed to it (an intent).
        first_ok = min(c["started_at"] for c in cycles if c["ok"])
        due = expected_events(runtime, first_ok - EVENT_WINDOW, final)
        may = expected_events(runtime, NOW - EVENT_WINDOW, final)
    finally:
        runtime.close()
    got = received_events(emulator)
    report.events_expected = sum(due.values())
    report.events_received = sum(got.values())
    report.events_missing = sum((due - got).values())
    report.events_duplicated = sum(n - 1 for n in got.values() if n > 1)
    assert report.events_missing == 0, f"lost events: {list((due - got).items())[:5]}"
    assert report.events_duplicated == 0, [k for k, n in got.items() if n > 1][:5]
    assert set(got) <= set(may), [k for k in got if k not in may][:5]
    report.calls = len(emulator.calls.calls())
    report.batch_jobs = len(emulator.batches.batches())
    report.runtime_s = round(time.monotonic() - started, 1)
    return report


def _check_and_print(report: KillReport, name: str, restarts: int) -> None:
    print(f"\n{name}: " + json.dumps(report.as_json(), indent=1))
    assert report.restarts == restarts
    assert report.killed_mid_push > 0, "some kills landed mid-push"
    assert report.events_expected > 0


@pytest.mark.postgres
def test_sigkill_at_random_instants(pg_url, tmp_path, mailchimp_emulator):
    report = run_kills(pg_url, tmp_path, mailchimp_emulator, users=1000, restarts=12, seed=5)
    _check_and_print(report, "kill (default)", 12)


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_at_random_instants_many_restarts(pg_url, tmp_path, mailchimp_emulator):
    report = run_kills(pg_url, tmp_path, mailchimp_emulator, users=5000, restarts=40, seed=6)
    _check_and_print(report, "kill (slow)", 40)


def test_a_row_stamped_ahead_of_the_cycle_is_not_skipped(sqlite_url, tmp_path, mailchimp_emulator):
    """The application's clock runs ahead of the daemon's (or the daemon was
    restarted on an earlier clock): a row stamped after the cycle's instant is
    a future action for that cycle, and must be picked up by a later one."""
    load_demo(sqlite_url, "blousebrothers", users=30, seed=22, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", sqlite_url, tmp_path, mailchimp_emulator, clock)
    engine = sa.create_engine(sqlite_url)
    try:
        run_once(runtime)
        with engine.begin() as conn:
            user_id, email = conn.execute(
                sa.text("SELECT id, email FROM users ORDER BY id LIMIT 1")
            ).one()
            ahead = NOW + timedelta(hours=2)
            conn.execute(
                sa.text(
                    "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
                    "VALUES (100000, :u, 1000, :at)"
                ),
                {"u": user_id, "at": ahead.replace(tzinfo=None)},
            )
        clock.now = NOW + timedelta(hours=1)
        run_once(runtime)  # the credit is in the future here
        clock.now = NOW + timedelta(hours=3)
        run_once(runtime)
        assert mailchimp_emulator.audience.member(email).merge_fields["MMERGE28"] == "credit"
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", clock.now)
    finally:
        engine.dispose()
        runtime.close()
