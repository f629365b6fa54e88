"""Database faults: which ones pass with time, which ones need an operator.

SQLAlchemy reports a locked SQLite file, a refused PostgreSQL connection, a
read-only or corrupt file and a vanished directory all as ``DBAPIError``s
that say nothing of *which* database failed. This module turns them into
mailsync's own errors, in one line naming the database (the state store's
file, or a URL without its password) and what to do:

* ``StoreUnavailable`` (retriable): locked, busy, refused, reset, out of
  connections or disk. The daemon retries with back-off and logs each try.
* ``StoreBroken`` (fatal, exit 1): read-only, corrupt, not a database, its
  tables gone, the file deleted while running. Retrying cannot help.
* ``DatabaseUnusable`` (configuration, exit 2): cannot be opened at all (no
  such directory, no such database, authentication refused).

``label_engine`` makes an engine tag its errors with a name (the state
store does it for its own), and ``driver_errors`` the errors of its driver
called directly (psycopg's ``COPY``); ``database_errors`` does the same around a block
for any other database (``mailsync demo-data``). ``database_fault`` finds a
tagged error in an exception's chain and classifies it.
"""

from __future__ import annotations

import os
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from sync.exceptions import ConfigurationError, FatalError, MailsyncError, RetriableError

_TAG = "mailsync_database"

#: The name ``label_engine`` gave each engine, for ``driver_errors``.
_NAMES: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()


class StoreUnavailable(RetriableError):
    """A database cannot be used right now (locked, refused, busy); retry later."""


class StoreBroken(FatalError):
    """A database is unusable until an operator acts (read-only, corrupt, gone)."""


class DatabaseUnusable(ConfigurationError):
    """A database cannot be opened as configured (missing directory, database, role)."""


def describe(url: sa.URL | str) -> str:
    """How an operator recognises a database: a SQLite file's path, else the
    URL without its password."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = str(parsed.database)
        if database.startswith("file:"):  # a URI filename (mode=ro and the like)
            database = urllib.parse.unquote(database[5:].partition("?")[0])
        return os.path.abspath(database)
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: sa.URL | str) -> str | None:
    """The file of a SQLite URL (None for memory databases and other backends)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true" or str(parsed.database).startswith("file:"):
        return None  # a URI filename; not worth parsing for a presence check
    return os.path.abspath(str(parsed.database))


def label_engine(engine: sa.Engine, role: str) -> None:
    """Tag every error ``engine`` raises (on connect or execute) with ``role``
    and the database's name, for ``database_fault``."""
    name = _NAMES[engine] = f"{role} {describe(engine.url)}"

    @sa.event.listens_for(engine, "handle_error")
    def _tag(context: Any) -> None:
        for exc in (context.sqlalchemy_exception, context.original_exception):
            if exc is not None:
                try:
                    setattr(exc, _TAG, name)
                except AttributeError:  # pragma: no cover - built-in exceptions without a dict
                    pass


@contextmanager
def driver_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Inside the block ``conn``'s driver is called directly (psycopg's
    ``COPY``, which SQLAlchemy does not run): its errors come out as
    SQLAlchemy's own would, tagged as ``label_engine`` tags them. Without
    it a full disk or a cancelled statement there would escape as an error
    the daemon takes for a bug."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as orig:
        error = sa.exc.DBAPIError.instance(statement, None, orig, base, dialect=conn.dialect)
        name = _NAMES.get(conn.engine)
        if name is not None:
            setattr(error, _TAG, name)
        raise error from orig


def _tagged(exc: BaseException) -> tuple[sa.exc.DBAPIError, str] | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = getattr(current, _TAG, None)
        if isinstance(current, sa.exc.DBAPIError) and name:
            return current, str(name)
        current = current.__cause__ or current.__context__
    return None


def classify(exc: sa.exc.DBAPIError, name: str) -> MailsyncError | None:
    """The error to report for ``exc`` raised by the database ``name``, or
    None when it is not a fault of the database itself (a bug: a constraint,
    a syntax error)."""
    orig = exc.orig
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    lowered = text.lower()
    if type(orig).__module__.startswith("sqlite3"):
        return _sqlite(lowered, text, name)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate == "25006":
        return StoreBroken(
            f"{name} is read-only ({text}): point mailsync at the primary server, "
            "or give its role write access"
        )
    if sqlstate == "42501":
        return StoreBroken(f"{name}: permission denied ({text}): grant the role access")
    if sqlstate in ("3D000", "28P01", "28000") or (
        not sqlstate and ("does not exist" in lowered or "authentication failed" in lowered)
    ):
        return DatabaseUnusable(
            f"cannot open {name} ({text}): check the database name, user and password in the URL"
        )
    if exc.connection_invalidated or sqlstate[:2] in ("", "08", "57", "53"):
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return StoreUnavailable(
                f"{name} is unreachable ({text}): is the server running and accepting connections?"
            )
    return None


def _sqlite(lowered: str, text: str, name: str) -> MailsyncError | None:
    if "locked" in lowered or "busy" in lowered:
        return StoreUnavailable(f"{name} is locked by another process ({text})")
    if "disk i/o" in lowered or "disk is full" in lowered:
        return StoreUnavailable(f"{name}: {text}: check the disk holding it (free space, health)")
    if "readonly" in lowered or "read-only" in lowered:
        return StoreBroken(
            f"{name} is read-only ({text}): give the user running mailsync write access "
            "to the file and its directory"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return StoreBroken(
            f"{name} is corrupt ({text}): restore it from a backup (moving it away makes "
            "mailsync start a new one, which sends recent events again)"
        )
    if "unable to open" in lowered:
        return DatabaseUnusable(
            f"cannot open {name} ({text}): check that its directory exists and is writable"
        )
    if "no such table" in lowered and name.startswith("state store"):
        return StoreBroken(
            f"{name} has lost its tables ({text}): the file was deleted or replaced while "
            "mailsync ran; restore it from a backup, or restart mailsync to start a new one"
        )
    return None


def database_fault(exc: BaseException) -> MailsyncError | None:
    """``exc`` as one of mailsync's errors when it is a tagged database fault."""
    found = _tagged(exc)
    if found is None:
        return None
    return classify(*found)


@contextmanager
def database_errors(name: str) -> Iterator[None]:
    """Inside the block, database faults become mailsync errors naming ``name``."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        fault = classify(exc, name)
        if fault is None:
            raise
        raise fault from exc


def check_present(url: sa.URL | str, role: str) -> None:
    """Raise ``StoreBroken`` when a SQLite file that was there has vanished: an
    open connection would go on writing to the deleted file unnoticed."""
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        raise StoreBroken(
            f"{role} {path} has vanished (deleted or moved while mailsync ran): restore it "
            "from a backup, or restart mailsync to start a new one (which sends recent "
            "events again)"
        )
