"""Transient is retried, fatal is explained (state store and databases).

Every fault here used to end in exit 70 and "This is a bug in mailsync"
(issue 13, rows 5, 10 and 12). Now a fault that passes with time (a locked
SQLite file, a PostgreSQL server refusing connections) is retried with
back-off and logged, by the daemon around its leader lock too; one that
needs an operator (read-only, corrupt, vanished, a missing directory) is one
line naming the file or URL and what to do, with exit 1 (2 when the
configuration names something that cannot be opened). A reader leaving the
pipe (``mailsync status | head -1``) ends the command quietly with 141.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.cli import main
from sync.daemon.lock import LeaseLock
from sync.database_faults import StoreBroken
from sync.demo import load_demo
from sync.emulator import DEFAULT_LIST_ID, Emulator
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields
from sync.rules.schema import load_rules
from sync.state.store import StateStore
from tests.support.cycle import NOW
from tests.support.daemon_process import Daemon, cycles_done

ROOT = Path(__file__).resolve().parent.parent
AT = NOW.isoformat()


def settings(
    tmp_path: Path, state: str, database: str | None = None, emulator: Emulator | None = None
) -> Path:
    """Settings over a small demo database, without Mailchimp (a dry run,
    which writes nothing to the state store) or with the emulator."""
    if database is None:
        database = f"sqlite:///{tmp_path}/app.sqlite"
        if not (tmp_path / "app.sqlite").exists():
            load_demo(database, "blousebrothers", users=15, seed=4, now=NOW)
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {database}\nstate: {state}\n"
        "daemon: {interval: 1s, lease_ttl: 3s}\n"
    )
    if emulator is not None:
        with path.open("a") as file:
            file.write(f"mailchimp:\n  list_id: {DEFAULT_LIST_ID}\n  base_url: {emulator.url}\n")
        ruleset = load_rules(ROOT / "rules.yaml")
        wanted = wanted_merge_fields(ruleset.entities.values())
        fix_merge_fields(emulator.client(), DEFAULT_LIST_ID, wanted)
    return path


@pytest.fixture(autouse=True)
def _no_mailchimp(monkeypatch):
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_LIST_ID", raising=False)


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def one_clear_line(err: str, *words: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], err
    assert "This is a bug" not in err
    assert "Traceback" not in err


# -- commands ---------------------------------------------------------------------------------


def test_a_corrupt_state_file_is_named_with_what_to_do(tmp_path, capsys):
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"this is not a database, it was overwritten by something else" * 20)
    config = settings(tmp_path, f"sqlite:///{state}")
    for command in ("status", "once"):
        code, err = cli(capsys, command, "--config", str(config), "--at", AT)
        assert code == 1, err
        one_clear_line(err, str(state), "corrupt", "restore it from a backup")


@pytest.mark.postgres
def test_a_read_only_state_store_is_named_on_both_databases(tmp_path, capsys, pg_url):
    state = tmp_path / "state.sqlite"
    config = settings(tmp_path, f"sqlite:///{state}")
    assert cli(capsys, "once", "--config", str(config), "--at", AT)[0] == 0
    # SQLite opened read-only (as a read-only file or mount would be).
    config = settings(tmp_path, f"sqlite:///file:{state}?mode=ro&uri=true")
    # (`once` here is a dry run, which writes nothing; `reinit` writes.)
    code, err = cli(capsys, "reinit", "--config", str(config), "--at", AT)
    assert code == 1, err
    one_clear_line(err, str(state), "read-only", "write access")
    # PostgreSQL: a hot standby (every transaction read-only).
    read_only = pg_url + "%20-cdefault_transaction_read_only%3Don"
    code, err = cli(capsys, "reinit", "--config", str(settings(tmp_path, read_only)), "--at", AT)
    assert code == 1, err
    one_clear_line(err, "state store postgresql+psycopg://", "read-only")


def test_a_state_store_in_a_missing_directory_is_a_configuration_error(tmp_path, capsys):
    state = tmp_path / "no" / "such" / "dir" / "state.sqlite"
    code, err = cli(capsys, "status", "--config", str(settings(tmp_path, f"sqlite:///{state}")))
    assert code == 2, err
    one_clear_line(err, str(state), "directory exists")


def test_demo_data_into_a_missing_directory_says_which(tmp_path, capsys):
    target = tmp_path / "missing" / "app.sqlite"
    demo = ("demo-data", "--example", "blousebrothers", "--users", "3")
    code, err = cli(capsys, *demo, "--db", f"sqlite:///{target}")
    assert code == 2, err
    one_clear_line(err, f"database {target}", "directory exists")


@pytest.mark.postgres
def test_postgresql_refusing_or_unknown_is_named_without_its_password(tmp_path, capsys, pg_url):
    port = free_port()
    refused = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/test"
    code, err = cli(capsys, "once", "--config", str(settings(tmp_path, refused)), "--at", AT)
    assert code == 1, err
    one_clear_line(err, f"state store postgresql+psycopg://postgres:***@127.0.0.1:{port}/test")
    assert "unreachable" in err
    assert "hunter2" not in err
    unknown = (
        sa.engine.make_url(pg_url)
        .set(database="no_such_database_here")
        .render_as_string(hide_password=False)
    )
    code, err = cli(capsys, "status", "--config", str(settings(tmp_path, unknown)))
    assert code == 2, err
    one_clear_line(err, "no_such_database_here", "check the database name")


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    config = settings(tmp_path, f"sqlite:///{tmp_path}/state.sqlite")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sync", "status", "--config", str(config), "--at", AT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line (`| head -0`)
    err = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 141, err
    assert err == ""


def test_a_lease_on_a_vanished_state_file_is_refused(tmp_path):
    state = StateStore(f"sqlite:///{tmp_path}/state.sqlite")
    state.migrate()
    lease = LeaseLock(state.engine, "audience")
    assert lease.try_acquire()
    (tmp_path / "state.sqlite").unlink()
    with pytest.raises(StoreBroken, match="has vanished"):
        lease.try_acquire()  # the pooled connection would still have written
    state.close()
    assert not (tmp_path / "state.sqlite").exists()


# -- the daemon -------------------------------------------------------------------------------


def wait_more_cycles(state: str, daemon: Daemon, more: int = 1, timeout: float = 60) -> None:
    target = cycles_done(state) + more
    deadline_ticks = int(timeout / 0.2)
    for _ in range(deadline_ticks):
        if cycles_done(state) >= target:
            return
        if daemon.process.poll() is not None:
            break
        threading.Event().wait(0.2)
    raise AssertionError(f"fewer than {target} cycles:\n{daemon.text()}")


def test_the_daemon_waits_out_a_locked_sqlite_state_store(tmp_path, mailchimp_emulator):
    state = f"sqlite:///{tmp_path}/state.sqlite"
    daemon = Daemon(settings(tmp_path, state, emulator=mailchimp_emulator), NOW)
    wait_more_cycles(state, daemon)
    holder = sqlite3.connect(tmp_path / "state.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the file
    try:
        # Up to two busy timeouts (10 s each) before the write gives up.
        daemon.wait_for(r"state store .*state\.sqlite is locked by another process", timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_more_cycles(state, daemon, more=2)  # it went on by itself
    assert daemon.stop() == 0
    assert "This is a bug" not in daemon.text()


def test_the_daemon_stops_with_one_line_when_its_state_file_vanishes(tmp_path, mailchimp_emulator):
    state = f"sqlite:///{tmp_path}/state.sqlite"
    daemon = Daemon(settings(tmp_path, state, emulator=mailchimp_emulator), NOW)
    wait_more_cycles(state, daemon)
    (tmp_path / "state.sqlite").unlink()
    assert daemon.process.wait(timeout=60) == 1, daemon.text()
    text = daemon.text()
    assert f"Error: state store {tmp_path / 'state.sqlite'} has vanished" in text
    assert "This is a bug" not in text


@pytest.mark.postgres
def test_the_daemon_retries_postgresql_refusing_connections(tmp_path, pg_url, mailchimp_emulator):
    port = free_port()
    state = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    daemon = Daemon(settings(tmp_path, state, emulator=mailchimp_emulator), NOW)
    daemon.wait_for("starting: state store .* is unreachable.*retrying in")
    with Proxy(port, 5432) as proxy:
        wait_more_cycles(pg_url, daemon)
        proxy.cut()  # the lock's session and every pooled connection die
        daemon.wait_for("leader lock: .*unreachable.*retrying in", timeout=60)
        proxy.resume()
        daemon.wait_for("(?s)leader: running cycles.*leader: running cycles", timeout=60)
        wait_more_cycles(pg_url, daemon)
        assert daemon.stop() == 0
    assert "This is a bug" not in daemon.text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Proxy:
    """A loopback TCP forwarder that can refuse and cut connections."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def __enter__(self) -> Proxy:
        self.resume()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            doomed, self.sockets = self.sockets, []
            listener, self.listener = self.listener, None
        for sock in [*doomed, *([listener] if listener else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_full_state_store_disk_does_not_make_every_cycle_push_again(
    tmp_path: Path, mailchimp_emulator: Emulator
) -> None:
    """Issue 13, row 9: the state store's disk fills up while a push runs.
    Mailchimp accepted the push, the ledger could not record it: before, every
    later cycle pushed it all again (10,744 operations in 20 s). Now what was
    accepted is kept and written before the next push sends anything, so a
    cycle on a full disk sends nothing, and once there is room again nothing
    already accepted is sent again."""
    from datetime import timedelta

    import sqlalchemy as sa

    from sync.daemon.once import run_once
    from tests.support.clock import Clock
    from tests.support.cycle import audience_fields, expected_members, make_runtime

    emulator = mailchimp_emulator
    app = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(app, "blousebrothers", users=1500, seed=1, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", app, tmp_path, emulator, clock)
    run_once(runtime, now=NOW)
    engine = runtime.state.engine
    with engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    room = {"pages": pages + 2}  # the disk is full: a few pages left

    @sa.event.listens_for(engine, "connect")
    def _disk(dbapi_connection, _record):
        dbapi_connection.execute(f"PRAGMA max_page_count = {room['pages']}")

    engine.dispose()
    later = NOW + timedelta(days=8)  # every member's status moved on
    sent = []
    for _ in range(3):
        before = emulator.calls.operation_count()
        with pytest.raises(sa.exc.OperationalError, match="full"):
            run_once(runtime, now=later, full=True)
        sent.append(emulator.calls.operation_count() - before)
    assert sent[0] > 500, "the first push went out before the disk was found full"
    assert sent[1:] == [0, 0], "a cycle on a full disk sends nothing again"

    room["pages"] = 1_000_000  # space freed
    engine.dispose()
    before = emulator.calls.operation_count()
    run_once(runtime, now=later, full=True)
    assert emulator.calls.operation_count() == before, "nothing accepted is sent again"
    assert audience_fields(emulator) == expected_members(runtime, "user", later)
    runtime.close()
