"""``mailsync run`` as a real subprocess: its settings file, its log, its
signals, on a simulated clock (MAILSYNC_CLOCK_START / MAILSYNC_CLOCK_SPEED)
so that hours pass in seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
SPEED = 3600  # one real second is one simulated hour


def write_settings(
    tmp_path: Path,
    database: str,
    state: str,
    emulator: Emulator,
    *,
    rules: Path | None = None,
    extra: str = "",
) -> Path:
    """``mailsync.yaml`` for a daemon against the emulator, ticking every second.
    Its ``/batches`` jobs are polled from 0.05 s on (the production default
    waits 1 s first, and the emulator finishes a job in milliseconds unless
    a test sets ``batch_delay``)."""
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {rules or ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {database}\nstate: {state}\n"
        f"mailchimp:\n  list_id: {DEFAULT_LIST_ID}\n  base_url: {emulator.url}\n"
        "  batch_poll_wait: 0.05\n"
        "daemon:\n  interval: 1s\n  lease_ttl: 2s\n  full_rescan: 30d\n" + extra
    )
    return path


RUNNING: list[Daemon] = []


def kill_leftover_daemons() -> None:
    """Kills the daemons a test started and left running (``tests/conftest.py``
    calls it after every test)."""
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
    except sa.exc.DBAPIError:  # OperationalError on SQLite, ProgrammingError on PostgreSQL
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
