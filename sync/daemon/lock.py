"""One active daemon per audience: the leader lock.

Two daemons pushing to the same audience would race on the state store and
could send an event twice, so only the holder of the lock runs cycles; any
other instance waits as a standby and takes over when the holder dies.

* On PostgreSQL, a session-level advisory lock (``pg_try_advisory_lock``) held
  by a dedicated connection: it vanishes the instant the holder's connection
  does (process killed, host gone), so a standby takes over at once.
* On SQLite (one machine), a lease row in the state store: the holder renews
  it; a standby takes it once it has expired (``ttl`` after the last renewal).

The lock name is derived from the audience, so daemons for different
audiences sharing a state store do not block each other.

Fencing: while it leads, the daemon renews (or re-checks) the lock from a
thread of its own (``Keeper``), every second, so that a long
cycle cannot let the lease lapse. Before each Mailchimp request the sink's
``Caller`` calls the ``Fence``: it raises ``LeadershipLost`` unless the lock
was confirmed less than 3/4 of ``ttl`` ago, so a leader cut off from the state
store (or replaced) stops writing before a standby could take the lease.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa

from sync.database_faults import check_present, database_fault
from sync.exceptions import FatalError

log = logging.getLogger(__name__)


class LeadershipLost(FatalError):
    """This process may no longer hold the leader lock: it must not write."""


class LeaderLock(Protocol):
    #: How long the lock lasts without renewal (SQLite lease), or how often
    #: its session is re-checked (PostgreSQL).
    ttl: timedelta

    def try_acquire(self) -> bool:
        """Take or keep the lock; True while this process holds it."""
        ...

    def release(self) -> None: ...

    def fence(self) -> None:
        """Raise ``LeadershipLost`` unless the lock was confirmed recently."""
        ...


class _Confirmation:
    """When the lock was last confirmed held (monotonic), thread-safe."""

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl
        self.mutex = threading.Lock()
        self.at: float | None = None
        self.why = "the leader lock is not held"

    def held(self, started: float) -> None:
        with self.mutex:
            self.at = started if self.at is None else max(self.at, started)

    def lost(self, why: str) -> None:
        with self.mutex:
            self.at = None
            self.why = why

    def check(self, name: str) -> None:
        limit = self.ttl.total_seconds() * 0.75
        with self.mutex:
            at, why = self.at, self.why
        if at is None:
            raise LeadershipLost(f"leader lock {name}: {why}; not writing to Mailchimp")
        age = time.monotonic() - at
        if age > limit:
            raise LeadershipLost(
                f"leader lock {name}: not confirmed for {age:.1f}s (limit {limit:.1f}s, "
                "3/4 of daemon.lease_ttl); not writing to Mailchimp"
            )


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock``."""
    digest = hashlib.sha256(f"mailsync:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """PostgreSQL: held as long as our dedicated connection lives."""

    def __init__(
        self, engine: sa.Engine, name: str, *, ttl: timedelta = timedelta(seconds=30)
    ) -> None:
        self.engine = engine
        self.key = lock_key(name)
        self.name = name
        self.ttl = ttl
        self._conn: sa.Connection | None = None
        # The keeper thread and the main loop share the lock's connection.
        self._mutex = threading.RLock()
        self._confirmed = _Confirmation(ttl)

    def try_acquire(self) -> bool:
        with self._mutex:
            started = time.monotonic()
            held = self._try_acquire()
            if held:
                self._confirmed.held(started)
            else:
                self._confirmed.lost("the advisory lock's session is gone")
            return held

    def fence(self) -> None:
        self._confirmed.check(self.name)

    def _try_acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return True
            except sa.exc.DBAPIError:
                # Connection lost: so is the lock, this instant (a standby
                # may hold it already). Fence now, then try to take it again.
                log.warning("leader lock %s: connection lost", self.name)
                self._confirmed.lost("the advisory lock's session was lost")
                self._drop()
        conn = self.engine.connect()
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sa.exc.DBAPIError:
                pass
            self._conn = None

    def release(self) -> None:
        with self._mutex:
            self._confirmed.lost("released")
            if self._conn is not None:
                try:
                    self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    self._conn.commit()
                except sa.exc.DBAPIError:
                    pass
                self._drop()


class LeaseLock:
    """SQLite: a row naming the holder and until when; renewed by the holder."""

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        *,
        ttl: timedelta = timedelta(seconds=30),
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held = False
        self._confirmed = _Confirmation(ttl)

    def fence(self) -> None:
        self._confirmed.check(self.name)

    def try_acquire(self) -> bool:
        started = time.monotonic()
        # On an error the lease is neither confirmed nor known lost: the
        # fence lets its remaining time run out, no further.
        held = self._try_acquire()
        if held:
            self._confirmed.held(started)
        else:
            self._confirmed.lost("the lease is held by another mailsync")
        return held

    def _try_acquire(self) -> bool:
        # A deleted state file stays writable through open connections:
        # renewing on it would hide that everything written is being lost.
        check_present(self.engine.url, "state store")
        now = datetime.now(UTC)
        until = (now + self.ttl).isoformat()
        with self.engine.begin() as conn:
            # One statement: take the lease if it is free, expired or ours.
            conn.execute(
                sa.text(
                    "INSERT INTO leader_lease (name, holder, expires_at) VALUES (:n, :h, :u) "
                    "ON CONFLICT (name) DO UPDATE SET holder = :h, expires_at = :u "
                    "WHERE leader_lease.holder = :h OR leader_lease.expires_at < :now"
                ),
                {"n": self.name, "h": self.holder, "u": until, "now": now.isoformat()},
            )
            holder = conn.execute(
                sa.text("SELECT holder FROM leader_lease WHERE name = :n"), {"n": self.name}
            ).scalar()
        held = holder == self.holder
        if self._held and not held:
            log.error("leader lock %s: lease lost to %s", self.name, holder)
        self._held = held
        return held

    def release(self) -> None:
        self._confirmed.lost("released")
        if not self._held:
            return
        check_present(self.engine.url, "state store")  # not a new, empty file
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM leader_lease WHERE name = :n AND holder = :h"),
                {"n": self.name, "h": self.holder},
            )
        self._held = False


class LockStore(Protocol):
    """What the leader lock needs of the state store: its database."""

    @property
    def engine(self) -> sa.Engine: ...


def leader_lock(
    state: LockStore, name: str, *, ttl: timedelta = timedelta(seconds=30)
) -> LeaderLock:
    """The right lock for the state store's database."""
    if state.engine.dialect.name == "postgresql":
        return AdvisoryLock(state.engine, name, ttl=ttl)
    return LeaseLock(state.engine, name, ttl=ttl)


class Fence:
    """What the sink's ``Caller`` calls before each Mailchimp request.

    Unarmed (``mailsync once``, the demo, tests) it lets every request
    through; armed with the leader lock by ``serve`` it raises
    ``LeadershipLost`` when the lock may have been lost."""

    def __init__(self) -> None:
        self.lock: LeaderLock | None = None

    def arm(self, lock: LeaderLock | None) -> None:
        self.lock = lock

    def __call__(self) -> None:
        lock = self.lock
        if lock is not None:
            lock.fence()


class Keeper:
    """Renews (or re-checks) the leader lock from its own thread while the
    daemon leads, every second (``ttl`` / 4 if shorter), so that a long cycle
    in the main thread cannot let it lapse, and a lost advisory-lock session
    is noticed within a second. ``on_lost`` is called once if it is lost."""

    def __init__(self, lock: LeaderLock, on_lost: Callable[[], None]) -> None:
        self.lock = lock
        self.on_lost = on_lost
        self.every = max(0.1, min(1.0, lock.ttl.total_seconds() / 4))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="leader-keeper", daemon=True)

    def __enter__(self) -> Keeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.done.wait(self.every):
            try:
                held = self.lock.try_acquire()
            except Exception as exc:
                # The fence stops writes once confirmation is too old; the
                # main loop handles the fault itself (retry or explain).
                fault = database_fault(exc) or exc
                log.warning("leader lock %s: not renewed: %s", lock_name(self.lock), fault)
                continue
            if not held:
                self.on_lost()
                return


def lock_name(lock: LeaderLock) -> str:
    return str(getattr(lock, "name", "?"))
