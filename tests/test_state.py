"""The SQL state store beyond the ledger: migrations, entity state, baselines, cycles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from sync.database_faults import StoreUnavailable, database_fault
from sync.exceptions import ConfigurationError
from sync.mailchimp.ledger import AcceptedPush
from sync.state.base import stage
from sync.state.baselines import Baseline
from sync.state.entities import EntityEvaluation
from sync.state.migrate import load_migrations, render_migration, split_statements
from sync.state.store import StateStore
from sync.state.tables import member
from tests.support.tcp_proxy import TcpProxy

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[StateStore]:
    s = StateStore(db_url)
    s.migrate()
    yield s
    s.close()


def test_migrations_are_versioned_and_idempotent(db_url: str) -> None:
    s = StateStore(db_url)
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions)
    assert versions[0] == 1
    assert s.migrate() == versions
    assert s.migrate() == []
    assert s.schema_versions() == versions
    s.close()


def test_migration_files_render_for_each_dialect() -> None:
    for migration in load_migrations():
        for dialect in ("sqlite", "postgresql"):
            statements = split_statements(render_migration(migration.sql, dialect))
            for statement in statements:
                assert "{{" not in statement
                assert statement.split()[0] in {"CREATE", "ALTER", "UPDATE", "DROP"}


def test_migration_12_keeps_the_accepted_merge_values(db_url: str) -> None:
    """Version 12 folds the member_field rows into one JSON object per member:
    the values keep their JSON types, and a member without fields gets {}."""
    s = StateStore(db_url)
    try:
        assert s.migrate(up_to=11)[-1] == 11
        with s.engine.begin() as conn:
            for email in ("a@x.io", "b@x.io"):
                conn.execute(sa.text("INSERT INTO member VALUES (:e, :t)"), {"e": email, "t": T0})
            for tag, value in (("N", "0"), ("S", '"0"'), ("E", '""'), ("F", "1.5"), ("U", '"é"')):
                conn.execute(
                    sa.text("INSERT INTO member_field VALUES ('a@x.io', :tag, :v, :t)"),
                    {"tag": tag, "v": value, "t": T0},
                )
        assert s.migrate() == [m.version for m in load_migrations() if m.version > 11]
        states = s.member_states(["a@x.io", "b@x.io"])
        assert states["a@x.io"].fields == {"N": 0, "S": "0", "E": "", "F": 1.5, "U": "é"}
        assert states["b@x.io"].fields == {}
        assert states["a@x.io"].pushed_at == T0
    finally:
        s.close()


def test_a_push_merges_its_values_over_those_accepted_before(db_url: str) -> None:
    s = StateStore(db_url)
    try:
        s.migrate()
        s.record_accepted("a@x.io", {"A": 1, "B": "x"}, None, T0)
        s.record_accepted("a@x.io", {"B": "", "C": 0.5}, None, T0 + timedelta(hours=1))
        state = s.member_states(["A@X.io"])["a@x.io"]
        assert state.fields == {"A": 1, "B": "", "C": 0.5}
        assert state.pushed_at == T0 + timedelta(hours=1)
    finally:
        s.close()


def test_default_is_a_sqlite_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    s = StateStore()
    s.migrate()
    assert s.dialect == "sqlite"
    assert "sqlite" in repr(s)
    s.close()


def test_schema_only_on_postgresql(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        StateStore(sqlite_url, schema="x")


@pytest.mark.postgres
def test_postgresql_in_a_configured_schema(pg_url: str) -> None:
    schema = "mailsync_state_test"
    s = StateStore(pg_url, schema=schema)
    try:
        s.migrate()
        s.set_watermark("w", "1")
        with s.engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalars()
            assert {"entity_state", "member", "schema_version"} <= set(tables)
        with pytest.raises(ConfigurationError, match="invalid schema"):
            StateStore(pg_url, schema='x"; DROP')
    finally:
        with s.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        s.close()


def _eval(i: int, status: str, nxt: datetime | None) -> EntityEvaluation:
    return EntityEvaluation(
        entity_type="user",
        entity_id=str(i),
        email=f"u{i}@x.io",
        status=status,
        base_status=status.split("_")[0],
        base_entered_at=T0,
        status_since=T0,
        next_change_at=nxt,
    )


def test_one_types_due_entities_are_found_through_an_index(sqlite_url: str) -> None:
    """A tick asks for one type's due entities: SQLite must search the
    (entity_type, next_change_at) index, not read every entity of the type
    through the (entity_type, status) one (1.3 s a tick at 1M users)."""
    store = StateStore(sqlite_url)
    store.migrate()
    statements: list[tuple[str, tuple[object, ...]]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if "next_change_at <=" in statement:
            statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        store.upsert_evaluations([_eval(i, "registered", T0) for i in range(50)], at=T0)
        assert len(store.due(T0, limit=10, entity_type="user")) == 10
        ((statement, parameters),) = statements
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
        store.close()
    assert "USING INDEX entity_state_due" in " ".join(str(step[-1]) for step in plan)


def test_evaluations_upsert_due_and_counts(store: StateStore) -> None:
    evals = [_eval(i, "registered", T0 + timedelta(hours=i)) for i in range(1500)]
    assert store.upsert_evaluations(evals, at=T0) == 1500
    store.upsert_evaluations([_eval(3, "registered_H24", None)], at=T0)
    due = store.due(T0 + timedelta(hours=5), limit=10)
    assert [d.entity_id for d in due] == ["0", "1", "2", "4", "5"]
    assert due[0].next_change_at == T0
    assert due[0].updated_at == T0
    assert len(store.due(T0 + timedelta(days=365), limit=2000)) == 1499
    assert store.due(T0, limit=10, entity_type="match") == []
    assert store.status_counts("user") == {"registered": 1499, "registered_H24": 1}
    state = store.entity_state_of("user", "3")
    assert state is not None
    assert state.status == "registered_H24"
    assert state.next_change_at is None
    assert store.entity_state_of("user", "nope") is None


def test_instants_come_back_aware_utc(store: StateStore) -> None:
    paris = timezone(timedelta(hours=1))
    store.upsert_evaluations([_eval(1, "x", datetime(2026, 1, 1, 11, 0, tzinfo=paris))], at=T0)
    got = store.entity_state_of("user", "1")
    assert got is not None
    assert got.next_change_at == T0
    assert got.next_change_at is not None
    assert got.next_change_at.utcoffset() == timedelta(0)


def test_baselines_replace_atomically(store: StateStore) -> None:
    assert store.baselines("user") == {}
    assert store.reinit_at("user") is None
    first = [Baseline(str(i), "registered", T0) for i in range(2500)]
    assert store.replace_baselines("user", T0, first) == 2500
    assert store.reinit_at("user") == T0
    assert len(store.baselines("user")) == 2500

    def interrupted() -> Iterator[Baseline]:
        for i in range(2100):  # more than one chunk reaches the database
            yield Baseline(str(i), "money_ok", T0 + timedelta(days=1))
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.replace_baselines("user", T0 + timedelta(days=1), interrupted())
    assert store.reinit_at("user") == T0
    assert store.baseline("user", "7") == Baseline("7", "registered", T0)
    assert len(store.baselines("user")) == 2500

    later = T0 + timedelta(days=2)
    store.replace_baselines("user", later, [Baseline("7", "wallet_ok", later)])
    assert store.baselines("user") == {"7": Baseline("7", "wallet_ok", later)}
    assert store.baselines("user", ["7", "8"]) == {"7": Baseline("7", "wallet_ok", later)}
    assert store.baseline("match", "7") is None


def test_cycles_and_watermarks(store: StateStore) -> None:
    first = store.start_cycle(T0)
    second = store.start_cycle(T0 + timedelta(minutes=1))
    store.finish_cycle(first, T0 + timedelta(seconds=5), ok=True, counts={"pushed": 3})
    cycles = store.cycles()
    assert [c.id for c in cycles] == [second, first]
    assert cycles[1].ok is True
    assert cycles[1].counts == {"pushed": 3}
    assert cycles[0].finished_at is None
    assert cycles[0].ok is None
    assert store.get_watermark("unsub") is None
    store.set_watermark("unsub", "2026-01-01T00:00:00Z")
    store.set_watermark("unsub", "2026-01-02T00:00:00Z")
    assert store.get_watermark("unsub") == "2026-01-02T00:00:00Z"


def test_a_sqlite_without_json_functions_is_named(sqlite_url: str) -> None:
    """The state store merges members' values with json_patch; a SQLite
    built without it gets a clear error at start, not a failed first push."""
    s = StateStore(sqlite_url)

    def missing(*_args: object) -> None:
        raise RuntimeError("no such function: json_patch")

    @sa.event.listens_for(s.engine, "connect")
    def _without_json(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.create_function("json_patch", 2, missing)

    try:
        with pytest.raises(ConfigurationError, match=r"no JSON functions \(json_patch\)"):
            s.migrate()
    finally:
        s.close()


def stage_in_a_transaction(store: StateStore, rows: Iterator[tuple[str, datetime, str]]) -> None:
    with store.engine.begin() as conn:
        stage(conn, member, ["email", "pushed_at", "fields_json"], rows)


def test_a_postgresql_connection_lost_during_a_bulk_write_is_retriable(pg_url: str) -> None:
    """Bulk writes reach psycopg's ``COPY`` directly, not through SQLAlchemy:
    a connection lost in the middle must still come out as the state store's
    retriable fault, not as an error the daemon would take for a bug; and
    the next write works."""
    proxy = TcpProxy("127.0.0.1", sa.make_url(pg_url).port or 5432)
    store = StateStore(proxy.url(pg_url))
    try:
        store.migrate()

        def rows() -> Iterator[tuple[str, datetime, str]]:
            yield ("a@x.io", T0, "{}")
            proxy.cut()
            for i in range(20_000):  # more than fits in the buffers on the way
                yield (f"m{i}@x.io", T0, "{}")

        with pytest.raises(sa.exc.DBAPIError) as raised:
            stage_in_a_transaction(store, rows())
        fault = database_fault(raised.value)
        assert isinstance(fault, StoreUnavailable), repr(raised.value)
        assert "state store postgresql+psycopg://" in str(fault)
        store.record_accepted_many([AcceptedPush("b@x.io", {"A": "1"}, T0)])
        assert store.member_states(["b@x.io"])["b@x.io"].fields == {"A": "1"}
    finally:
        store.close()
        proxy.close()


def test_a_postgresql_bulk_write_cancelled_by_the_server_is_the_state_stores_fault(
    pg_url: str,
) -> None:
    """The same, with the connection left alive (the rollback works, so no
    error of SQLAlchemy's carries the driver's): a statement the server
    cancels (a timeout, an operator's ``pg_cancel_backend``) in the middle
    of a ``COPY`` is the state store's retriable fault too."""
    store = StateStore(pg_url)
    admin = sa.create_engine(pg_url)
    try:
        store.migrate()
        with admin.connect() as conn:
            # The store's next connection will be its pooled one, whose pid this is.
            with store.engine.connect() as own:
                pid = int(own.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

            def rows() -> Iterator[tuple[str, datetime, str]]:
                yield ("a@x.io", T0, "{}")
                conn.exec_driver_sql(f"SELECT pg_cancel_backend({pid})")

            with pytest.raises(sa.exc.DBAPIError) as raised:
                stage_in_a_transaction(store, rows())
        fault = database_fault(raised.value)
        assert isinstance(fault, StoreUnavailable), repr(raised.value)
        assert "canceling statement" in str(fault)
        assert "state store postgresql+psycopg://" in str(fault)
    finally:
        store.close()
        admin.dispose()
