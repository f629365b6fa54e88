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
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.daemon.config import load_config
from sync.daemon.reload import RulesWatcher, rules_changes
from sync.daemon.runtime import build_runtime
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID
from sync.rules.schema import load_rules
from sync.state.store import StateStore
from tests.test_cycle import NOW, audience_fields, expected_members

ROOT = Path(__file__).resolve().parent.parent
SPEED = 3600  # one real second is one simulated hour


def write_settings(tmp_path, database, state, emulator, *, rules=None, extra=""):
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {rules or ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {database}\nstate: {state}\n"
        f"mailchimp:\n  list_id: {DEFAULT_LIST_ID}\n  base_url: {emulator.url}\n"
        "daemon:\n  interval: 1s\n  lease_ttl: 2s\n  full_rescan: 30d\n" + extra
    )
    return path


RUNNING: list[Daemon] = []


@pytest.fixture(autouse=True)
def _kill_leftover_daemons():
    yield
    while RUNNING:
        daemon = RUNNING.pop()
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
        if not daemon.log_file.closed:
            daemon.log_file.close()


class Daemon:
    """A ``mailsync run`` subprocess."""

    def __init__(self, settings: Path, start: datetime, *args: str) -> None:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT),
            MAILCHIMP_API_KEY=DEFAULT_API_KEY,
            MAILSYNC_CLOCK_START=start.isoformat(),
            MAILSYNC_CLOCK_SPEED=str(SPEED),
        )
        self.log = settings.parent / f"daemon-{time.monotonic_ns()}.log"
        self.log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync", "run", "--config", str(settings), *args],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        RUNNING.append(self)

    def text(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not in the daemon's log:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.log_file.close()
        return code


def cycles_done(state_url: str) -> int:
    store = StateStore(state_url)
    try:
        return sum(1 for c in store.cycles(limit=1000) if c.ok)
    except sa.exc.OperationalError:
        return 0  # the daemon has not created its tables yet
    finally:
        store.close()


def wait_cycles(state_url: str, count: int, daemon: Daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while cycles_done(state_url) < count:
        if daemon.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} cycles:\n{daemon.text()}")
        time.sleep(0.2)


def last_cycle_now(state_url: str) -> datetime:
    store = StateStore(state_url)
    try:
        good = [c for c in store.cycles(limit=1000) if c.ok]
        return datetime.fromisoformat(good[0].counts["now"])
    finally:
        store.close()


@pytest.fixture
def setup(tmp_path, mailchimp_emulator):
    database = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(database, "blousebrothers", users=120, seed=11, now=NOW)
    state = f"sqlite:///{tmp_path}/state.sqlite"
    # The daemon expects the audience ready (mailsync check --fix).
    from sync.mailchimp.audience import fix_merge_fields
    from sync.mailchimp.client import MailchimpSettings, make_client

    client = make_client(
        MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=mailchimp_emulator.url)
    )
    fix_merge_fields(
        client,
        DEFAULT_LIST_ID,
        {
            "MMERGE25": "text",
            "MMERGE28": "text",
            "FNAME": "text",
            "LNAME": "text",
            "MMERGE3": "text",
        },
    )
    return tmp_path, database, state, mailchimp_emulator


def test_sigterm_ends_cleanly_and_metrics_are_served(setup):
    tmp_path, database, state, emulator = setup
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


def test_a_standby_takes_over_when_the_leader_dies(setup):
    tmp_path, database, state, emulator = setup
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


def test_kill_restart_converges_without_duplicate_events(setup):
    tmp_path, database, state, emulator = setup
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


def test_rules_reload_keeps_the_last_good_rules(setup, caplog):
    caplog.set_level(logging.INFO, logger="sync")
    tmp_path, database, state, emulator = setup
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
        def wait(self, timeout=None):  # type: ignore[override]
            raise AssertionError("the main thread must not wait on the stop event")

    stop = NoWait()
    started = time.monotonic()
    pause(stop, 0.2)
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.1, stop.set).start()
    pause(stop, 30)
    assert stop.is_set()
