"""Shared fixtures.

Database tests take the ``db_url`` fixture and so run twice: on SQLite (a
file in the test's temporary directory) and on PostgreSQL (a fresh schema in
the real server, dropped afterwards, which is far cheaper than a database per
test). Without a reachable server the PostgreSQL half is skipped, except
under ``CI=true``, where it fails: CI must prove the PostgreSQL path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

pytest_plugins = ["sync.emulator.fixtures"]

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


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """URL of the PostgreSQL test server; skips (or fails under CI) without one."""
    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {reason}")
        pytest.skip(f"PostgreSQL unreachable: {reason}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A URL whose default schema is a fresh, empty schema of its own."""
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
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.fspath(tmp_path)}/app.sqlite"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each database test runs once per supported backend."""
    name = "pg_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(name))
