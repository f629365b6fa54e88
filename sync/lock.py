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
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa

from sync.database_faults import check_present
from sync.state import StateStore

log = logging.getLogger(__name__)


class LeaderLock(Protocol):
    def try_acquire(self) -> bool:
        """Take or keep the lock; True while this process holds it."""
        ...

    def release(self) -> None: ...


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock``."""
    digest = hashlib.sha256(f"mailsync:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """PostgreSQL: held as long as our dedicated connection lives."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self.engine = engine
        self.key = lock_key(name)
        self.name = name
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.DBAPIError:
                # Connection lost: so is the lock. Try to take it again.
                log.warning("leader lock %s: connection lost", self.name)
                self._drop()
        conn = self.engine.connect()
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        conn.commit()
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

    def try_acquire(self) -> bool:
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
        if not self._held:
            return
        check_present(self.engine.url, "state store")  # not a new, empty file
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM leader_lease WHERE name = :n AND holder = :h"),
                {"n": self.name, "h": self.holder},
            )
        self._held = False


def leader_lock(
    state: StateStore, name: str, *, ttl: timedelta = timedelta(seconds=30)
) -> LeaderLock:
    """The right lock for the state store's database."""
    if state.engine.dialect.name == "postgresql":
        return AdvisoryLock(state.engine, name)
    return LeaseLock(state.engine, name, ttl=ttl)
