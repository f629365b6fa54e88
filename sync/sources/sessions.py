"""Read-only sessions on the application database, and stopping them.

Sessions are read-only: a PostgreSQL transaction opened ``READ ONLY``
(REPEATABLE READ, so every query of one read sees the same snapshot), a
SQLite file opened with ``mode=ro`` plus ``PRAGMA query_only``. A mistaken
``UPDATE`` in sources.yaml is refused by the database itself.

A ``statement_timeout`` makes PostgreSQL cancel a query that runs too long;
``ReadOnlyDatabase.cancel`` stops the running ones from another thread (the
daemon's stop path). Database errors are named after the query that caused
them: a query's fault is a ``SourceQueryError`` (fix sources.yaml), a lost
or busy database a retriable ``SourceUnavailableError``.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Self
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from psycopg.adapt import Loader
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
from sqlalchemy.engine import Connection, Engine, Row

from sync.exceptions import ConfigurationError, RetriableError
from sync.sources.model import EntitySource, Query
from sync.sources.values import bind_instant

log = logging.getLogger("sync.sources.model")

#: Rows fetched per round trip from a server-side cursor.
DEFAULT_BATCH = 5000


class SourceQueryError(ConfigurationError):
    """A query of sources.yaml failed or returned the wrong columns: fix the file."""


class SourceUnavailableError(RetriableError):
    """The application database could not be reached; try again later."""


_CURSORS = "mailsync_cursors"


def read_only_engine(
    url: str | sa.URL, *, statement_timeout: timedelta | None = None, **kwargs: Any
) -> Engine:
    """An engine whose every session refuses writes.

    PostgreSQL: each transaction begins ``READ ONLY`` at ``REPEATABLE READ``
    (one consistent snapshot per read) and the session default is read-only
    too, so even a ``COMMIT`` smuggled into a query cannot open a writable
    transaction. SQLite: the file is opened through a ``mode=ro`` URI, and
    ``PRAGMA query_only`` covers in-memory databases.

    ``statement_timeout`` (PostgreSQL) makes the server cancel any statement
    of these sessions that runs longer, so that a hanging query cannot stall
    the daemon; the cycle fails and the next one tries again.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(_sqlite_read_only_url(parsed), **kwargs)
        sa.event.listen(engine, "connect", _sqlite_query_only)
        return engine
    if backend == "postgresql":
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        engine = sa.create_engine(parsed, execution_options=options, **kwargs)
        sa.event.listen(engine, "connect", _pg_session_read_only)
        sa.event.listen(engine, "before_cursor_execute", _remember_cursor)
        if statement_timeout is not None:
            milliseconds = max(1, int(statement_timeout.total_seconds() * 1000))

            @sa.event.listens_for(engine, "connect")
            def _statement_timeout(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"SET SESSION statement_timeout = {milliseconds}")
                cursor.close()
                dbapi_connection.commit()

        return engine
    raise ConfigurationError(
        f"unsupported database {backend!r} for sources (supported: postgresql, sqlite)"
    )


def _sqlite_read_only_url(url: sa.URL) -> sa.URL:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri") == "true":
        if url.query.get("uri") == "true" and "mode" not in url.query:
            return url.update_query_dict({"mode": "ro"})
        return url
    # A URI filename lets SQLite itself enforce read-only (mode=ro); quote the
    # path because '?' or '#' in a file name would otherwise start the query.
    return url.set(database="file:" + urllib.parse.quote(database)).update_query_dict(
        {"mode": "ro", "uri": "true"}
    )


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def _remember_cursor(
    conn: Connection, cursor: Any, _statement: Any, _params: Any, _context: Any, _many: bool
) -> None:
    # A streamed query cancelled (statement timeout, SIGTERM) aborts the
    # transaction, and SQLAlchemy drops its server-side cursors (this one and
    # the other streams of the read) without closing them; psycopg then
    # complains when they are garbage-collected. The session closes them.
    conn.info.setdefault(_CURSORS, []).append(cursor)


def close_cursors(info: dict[Any, Any]) -> None:
    """Close the cursors of this session's queries still open.

    ``info`` is the session connection's ``info``, taken when the session
    began: once the connection is lost, SQLAlchemy no longer lets it be read
    through the connection, yet the cursors must still be closed (psycopg
    complains when it finds them open at garbage collection).
    """
    for cursor in info.pop(_CURSORS, []):
        if not getattr(cursor, "closed", True):
            try:
                cursor.close()
            except Exception as exc:
                log.debug("closing the cursor of a failed query: %s", exc)


def _pg_session_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()
    _load_infinite_instants_as_text(dbapi_connection)


def _load_infinite_instants_as_text(dbapi_connection: Any) -> None:
    """PostgreSQL's ``'infinity'`` and ``'-infinity'`` dates and timestamps
    come back as those words instead of failing the whole read.

    Python's ``datetime`` has no infinity, so psycopg refuses such a value
    ("timestamp too large (after year 10K)"), and one row would stop every
    read of its entity type. As text, the value meets ``values.to_utc`` like
    any unreadable instant: the row is reported with its value and skipped
    (an action), or read as null (a fact). The compiled SQL compares them in
    the database, where they are in order.
    """
    for type_name, base in (
        ("date", DateLoader),
        ("timestamp", TimestampLoader),
        ("timestamptz", TimestamptzLoader),
    ):
        dbapi_connection.adapters.register_loader(type_name, _infinite_as_text(base))


def _infinite_as_text(base: type[Loader]) -> type[Loader]:
    class InfiniteAsText(base):  # type: ignore[valid-type, misc]
        def load(self, data: Any) -> Any:
            if bytes(data) in (b"infinity", b"-infinity"):
                return bytes(data).decode()
            return super().load(data)

    return InfiniteAsText


class ReadOnlyDatabase:
    """The application database opened read-only: its sessions, statements
    whose errors name their query, and the cancellation of running queries.

    ``SourceReader`` is one; the compiled SQL runs on its engine too
    (``tracked``).
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        batch_size: int = DEFAULT_BATCH,
        engine_options: Mapping[str, Any] | None = None,
        statement_timeout: timedelta | None = None,
    ) -> None:
        self.engine = read_only_engine(
            url, statement_timeout=statement_timeout, **dict(engine_options or {})
        )
        self.dialect = self.engine.dialect.name
        self.batch_size = batch_size
        #: Driver connections running a query now, for ``cancel``.
        self._busy: set[Any] = set()
        self._busy_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tracked(self, conn: Connection) -> Iterator[None]:
        """Count a connection opened elsewhere on this reader's engine (the
        compiled SQL's) among the running queries that ``cancel`` stops."""
        driver = conn.connection.dbapi_connection
        with self._busy_lock:
            self._busy.add(driver)
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy.discard(driver)

    def cancel(self) -> int:
        """Cancel the queries running now (from another thread: the daemon's
        stop path); each fails in its reader with a retriable error. Returns
        how many were cancelled."""
        with self._busy_lock:
            busy = list(self._busy)
        for connection in busy:
            # psycopg: a cancel request on a side channel; sqlite3: interrupt.
            stop = getattr(connection, "cancel", None) or getattr(connection, "interrupt", None)
            if stop is not None:
                try:
                    stop()
                except Exception as exc:  # the query may have just ended
                    log.debug("cancelling a source query: %s", exc)
        return len(busy)

    def session(self, source: EntitySource) -> _Session:
        """A read-only transaction with ``source``'s naive time zone in force."""
        return _Session(self.engine, source, self._busy, self._busy_lock)

    def now_params(self, query: Query, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
        """``:now`` bound for ``query`` (when it uses it), in ``tz`` on SQLite."""
        params: dict[str, Any] = {}
        if "now" in query.params:
            params["now"] = bind_instant(now, self.dialect, tz)
        return params

    def execute(
        self, conn: Connection, query: Query, sql: str | sa.TextClause, params: Mapping[str, Any]
    ) -> sa.CursorResult[Any]:
        """Run ``sql`` for ``query``, streamed in batches; a refused query is a
        ``SourceQueryError``, an unreachable database ``SourceUnavailableError``."""
        statement = sa.text(sql) if isinstance(sql, str) else sql
        try:
            return conn.execute(
                statement.execution_options(yield_per=self.batch_size), dict(params)
            )
        except sa.exc.DBAPIError as exc:
            raise _query_error(exc, query, "refused the query") from exc


#: SQLite reports everything as OperationalError; these ones pass with time.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "interrupted")


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """Whether retrying later may help: a lost connection, a locked file.

    Everything else (unknown table, syntax, a write refused by the read-only
    session) is the query's fault and is reported as a configuration error.
    """
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return any(word in str(orig).lower() for word in _SQLITE_TRANSIENT)
    # psycopg raises OperationalError for connection failures and also for a
    # few server states (e.g. cancelled statements); SQLSTATE class 08 is
    # the connection class, 57 operator intervention (shutdown, cancel).
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate[:2] in ("", "08", "57", "53")


def _query_error(exc: sa.exc.DBAPIError, query: Query, doing: str) -> Exception:
    """The error to raise for ``exc``, named after ``query``: retriable when
    ``_transient``, else the query's fault (the database ``doing`` it)."""
    if _transient(exc):
        return SourceUnavailableError(f"{query.label}: {exc.orig}")
    return SourceQueryError(f"{query.label}: the database {doing}: {exc.orig}")


def guarded_rows(result: sa.CursorResult[Any], query: Query) -> Iterator[Row[Any]]:
    """Rows of ``result``, with fetch-time database errors named after the query."""
    try:
        yield from result
    except sa.exc.DBAPIError as exc:
        raise _query_error(exc, query, "failed while reading") from exc
    finally:
        result.close()


class _Session:
    """One read-only transaction, with the source's naive time zone in force."""

    def __init__(
        self,
        engine: Engine,
        source: EntitySource,
        busy: set[Any] | None = None,
        busy_lock: threading.Lock | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.conn: Connection | None = None
        self.busy = busy if busy is not None else set()
        self.busy_lock = busy_lock or threading.Lock()
        self.driver: Any = None
        self.info: dict[Any, Any] = {}

    def __enter__(self) -> Connection:
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise SourceUnavailableError(
                f"cannot connect to the source database: {exc.orig}"
            ) from exc
        self.conn = conn
        self.info = conn.info
        self.driver = conn.connection.dbapi_connection
        with self.busy_lock:
            self.busy.add(self.driver)
        try:
            self._begin(conn)
        except BaseException as exc:
            # Lost while the session began (the pool handed out a connection
            # whose server had gone): closed here, since __exit__ will not run.
            self.__exit__(type(exc))
            if isinstance(exc, sa.exc.DBAPIError):
                raise SourceUnavailableError(
                    f"the source database's connection was lost: {exc.orig}"
                ) from exc
            raise
        return conn

    def _begin(self, conn: Connection) -> None:
        conn.begin()
        if conn.dialect.name == "postgresql":
            # Local to this transaction: `timestamp` values and :now then
            # compare as wall-clock times of the source's zone.
            conn.execute(
                sa.text("SELECT set_config('TimeZone', :tz, true)"),
                {"tz": self.source.naive_timezone},
            )
        elif conn.dialect.name == "sqlite":
            # pysqlite opens no transaction for SELECTs; BEGIN makes every
            # query of this read see one snapshot, as on PostgreSQL.
            conn.exec_driver_sql("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self.conn is not None
        with self.busy_lock:
            self.busy.discard(self.driver)
        try:
            close_cursors(self.info)
            self.conn.rollback()  # read-only: nothing to commit, ever
        except (sa.exc.DBAPIError, sa.exc.PendingRollbackError):
            if exc_type is None:
                raise
            # The read failed already (cancelled: SQLite then interrupts the
            # rollback too; connection lost, when SQLAlchemy refuses to touch
            # the connection at all): that error is the one to report, and
            # this connection is not reused.
            self.conn.invalidate()
        finally:
            self.conn.close()
