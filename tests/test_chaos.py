"""The chaos run: weeks of cycles on PostgreSQL against a Mailchimp that fails a lot.

BlouseBrothers demo users in PostgreSQL (the state store in the same
database), the daemon's cycles run in-process (``run_once(now=...)``) against
the emulator, with EVERY transient fault class injected at random on 20 % of
the calls: 429 (with and without a body), a bare 403, 500, an HTML 503,
timeouts, connection resets, and the ambiguous ``process-then-timeout`` /
``process-then-reset`` (Mailchimp did the work, the answer was lost). Some
addresses fail for good (compliance state, forgotten, fake). Between cycles
new rows arrive (credits, transfers, low-balance notices, sign-ups) and the
clock moves on by hours, over weeks.

Then, faults off, cycles run until nothing is left to retry, and:

* every member in Mailchimp has exactly the merge fields the engine computes,
  on records read back, for the last cycle's instant;
* the permanently failing addresses are absent, each with a permanent failure
  naming its reason in the state store;
* every event the engine says was due within the window (``events_max_age``
  before the first cycle up to the last) arrived exactly once, and nothing
  else arrived.

The default run is scaled down (1,000 users, 2 weeks); ``-m slow`` runs
10,000 users over 6 weeks. Figures are printed (``-s``) and recorded in
docs/reliability.md ("Chaos and kill runs").
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.daemon.config import Config, DaemonConfig, MailchimpConfig
from sync.daemon.once import run_once
from sync.daemon.runtime import Runtime, build_runtime
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator, FaultKind
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.state.store import StateStore
from tests.support.clock import Clock
from tests.support.cycle import NOW, audience_fields, expected_members
from tests.support.datafeed import DataFeed
from tests.support.events import EVENT_WINDOW, expected_events, received_events
from tests.support.report import JsonReport

ROOT = Path(__file__).resolve().parent.parent

#: Every fault that is not final for the run (403-json is: a bad key).
TRANSIENT_FAULTS = tuple(k for k in FaultKind if k is not FaultKind.FORBIDDEN_JSON)
#: Addresses that fail for good, by emulator mark, and the reason the sink gives.
PERMANENT = {
    "compliance": "compliance state",
    "forgotten": "permanently deleted",
    "fake": "fake or invalid",
}


@dataclass
class ChaosReport(JsonReport):
    users: int
    cycles: int = 0
    final_cycles: int = 0
    simulated_days: float = 0.0
    rows_inserted: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    batch_operations: int = 0
    members_checked: int = 0
    permanent_failures: Counter[str] = field(default_factory=Counter)
    events_expected: int = 0
    events_received: int = 0
    events_missing: int = 0
    events_duplicated: int = 0
    events_unexpected: int = 0
    events_confirmed: int = 0  # found in Mailchimp after an unknown outcome
    events_resent: int = 0
    events_unconfirmed: int = 0
    runtime_s: float = 0.0


def chaos_runtime(pg_url: str, emulator: Emulator, clock: Clock, timeout: float) -> Runtime:
    config = Config(
        rules=ROOT / "rules.yaml",
        sources=ROOT / "sources.yaml",
        database=pg_url,
        state=pg_url,  # the state store in the application's database
        mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=emulator.url),
        # Every event of the window is due from the first cycle on (no go-live cut).
        daemon=DaemonConfig(
            full_rescan=timedelta(days=30),
            events_max_age=EVENT_WINDOW,
            backfill_events=EVENT_WINDOW,
        ),
    )
    settings = MailchimpSettings(
        DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url, timeout=timeout
    )
    client = make_client(settings)
    caller = Caller(
        client,
        DEFAULT_LIST_ID,
        RetryPolicy(attempts=5, initial_wait=0.005, max_wait=0.05),
    )
    # Whole-audience pushes go through /batches, most incremental ones as
    # direct calls (fewer than 50 operations): both paths meet the faults.
    sink_config = SinkConfig(bulk_threshold=50, polling=BatchPolling(first_wait=0.01, max_wait=0.1))
    runtime = build_runtime(
        config,
        clock=clock,
        sink_factory=lambda store: MailchimpSink(caller, store, sink_config, clock=clock),
    )
    wanted = wanted_merge_fields(runtime.ruleset.entities.values())
    fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
    return runtime


def mark_permanent_failures(emulator: Emulator, pg_url: str, every: int) -> dict[str, str]:
    """Every ``every``-th user's address fails for good; email -> mark."""
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        emails = [
            normalise_email(e)
            for e in conn.execute(
                sa.text(f"SELECT email FROM users WHERE id % {every} = 0")
            ).scalars()
        ]
    engine.dispose()
    marks: dict[str, str] = {}
    for i, email in enumerate(emails):
        mark = list(PERMANENT)[i % len(PERMANENT)]
        if mark == "compliance":
            emulator.audience.mark_compliance(email)
        elif mark == "forgotten":
            emulator.audience.forget(email)
        else:
            emulator.audience.mark_fake(email)
        marks[email] = mark
    return marks


def absorb(report: ChaosReport, runtime: Runtime, now: datetime) -> None:
    summary = run_once(runtime, now=now)
    report.events_confirmed += summary.push.events_confirmed
    report.events_resent += summary.push.events_resent
    report.events_unconfirmed += summary.push.events_unconfirmed


def run_chaos(
    pg_url: str,
    emulator: Emulator,
    *,
    users: int,
    days: int,
    step: timedelta,
    seed: int,
    fault_rate: float = 0.2,
    timeout: float = 0.15,
) -> ChaosReport:
    started = time.monotonic()
    report = ChaosReport(users=users)
    rng = random.Random(seed)
    load_demo(pg_url, "blousebrothers", users=users, seed=seed, now=NOW)
    # A timeout fault outlasts the client's timeout; a 500-member call must not.
    emulator.timeout_hold = timeout + 0.05
    marks = mark_permanent_failures(emulator, pg_url, every=50)
    clock = Clock(NOW)
    runtime = chaos_runtime(pg_url, emulator, clock, timeout)
    feed = DataFeed(pg_url, rng, report)
    try:
        emulator.faults.set_random(fault_rate, seed=seed, kinds=TRANSIENT_FAULTS)
        end = NOW + timedelta(days=days)
        while clock.now <= end:
            absorb(report, runtime, clock.now)
            report.cycles += 1
            after, clock.now = clock.now, clock.now + step
            feed.between(after, clock.now)
        # Faults off: run until nothing is left to retry or to confirm.
        emulator.faults.clear()
        state: StateStore = runtime.state
        for _ in range(40):
            absorb(report, runtime, clock.now)
            report.final_cycles += 1
            left = state.failures(permanent=False)
            pending = state.pending_events(normalise_email(e) for e in audience_fields(emulator))
            if not left and not pending:
                break
            # Past the longest transient back-off (1 day) in a few steps.
            clock.now += timedelta(hours=6)
        else:
            pytest.fail(f"still failing after the faults stopped: {left[:5]}")
        final = clock.now
        report.simulated_days = (final - NOW).total_seconds() / 86400

        # 1. Merge fields: exactly the engine's, except the permanent failures.
        expected = expected_members(runtime, "user", final)
        failures = {f.email: f for f in state.failures(permanent=True)}
        assert set(failures) == set(marks), "each permanent failure is recorded, nothing else"
        for email, mark in marks.items():
            assert PERMANENT[mark] in failures[email].reason.lower(), failures[email]
            report.permanent_failures[mark] += 1
            del expected[email]
        actual = audience_fields(emulator)
        assert set(actual) == set(expected), "members missing from (or extra in) Mailchimp"
        wrong = {e: (actual[e], expected[e]) for e in expected if actual[e] != expected[e]}
        assert not wrong, f"{len(wrong)} members differ, e.g. {list(wrong.items())[:3]}"
        report.members_checked = len(actual)

        # 2. Events: every one due in the window, exactly once, nothing else.
        due = expected_events(runtime, NOW - EVENT_WINDOW, final)
        due = Counter({k: n for k, n in due.items() if k[0] not in marks})
        got = received_events(emulator)
        report.events_expected = sum(due.values())
        report.events_received = sum(got.values())
        report.events_missing = sum((due - got).values())
        report.events_duplicated = sum(n - 1 for n in got.values() if n > 1)
        report.events_unexpected = sum(1 for k in got if k not in due)
        assert report.events_missing == 0, f"lost events: {list((due - got).items())[:5]}"
        assert report.events_duplicated == 0, [k for k, n in got.items() if n > 1][:5]
        assert report.events_unexpected == 0, [k for k in got if k not in due][:5]
        assert max(due.values()) == 1
        assert state.pending_events(marks) == {}
    finally:
        feed.close()
        runtime.close()
    calls = emulator.calls.calls()
    report.calls = len(calls)
    report.faults = Counter(c.fault for c in calls if c.fault)
    report.batch_operations = emulator.calls.operation_count()
    report.runtime_s = round(time.monotonic() - started, 1)
    return report


def _check_and_print(report: ChaosReport, name: str) -> None:
    print(f"\n{name}: " + json.dumps(report.as_json(), indent=1))
    assert set(report.faults) == {k.value for k in TRANSIENT_FAULTS}, "every fault class was met"
    assert report.events_expected > 0
    assert report.events_confirmed > 0, "some processed-then-lost events were found, not resent"
    assert report.events_resent > 0, "some unprocessed events of unknown outcome were resent"


@pytest.mark.postgres
def test_chaos(pg_url: str, mailchimp_emulator: Emulator) -> None:
    report = run_chaos(
        pg_url, mailchimp_emulator, users=1000, days=14, step=timedelta(hours=6), seed=1
    )
    _check_and_print(report, "chaos (default)")


@pytest.mark.slow
@pytest.mark.postgres
def test_chaos_10k_users_6_weeks(pg_url: str, mailchimp_emulator: Emulator) -> None:
    report = run_chaos(
        pg_url,
        mailchimp_emulator,
        users=10_000,
        days=42,
        step=timedelta(hours=4),
        seed=2,
        timeout=1.0,
    )
    _check_and_print(report, "chaos (slow)")
