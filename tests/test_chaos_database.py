"""The chaos run, database side: a flaky network to the application database and the state store.

BlouseBrothers demo users in PostgreSQL; the application database and the
state store (another schema of the same server) are each reached through a
loopback TCP proxy (``tests/support/tcp_proxy.py``) that, at random and while
cycles run as well as between them, resets every connection, stalls all
traffic, or refuses new connections for a while. Each cycle is handled as
the daemon's loop handles it: the leader lock is taken first, a failure the
daemon survives is counted and the next cycle tries again, a failure that
would end the daemon fails the test. Between cycles new rows arrive and the
clock moves on by hours; Mailchimp (the emulator) answers normally.

Then the proxies calm down, cycles run until nothing is left to retry, and
the end checks are those of the Mailchimp chaos run:

* every member in Mailchimp has exactly the merge fields the engine
  computes, on records read back, for the last cycle's instant;
* every event the engine says was due within the window arrived exactly
  once, and nothing else arrived.

A failed cycle is tried again one daemon interval (a minute) later on the
simulated clock, as the daemon would. The default run is scaled down
(1,000 users, 2 days in 6-hour steps);
``-m slow`` runs 5,000 users over 14 days, with fewer faults a second (a
cycle over 5,000 users lasts longer: it must be able to finish between
two). The faults come at random instants of the real clock, so a fast run
could finish its simulated days before each proxy drew every kind: the run
then goes on, step by step, until both have (three minutes at most).
Figures are printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.daemon.config import Config, DaemonConfig, MailchimpConfig
from sync.daemon.lock import LeaderLock, leader_lock
from sync.daemon.once import run_once
from sync.daemon.runtime import Runtime, build_runtime
from sync.daemon.serve import cycle_failure, transient_fault
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources
from sync.sources.sessions import SourceUnavailableError
from tests.support.clock import Clock
from tests.support.cycle import NOW, ROOT, audience_fields, expected_members
from tests.support.datafeed import DataFeed
from tests.support.events import EVENT_WINDOW, expected_events, received_events
from tests.support.report import JsonReport
from tests.support.tcp_proxy import TcpProxy

INTERVAL = timedelta(minutes=1)  # DaemonConfig.interval
RETRIES = 100
PAUSE = 0.2  # real seconds between tries: a refusal lasts up to a second
FAULTS = {"cut", "stall", "refuse"}
CHAOS_LIMIT_S = 180


def met_all(proxy: TcpProxy) -> bool:
    """Each kind of fault was done at least once through this proxy."""
    return FAULTS <= {kind for kind, count in proxy.done.items() if count > 0}


@dataclass
class DatabaseChaosReport(JsonReport):
    users: int
    cycles: int = 0
    cycles_ok: int = 0
    cycles_failed: Counter[str] = field(default_factory=Counter)
    lock_unavailable: int = 0
    standby: int = 0
    final_cycles: int = 0
    rows_inserted: Counter[str] = field(default_factory=Counter)
    application_faults: Counter[str] = field(default_factory=Counter)
    state_faults: Counter[str] = field(default_factory=Counter)
    members_checked: int = 0
    events_expected: int = 0
    events_received: int = 0
    events_missing: int = 0
    events_duplicated: int = 0
    events_unexpected: int = 0
    runtime_s: float = 0.0


def proxied_runtime(app_url: str, state_url: str, emulator: Emulator, clock: Clock) -> Runtime:
    config = Config(
        rules=ROOT / "rules.yaml",
        sources=ROOT / "sources.yaml",
        database=app_url,
        state=state_url,
        mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=emulator.url),
        daemon=DaemonConfig(
            full_rescan=timedelta(days=1),
            events_max_age=EVENT_WINDOW,
            backfill_events=EVENT_WINDOW,
        ),
    )
    settings = MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url)
    client = make_client(settings)
    caller = Caller(client, DEFAULT_LIST_ID, RetryPolicy(attempts=3))
    runtime = build_runtime(
        config,
        clock=clock,
        sink_factory=lambda store: MailchimpSink(caller, store, SinkConfig(), clock=clock),
    )
    wanted = wanted_merge_fields(runtime.ruleset.entities.values())
    fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
    return runtime


def daemon_cycle(
    runtime: Runtime, lock: LeaderLock, clock: Clock, report: DatabaseChaosReport
) -> bool:
    """One cycle as the daemon's loop runs it; False when it failed (and the
    daemon would go on). A failure that would end the daemon is raised."""
    try:
        held = lock.try_acquire()
    except Exception as exc:
        transient_fault(exc)  # raises what would end the daemon
        report.lock_unavailable += 1
        return False
    if not held:
        # Our own previous session, cut off, until the server notices it is
        # gone and frees its advisory lock: standby, as the daemon would.
        report.standby += 1
        return False
    try:
        run_once(runtime, now=clock.now)
    except Exception as exc:
        why = cycle_failure(exc)  # raises what would end the daemon
        report.cycles_failed[type(why).__name__] += 1
        return False
    report.cycles_ok += 1
    return True


def run_database_chaos(
    pg_url: str,
    state_url: str,
    emulator: Emulator,
    *,
    users: int,
    days: int,
    step: timedelta,
    seed: int,
    rate: float,
) -> DatabaseChaosReport:
    started = time.monotonic()
    report = DatabaseChaosReport(users=users)
    load_demo(pg_url, "blousebrothers", users=users, seed=seed, now=NOW)
    pg = sa.make_url(pg_url)
    app_proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    state_proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    clock = Clock(NOW)
    runtime = proxied_runtime(app_proxy.url(pg_url), state_proxy.url(state_url), emulator, clock)
    # A name of its own: an advisory lock is server-wide, and another run on
    # the same server (another checkout's suite) must not make this one wait.
    lock = leader_lock(runtime.state, f"{DEFAULT_LIST_ID}-{uuid.uuid4().hex[:8]}")
    feed = DataFeed(pg_url, random.Random(seed), report)
    try:
        app_proxy.chaos(rate, seed=seed)
        state_proxy.chaos(rate, seed=seed + 1)
        end = NOW + timedelta(days=days)
        # Faults come at random instants of the real clock: on a fast
        # machine the simulated days can be over before a proxy drew each
        # kind of fault, so the run goes on (steps past the end) until both
        # have, within a real-time limit.
        chaos_until = time.monotonic() + CHAOS_LIMIT_S
        while clock.now <= end or not (met_all(app_proxy) and met_all(state_proxy)):
            if time.monotonic() > chaos_until:
                pytest.fail(f"not every fault drawn in {CHAOS_LIMIT_S} s: {report.as_json()}")
            # A failed cycle is tried again one interval later, as the
            # daemon does; then the clock moves on by a step.
            for _ in range(RETRIES):
                report.cycles += 1
                if daemon_cycle(runtime, lock, clock, report):
                    break
                clock.now += INTERVAL
                time.sleep(PAUSE)
            else:
                pytest.fail(f"no cycle went through in {RETRIES} tries: {report.as_json()}")
            after, clock.now = clock.now, clock.now + step
            feed.between(after, clock.now)
        app_proxy.calm()
        state_proxy.calm()
        report.application_faults = Counter(app_proxy.done)
        report.state_faults = Counter(state_proxy.done)
        # Calm: cycles until one goes through with nothing left to retry.
        for _ in range(20):
            report.final_cycles += 1
            ok = daemon_cycle(runtime, lock, clock, report)
            left = runtime.state.failures(permanent=False)
            pending = runtime.state.pending_events(
                normalise_email(e) for e in audience_fields(emulator)
            )
            if ok and not left and not pending:
                break
            clock.now += timedelta(hours=6)
        else:
            pytest.fail(f"still failing once the network is calm: {left[:5]}, {pending}")
        final = clock.now

        expected = expected_members(runtime, "user", final)
        actual = audience_fields(emulator)
        assert set(actual) == set(expected), "members missing from (or extra in) Mailchimp"
        wrong = {e: (actual[e], expected[e]) for e in expected if actual[e] != expected[e]}
        assert not wrong, f"{len(wrong)} members differ, e.g. {list(wrong.items())[:3]}"
        report.members_checked = len(actual)

        due = expected_events(runtime, NOW - EVENT_WINDOW, final)
        got = received_events(emulator)
        report.events_expected = sum(due.values())
        report.events_received = sum(got.values())
        report.events_missing = sum((due - got).values())
        report.events_duplicated = sum(n - 1 for n in got.values() if n > 1)
        report.events_unexpected = sum(1 for k in got if k not in due)
        assert report.events_missing == 0, f"lost events: {list((due - got).items())[:5]}"
        assert report.events_duplicated == 0, [k for k, n in got.items() if n > 1][:5]
        assert report.events_unexpected == 0, [k for k in got if k not in due][:5]
    finally:
        feed.close()
        lock.release()
        runtime.close()
        app_proxy.close()
        state_proxy.close()
    report.runtime_s = round(time.monotonic() - started, 1)
    return report


def _check_and_print(report: DatabaseChaosReport, name: str) -> None:
    print(f"\n{name}: " + json.dumps(report.as_json(), indent=1))
    assert report.events_expected > 0
    # The run meant something: both links failed in each way, cycles failed
    # because of it, and others went through in between.
    for faults in (report.application_faults, report.state_faults):
        assert FAULTS <= {kind for kind, count in faults.items() if count > 0}, faults
    assert sum(report.cycles_failed.values()) > 0
    assert report.cycles_ok > 0


@pytest.mark.postgres
def test_database_chaos(pg_url: str, state_pg_url: str, mailchimp_emulator: Emulator) -> None:
    report = run_database_chaos(
        pg_url,
        state_pg_url,
        mailchimp_emulator,
        users=1000,
        days=2,
        step=timedelta(hours=6),
        seed=1,
        rate=0.5,
    )
    _check_and_print(report, "database chaos (default)")


@pytest.mark.slow
@pytest.mark.postgres
def test_database_chaos_5k_users_2_weeks(
    pg_url: str, state_pg_url: str, mailchimp_emulator: Emulator
) -> None:
    report = run_database_chaos(
        pg_url,
        state_pg_url,
        mailchimp_emulator,
        users=5000,
        days=14,
        step=timedelta(hours=4),
        seed=2,
        rate=0.2,
    )
    _check_and_print(report, "database chaos (slow)")


@pytest.mark.postgres
def test_a_connection_lost_under_the_reader_is_retriable_and_the_next_read_works(
    pg_url: str,
) -> None:
    """The two reader bugs the run found: a pooled connection found dead when
    a read began escaped as a raw OperationalError (the daemon called it a
    bug) and was never returned to the pool; one lost mid-stream left psycopg
    cursors open, and SQLAlchemy refused to let the reader close them."""
    load_demo(pg_url, "blousebrothers", users=50, seed=1, now=NOW)
    pg = sa.make_url(pg_url)
    proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    config = Config(
        rules=ROOT / "rules.yaml",
        sources=ROOT / "sources.yaml",
        database=proxy.url(pg_url),
        state="sqlite://",
    )
    assert config.database is not None
    sources = load_sources(config.sources)
    try:
        with SourceReader(sources, config.database, batch_size=5) as reader:
            assert len(list(reader.read_entities("user", now=NOW))) == 50
            proxy.cut()  # the pooled connection is dead; the next read finds out
            with pytest.raises(SourceUnavailableError):
                list(reader.read_entities("user", now=NOW))
            records = reader.read_entities("user", now=NOW)
            next(records)
            proxy.cut()  # mid-stream
            with pytest.raises(SourceUnavailableError):
                list(records)
            assert len(list(reader.read_entities("user", now=NOW))) == 50
    finally:
        proxy.close()
