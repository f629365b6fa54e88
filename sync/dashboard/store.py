"""The state store opened READ-ONLY, and the queries only the dashboard asks.

The dashboard must not be able to change anything, whatever bug a page has:
the guarantee is given by the database, not by care in the code.

* SQLite: the file is opened through a ``mode=ro`` URI, so SQLite itself
  refuses every write (and a missing file is an error, not a new database).
  Transactions are left deferred: ``BEGIN IMMEDIATE``, which the daemon's
  store uses, asks for a write lock.
* PostgreSQL: every session is ``SET SESSION CHARACTERISTICS AS TRANSACTION
  READ ONLY``, so the server refuses writes; the schema is only put on the
  search path, never created.

``ReadOnlyStore`` is a ``StateStore``, so the read methods (counts, member
states, baselines …) and ``sync.evaluate.explain`` work on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.exceptions import ConfigurationError
from sync.mailchimp.ledger import PushFailure
from sync.state.base import DEFAULT_SQLITE_FILE
from sync.state.entities import EntityState
from sync.state.store import StateStore
from sync.state.tables import entity_state, event_pending, push

#: The migration that adds the history tables (sync/state/migrations/0008_*).
HISTORY_VERSION = 8


def read_only_url(url: str | None) -> str:
    """The URL to open ``url`` read-only with (SQLite: a ``mode=ro`` URI)."""
    parsed = sa.engine.make_url(url or f"sqlite:///{DEFAULT_SQLITE_FILE}")
    if parsed.get_backend_name() != "sqlite":
        return parsed.render_as_string(hide_password=False)
    database = parsed.database
    if not database or database == ":memory:":
        raise ConfigurationError("state store: an in-memory SQLite database has nothing to show")
    if database.startswith("file:"):
        raise ConfigurationError("state store: give the SQLite file as sqlite:///PATH")
    path = Path(database).resolve()
    if not path.is_file():
        raise ConfigurationError(f"state store: no such file {path} (has the daemon run here?)")
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@dataclass(frozen=True)
class Leader:
    holder: str
    until: str  # expiry (SQLite lease) or "while connected" (PostgreSQL)


class ReadOnlyStore(StateStore):
    """A ``StateStore`` the database will not let write."""

    def __init__(self, url: str | None = None, *, schema: str | None = None) -> None:
        super().__init__(read_only_url(url), schema=schema)
        if self.dialect == "postgresql":
            search_path = schema

            @sa.event.listens_for(self.engine, "connect", insert=True)
            def _read_only(dbapi_conn: Any, _record: Any) -> None:
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True
                with dbapi_conn.cursor() as cursor:
                    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                    if search_path is not None:
                        cursor.execute(f'SET SESSION search_path TO "{search_path}"')
                dbapi_conn.autocommit = autocommit

        versions = self._versions()
        if not versions:
            raise ConfigurationError(
                "state store: no mailsync tables in it yet "
                "(run `mailsync once` or the daemon first)"
            )
        #: False on a store the daemon has not migrated to the history tables yet.
        self.has_history = HISTORY_VERSION in versions

    def _use_schema(self, schema: str) -> None:
        pass  # set per session by the listener above; creating it would be a write

    def _real_sqlite_transactions(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 10000")

    def _versions(self) -> list[int]:
        try:
            return self.schema_versions()
        except sa.exc.OperationalError as exc:
            raise ConfigurationError(f"state store: cannot read it: {exc.orig}") from None
        except sa.exc.ProgrammingError:
            return []

    def migrate(self, *, up_to: int | None = None) -> list[int]:
        raise ConfigurationError("the dashboard opens the state store read-only; it never migrates")

    # -- what only the dashboard asks ---------------------------------------

    def sample(self, entity_type: str, status: str | None, limit: int = 50) -> list[EntityState]:
        """Up to ``limit`` entities in a status (None: no status), latest entrants
        first among them. A sample, not the latest of all: it is read straight
        from the (entity_type, status) index, which costs the same for a status
        of fifty entities or of half a million."""
        condition = (
            entity_state.c.status.is_(None) if status is None else entity_state.c.status == status
        )
        query = (
            sa.select(entity_state)
            .where(entity_state.c.entity_type == entity_type, condition)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            found = [self._entity(row) for row in conn.execute(query)]
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda s: s.status_since or oldest, reverse=True)

    def count_in(self, entity_type: str, status: str | None) -> int:
        """How many entities are in one status (an index range, not a full count)."""
        condition = (
            entity_state.c.status.is_(None) if status is None else entity_state.c.status == status
        )
        query = sa.select(sa.func.count()).where(
            entity_state.c.entity_type == entity_type, condition
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def find(self, who: str, limit: int = 20) -> list[EntityState]:
        """Entities whose email (case-insensitive) or id is ``who``."""
        who = who.strip()
        if not who:
            return []
        condition = (
            entity_state.c.email == normalise_email(who)
            if "@" in who
            else entity_state.c.entity_id == who
        )
        query = (
            sa.select(entity_state)
            .where(condition)
            .order_by(entity_state.c.entity_type, entity_state.c.entity_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._entity(row) for row in conn.execute(query)]

    def failure_counts(self) -> dict[str, int]:
        """Failed pushes by kind, pushes awaiting confirmation, events in doubt."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(push.c.state, push.c.permanent, sa.func.count()).group_by(
                    push.c.state, push.c.permanent
                )
            ).all()
            pending_events = int(conn.execute(sa.select(sa.func.count()).select_from(
                event_pending)).scalar_one())  # fmt: skip
        counts = {"permanent": 0, "transient": 0, "pending": 0, "events_pending": pending_events}
        for state, permanent, n in rows:
            if state == "failed":
                counts["permanent" if permanent else "transient"] += int(n)
            else:
                counts["pending"] += int(n)
        return counts

    def recent_failures(self, *, permanent: bool, limit: int = 100) -> list[PushFailure]:
        query = (
            sa.select(push)
            .where(push.c.state == "failed", push.c.permanent == permanent)
            .order_by(push.c.failed_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._failure(row) for row in conn.execute(query)]

    def leaders(self) -> list[Leader]:
        """Who holds the leader lock: the SQLite lease rows, or the PostgreSQL
        sessions holding an advisory lock on this database."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                try:
                    rows = conn.execute(
                        sa.text("SELECT holder, expires_at FROM leader_lease ORDER BY name")
                    ).all()
                except sa.exc.OperationalError:
                    return []
                return [Leader(str(h), str(u)) for h, u in rows]
            rows = conn.execute(
                sa.text(
                    "SELECT a.pid, a.client_addr, a.application_name, a.backend_start "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            ).all()
            return [
                Leader(
                    f"pid {pid} {addr or 'local'} {app or ''}".strip(),
                    f"connected since {start:%Y-%m-%d %H:%M:%S}",
                )
                for pid, addr, app, start in rows
            ]
