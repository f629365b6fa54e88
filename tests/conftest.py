"""Shared fixtures.

Database tests take the ``db_url`` fixture and so run twice: on SQLite (a
file in the test's temporary directory) and on PostgreSQL (a fresh schema in
the real server, dropped afterwards, which is far cheaper than a database per
test; the suite's two pytest-xdist workers each have a database of their
own). Without a reachable server the PostgreSQL half is skipped, except
under ``CI=true``, where it fails: CI must prove the PostgreSQL path.

Fixtures several test modules share are here too (``ledger``,
``demo_settings``, ``daemon_demo``); helpers that are not fixtures live in
``tests/support``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.mailchimp.audience import fix_merge_fields
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.memory import MemoryLedger
from sync.state.store import StateStore
from tests.support.cycle import NOW
from tests.support.daemon_process import kill_leftover_daemons

pytest_plugins = ["sync.emulator.fixtures"]

ROOT = Path(__file__).resolve().parent.parent

PG_ADMIN_URL = os.environ.get(
    "MAILSYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        engine.dispose()
    return None


def _worker_database(url: str, worker: str) -> str:
    """``url`` with a database of this pytest-xdist worker's own (``test_gw0``...),
    created on first use.

    Schemas already keep tests' tables apart, but not what is database-wide:
    advisory locks (a daemon's leader lock is one, named after the audience),
    so two workers' daemons would take each other for a second leader."""
    parsed = sa.engine.make_url(url)
    name = f"{parsed.database}_{worker}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if exists is None:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """URL of the PostgreSQL test server; skips (or fails under CI) without one."""
    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {reason}")
        pytest.skip(f"PostgreSQL unreachable: {reason}")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return PG_ADMIN_URL if worker is None else _worker_database(PG_ADMIN_URL, worker)


@contextmanager
def _fresh_schema(pg_admin_url: str) -> Iterator[str]:
    """A URL whose default schema is a fresh, empty schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_admin_url else "?"
    yield f"{pg_admin_url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A URL whose default schema is a fresh, empty schema of its own."""
    with _fresh_schema(pg_admin_url) as url:
        yield url


@pytest.fixture
def state_pg_url(pg_admin_url: str) -> Iterator[str]:
    """Another fresh schema on the same server: a state store kept apart
    from the application's database (``pg_url``)."""
    with _fresh_schema(pg_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.fspath(tmp_path)}/app.sqlite"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each database test runs once per supported backend."""
    name = "pg_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(autouse=True)
def _kill_leftover_daemons() -> Iterator[None]:
    """After each test, the ``mailsync run`` processes it left running are killed."""
    yield
    kill_leftover_daemons()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest) -> Iterator[PushLedger]:
    """Every PushLedger: MemoryLedger, and the state store on SQLite and on
    PostgreSQL. (Sink tests narrow it to memory and SQLite in their module.)"""
    if request.param == "memory":
        yield MemoryLedger()
        return
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    store = StateStore(url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def demo_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> tuple[Path, Path]:
    """A BlouseBrothers demo database (SQLite or PostgreSQL) and a settings
    file, without Mailchimp. The state store is a SQLite file either way.
    Gives (settings file, folder)."""
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_LIST_ID", raising=False)
    load_demo(db_url, "blousebrothers", users=40, seed=2, now=NOW)
    config = tmp_path / "mailsync.yaml"
    config.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {db_url}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
    )
    return config, tmp_path


@pytest.fixture
def daemon_demo(tmp_path: Path, mailchimp_emulator: Emulator) -> tuple[Path, str, str, Emulator]:
    """A BlouseBrothers demo database and a state store (SQLite files) and the
    emulator's audience ready for a daemon. Gives (folder, database URL,
    state URL, emulator)."""
    database = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(database, "blousebrothers", users=120, seed=11, now=NOW)
    state = f"sqlite:///{tmp_path}/state.sqlite"
    # The daemon expects the audience ready (mailsync check --fix).
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
