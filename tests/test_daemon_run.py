"""``mailsync run`` as operators run it: a real process, signals, a lock, metrics.

The daemon runs in a subprocess against the in-test emulator, with a
simulated clock (MAILSYNC_CLOCK_START / MAILSYNC_CLOCK_SPEED) so that hours
pass in seconds. At the end every member in the emulator must equal what the
engine computes for the daemon's last cycle, and no event may have been
received twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from sync.daemon.config import load_config
from sync.daemon.reload import RulesWatcher, rules_changes
from sync.daemon.runtime import build_runtime
from sync.emulator import DEFAULT_API_KEY
from sync.rules.schema import load_rules
from tests.support.cycle import NOW, audience_fields, expected_members
from tests.support.daemon_process import (
    Daemon,
    cycles_done,
    last_cycle_now,
    wait_cycles,
    write_settings,
)

ROOT = Path(__file__).resolve().parent.parent


def test_sigterm_ends_cleanly_and_metrics_are_served(daemon_demo):
    tmp_path, database, state, emulator = daemon_demo
    settings = write_settings(tmp_path, database, state, emulator)
    daemon = Daemon(settings, NOW, "--metrics", "127.0.0.1:0", "--log-format", "json")
    port = int(daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    wait_cycles(state, 2, daemon)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'mailsync_cycles_total{outcome="ok"}' in metrics
    assert 'mailsync_entities_evaluated_total{entity="user"}' in metrics
    assert "mailsync_leader 1" in metrics
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    records = [json.loads(line) for line in daemon.text().splitlines() if line.startswith("{")]
    assert any("cycle" in r for r in records), "one JSON record per cycle"
    assert DEFAULT_API_KEY not in daemon.text()


def test_a_standby_takes_over_when_the_leader_dies(daemon_demo):
    tmp_path, database, state, emulator = daemon_demo
    settings = write_settings(tmp_path, database, state, emulator)
    leader = Daemon(settings, NOW)
    wait_cycles(state, 1, leader)
    standby = Daemon(settings, NOW)
    standby.wait_for("standby: another mailsync holds the lock")
    before = cycles_done(state)
    leader.stop(signal.SIGKILL)
    standby.wait_for("leader: running cycles", timeout=30)
    wait_cycles(state, before + 2, standby)
    assert standby.stop() == 0


def test_kill_restart_converges_without_duplicate_events(daemon_demo):
    tmp_path, database, state, emulator = daemon_demo
    settings = write_settings(tmp_path, database, state, emulator)
    clock = NOW
    engine = sa.create_engine(database)
    for round_ in range(3):
        daemon = Daemon(settings, clock)
        wait_cycles(state, cycles_done(state) + 2, daemon)
        # New activity while it runs: a few users credit their account.
        with engine.begin() as conn:
            at = (last_cycle_now(state) + timedelta(minutes=5)).replace(tzinfo=None)
            next_id = conn.execute(
                sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM credits")
            ).scalar_one()
            for offset, user_id in enumerate(range(1 + round_ * 7, 120, 23)):
                conn.execute(
                    sa.text(
                        "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
                        "VALUES (:id, :u, 1000, :at)"
                    ),
                    {"id": next_id + offset, "u": user_id, "at": at},
                )
        wait_cycles(state, cycles_done(state) + 2, daemon)
        daemon.stop(signal.SIGKILL)  # no chance to finish anything
        clock = last_cycle_now(state)
    engine.dispose()
    # A last clean run brings everything up to date.
    daemon = Daemon(settings, clock)
    wait_cycles(state, cycles_done(state) + 2, daemon)
    assert daemon.stop() == 0

    final = last_cycle_now(state)
    runtime = build_runtime(load_config(settings))
    try:
        assert audience_fields(emulator) == expected_members(runtime, "user", final)
    finally:
        runtime.close()
    received = [
        (email.lower(), e.name, str(e.occurred_at))
        for email, e in emulator.audience.received_events()
    ]
    assert received, "credit events were due"
    assert len(received) == len(set(received)), "an event was sent twice"


def test_rules_reload_keeps_the_last_good_rules(daemon_demo, caplog):
    caplog.set_level(logging.INFO, logger="sync")
    tmp_path, database, state, emulator = daemon_demo
    rules = tmp_path / "rules.yaml"
    rules.write_text((ROOT / "rules.yaml").read_text())
    settings = write_settings(tmp_path, database, state, emulator, rules=rules)
    runtime = build_runtime(load_config(settings))
    try:
        watcher = RulesWatcher(runtime)
        original = runtime.ruleset
        rules.write_text(rules.read_text().replace("enter: money_ok}", "enter: mony_ok}", 1))
        os.utime(rules, (time.time() + 5, time.time() + 5))
        assert watcher.check(NOW) is False
        assert runtime.ruleset is original
        assert "still running on the previous rules" in caplog.text
        assert "unknown status 'mony_ok'" in caplog.text
        rules.write_text(
            rules.read_text()
            .replace("enter: mony_ok}", "enter: money_ok}")
            .replace("  nurture:\n    _H24: 24h\n", "  nurture:\n    _H12: 12h\n    _H24: 24h\n")
        )
        os.utime(rules, (time.time() + 10, time.time() + 10))
        assert watcher.check(NOW) is True
        assert "registered_H12" in runtime.ruleset.entity("user").status_names
        assert "statuses added: " in caplog.text
    finally:
        runtime.close()


def test_rules_changes_lists_statuses_added_and_removed():
    old = load_rules(ROOT / "rules.yaml")
    new = load_rules(ROOT / "examples/rallia/rules.yaml")
    changes = rules_changes(old, new)
    assert "entity user removed" in changes
    assert any(c.startswith("entity match added") for c in changes)


def test_the_leaders_waits_never_block_on_the_stop_event():
    """The SIGTERM handler sets the stop event in the main thread; had it
    interrupted ``Event.wait`` on that event, ``Event.set`` would wait forever
    for the event's lock (a daemon ignoring SIGTERM, seen once in CI). The
    main thread's waits poll the event instead."""
    import threading

    from sync.daemon.serve import pause

    class NoWait(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            raise AssertionError("the main thread must not wait on the stop event")

    stop = NoWait()
    started = time.monotonic()
    pause(stop, 0.2)
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.1, stop.set).start()
    pause(stop, 30)
    assert stop.is_set()
