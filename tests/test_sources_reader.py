"""Reading sources: read-only sessions, streamed merge, orphans, instants (both backends)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sync.records import ActionOccurrence
from sync.sources.reader import SourceReader
from sync.sources.report import ReadReport
from sync.sources.schema import parse_sources
from sync.sources.sessions import SourceQueryError, read_only_engine
from sync.sources.values import bind_instant, convert, to_utc

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))

SOURCES = """\
entities:
  user:
    list: SELECT id, email, first_name FROM people
    actions:
      signup: SELECT id, joined_at AS at FROM people
      paid: SELECT person_id AS id, at FROM payments WHERE at <= :now
    facts:
      - sql: SELECT person_id AS id, COUNT(*) AS payments, MAX(at) AS last_paid
             FROM payments GROUP BY person_id
        columns:
          payments: {type: number, default: 0}
          last_paid: instant
      - sql: SELECT id, vip FROM people
        columns: {vip: bool}
"""


def _setup(url: str, payments: list[tuple[int, str]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT,"
            " joined_at TIMESTAMP, vip BOOLEAN)"
        )
        conn.exec_driver_sql("CREATE TABLE payments (person_id INTEGER, at TIMESTAMP)")
        conn.execute(
            sa.text("INSERT INTO people VALUES (:id, :email, :name, :joined, :vip)"),
            [
                {
                    "id": 2,
                    "email": "B@Example.org ",
                    "name": None,
                    "joined": "2026-01-02 10:00:00",
                    "vip": True,
                },
                {
                    "id": 10,
                    "email": "c@example.org",
                    "name": "Chloé",
                    "joined": "2026-01-03 10:00:00",
                    "vip": False,
                },
                {
                    "id": 1,
                    "email": "a@example.org",
                    "name": "Ann",
                    "joined": "2026-01-01 10:00:00",
                    "vip": False,
                },
            ],
        )
        if payments:
            conn.execute(
                sa.text("INSERT INTO payments VALUES (:id, :at)"),
                [{"id": i, "at": at} for i, at in payments],
            )
    engine.dispose()


def read(url: str, text: str = SOURCES, **kwargs):
    report = ReadReport("user")
    with SourceReader(parse_sources(text), url, batch_size=2) as reader:
        records = list(reader.read_entities("user", now=NOW, report=report, **kwargs))
    return records, report


def test_merge_orders_entities_and_attaches_their_rows(db_url):
    _setup(
        db_url,
        [
            (10, "2026-01-05 00:00:00"),
            (1, "2026-01-04 09:00:00"),
            (10, "2026-01-04 00:00:00"),
            (7, "2026-01-04 00:00:00"),
            (1, "2026-04-01 00:00:00"),
        ],
    )
    records, report = read(db_url)
    assert [r.id for r in records] == ["1", "2", "10"]  # numeric order, not "1", "10", "2"
    ann, bea, chloe = records
    assert ann.actions == (
        ActionOccurrence(datetime(2026, 1, 1, 10, tzinfo=UTC), "signup"),
        ActionOccurrence(datetime(2026, 1, 4, 9, tzinfo=UTC), "paid"),
    )  # the April payment is after :now, filtered by the query
    assert ann.facts == {
        "first_name": "Ann",
        "payments": 2,
        "last_paid": datetime(2026, 4, 1, tzinfo=UTC),
        "vip": False,
    }
    # No payment row: the declared default, and null for an instant.
    assert bea.facts == {"first_name": None, "payments": 0, "last_paid": None, "vip": True}
    assert bea.email == "B@Example.org"  # stripped, case kept: the sink folds case
    assert [a.action for a in bea.actions] == ["signup"]
    assert [a.at.day for a in chloe.actions] == [3, 4, 5]
    # Person 7 does not exist: reported, attached to nobody.
    assert report.entities == 3
    assert sorted(report.orphans.values()) == [1, 1]
    assert any("id 7 is not in the entity list" in e for e in report.examples)


def test_entities_without_any_action_still_come_out(db_url):
    _setup(db_url, [])
    records, report = read(db_url)
    assert [(r.id, len(r.actions), r.facts["payments"]) for r in records] == [
        ("1", 1, 0),
        ("2", 1, 0),
        ("10", 1, 0),
    ]
    assert report.clean


def test_reading_only_some_ids(db_url):
    _setup(db_url, [(10, "2026-01-05 00:00:00"), (1, "2026-01-04 09:00:00")])
    records, report = read(db_url, ids=["10", "1", "999"])
    assert [(r.id, len(r.actions)) for r in records] == [("1", 2), ("10", 2)]
    assert report.clean  # rows of other ids are filtered out, not orphans


def test_naive_timestamps_are_read_in_the_configured_zone(db_url):
    _setup(db_url, [])
    text = "naive_timezone: Europe/Paris\n" + SOURCES
    records, _ = read(db_url, text)
    assert records[0].actions[0].at == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert records[0].actions[0].at.tzinfo is UTC


def test_watermark_and_changed_ids(db_url):
    _setup(db_url, [(10, "2026-01-05 00:00:00"), (1, "2026-01-04 09:00:00")])
    with SourceReader(parse_sources(SOURCES), db_url) as reader:
        assert reader.watermark("user", now=NOW) == datetime(2026, 1, 5, tzinfo=UTC)
        since = datetime(2026, 1, 2, 12, tzinfo=UTC)
        assert reader.changed_ids("user", since=since, now=NOW) == ["1", "10"]
        assert reader.changed_ids("user", since=NOW, now=NOW) == []


def test_explicit_changed_and_watermark_queries(db_url):
    _setup(db_url, [])
    text = SOURCES + (
        "    watermark: SELECT MAX(joined_at) AS at FROM people\n"
        "    changed: SELECT id FROM people WHERE joined_at > :since\n"
    )
    with SourceReader(parse_sources(text), db_url) as reader:
        assert reader.watermark("user", now=NOW) == datetime(2026, 1, 3, 10, tzinfo=UTC)
        since = datetime(2026, 1, 2, 10, tzinfo=UTC)  # strictly after: 2 is not changed
        assert reader.changed_ids("user", since=since, now=NOW) == ["10"]


def test_text_ids_merge_in_byte_order(db_url):
    _setup(db_url, [(10, "2026-01-05 00:00:00"), (2, "2026-01-04 09:00:00")])
    text = """\
entities:
  ticket:
    id_type: text
    list: SELECT CAST(id AS VARCHAR(10)) || '-x' AS id, email FROM people
    actions:
      paid: SELECT CAST(person_id AS VARCHAR(10)) || '-x' AS id, at FROM payments
"""
    with SourceReader(parse_sources(text), db_url) as reader:
        records = list(reader.read_entities("ticket", now=NOW))
    assert [(r.id, len(r.actions)) for r in records] == [("1-x", 0), ("10-x", 1), ("2-x", 1)]


def test_misordered_ids_fail_loudly(db_url):
    _setup(db_url, [])
    text = """\
entities:
  user:
    list: SELECT CAST(id AS VARCHAR(10)) AS id, email FROM people
"""
    # Integer entity type, but the query returns text ids: "10" sorts before "2".
    with pytest.raises(SourceQueryError, match="not ordered by id"):
        read(db_url, text)


def test_missing_columns_name_the_query(db_url):
    _setup(db_url, [])
    text = "entities:\n  user:\n    list: SELECT id FROM people\n"
    with pytest.raises(SourceQueryError) as info:
        read(db_url, text)
    assert "sources.yaml:3 (entities ==> user ==> list)" in str(info.value)
    assert "expected column(s) email" in str(info.value)


def test_sql_errors_name_the_query(db_url):
    _setup(db_url, [])
    text = "entities:\n  user:\n    list: SELECT id, email FROM nowhere\n"
    with pytest.raises(SourceQueryError, match=r"sources.yaml:3 .*refused the query"):
        read(db_url, text)


def test_duplicates_and_bad_values_are_reported(db_url, caplog):
    _setup(db_url, [])
    text = """\
entities:
  user:
    list: SELECT id, email FROM people UNION ALL SELECT 1, 'again@example.org'
    actions:
      paid: SELECT id, 'not a date' AS at FROM people WHERE id = 1
"""
    with caplog.at_level(logging.WARNING, logger="sync.sources.model"):
        records, report = read(db_url, text)
    assert [r.id for r in records] == ["1", "2", "10"]
    assert sum(report.duplicates.values()) == 1
    assert sum(report.bad_values.values()) == 1
    assert "duplicate rows" in caplog.text


def test_rows_with_unusable_ids_are_reported_and_skipped(db_url, caplog):
    """One bad row never stops a read: a null id, and an integer id written
    as text in a way that would merge it with another entity ('01' with 1),
    are each reported with the query and the value, and skipped."""
    _setup(db_url, [(1, "2026-01-05 10:00:00")])
    text = """\
entities:
  user:
    list: SELECT id, email FROM people
    actions:
      paid: >-
        SELECT CAST(person_id AS VARCHAR(10)) AS id, at FROM payments
        UNION ALL SELECT '01', at FROM payments
        UNION ALL SELECT NULL, at FROM payments
"""
    with caplog.at_level(logging.WARNING, logger="sync.sources.model"):
        records, report = read(db_url, text)
    assert [(r.id, len(r.actions)) for r in records] == [("1", 1), ("2", 0), ("10", 0)]
    assert report.bad_ids == {"sources.yaml:5 (entities ==> user ==> actions ==> paid)": 2}
    assert "2 rows with an unusable id (skipped)" in caplog.text
    assert "id '01' is not written as the integer 1 (it would be merged with entity 1)" in (
        caplog.text
    )
    assert "null id: row skipped" in caplog.text


@pytest.mark.postgres
def test_infinite_postgresql_instants_are_reported_not_fatal(pg_url, caplog):
    """PostgreSQL's 'infinity' has no Python datetime: psycopg refused the
    value and one such row stopped every read (issue 13, row 4). It is now an
    unreadable instant like any other: reported with its value, the action
    skipped, the fact read as null, the rest of the read unchanged."""
    _setup(pg_url, [(1, "2026-01-05 10:00:00")])
    text = """\
entities:
  user:
    list: SELECT id, email FROM people
    actions:
      paid: >-
        SELECT person_id AS id, at FROM payments
        UNION ALL SELECT 2, 'infinity'::timestamp
        UNION ALL SELECT 10, '-infinity'::timestamp
    facts:
      - sql: SELECT id, CASE WHEN id = 2 THEN 'infinity'::timestamptz END AS until FROM people
        columns: {until: instant}
"""
    with caplog.at_level(logging.WARNING, logger="sync.sources.model"):
        records, report = read(pg_url, text)
    assert [(r.id, len(r.actions), r.facts["until"]) for r in records] == [
        ("1", 1, None),
        ("2", 0, None),
        ("10", 0, None),
    ]
    assert sum(report.bad_values.values()) == 3
    assert "'infinity'" in caplog.text
    assert "'-infinity'" in caplog.text


# -- read-only ------------------------------------------------------------------


def test_a_source_session_refuses_writes(db_url):
    _setup(db_url, [])
    engine = read_only_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM people")).scalar() == 3
            with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
                conn.execute(sa.text("INSERT INTO payments VALUES (1, '2026-01-01')"))
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Even after ending the transaction by hand, the session stays read-only.
                conn.exec_driver_sql("COMMIT")
            with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
                conn.exec_driver_sql("DELETE FROM people")
    finally:
        engine.dispose()
    records, _ = read(db_url)
    assert len(records) == 3  # nothing was written


def test_a_writing_query_in_sources_is_refused(db_url):
    _setup(db_url, [])
    backend = sa.make_url(db_url).get_backend_name()
    # A function with a side effect is the one way a SELECT can write; the
    # database refuses it inside the read-only session.
    if backend == "postgresql":
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS"
                " 'INSERT INTO payments VALUES (1, now()); SELECT 1'"
            )
        engine.dispose()
        text = "entities:\n  user:\n    list: SELECT id, email FROM people WHERE sneaky() = 1\n"
    else:
        text = (
            "entities:\n  user:\n    list: SELECT id, email FROM people"
            " WHERE (SELECT 1 FROM pragma_query_only) = 1 AND 0 = 1\n"
        )
        records, _ = read(db_url, text)
        assert records == []
        return
    with pytest.raises(SourceQueryError, match=r"(?i)read-only"):
        read(db_url, text)


def test_sqlite_url_is_opened_read_only(tmp_path):
    path = tmp_path / "odd name?.sqlite"
    url = f"sqlite:///{path}"
    writer = sa.create_engine(url)
    with writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    writer.dispose()
    engine = read_only_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
            conn.exec_driver_sql("PRAGMA query_only = OFF")  # still refused: mode=ro
            with pytest.raises(sa.exc.OperationalError, match="readonly"):
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        engine.dispose()


# -- values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01 10:00:00.000000", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T11:00:00+01:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        (datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 10, tzinfo=UTC)),
        (datetime(2026, 1, 1, 11, tzinfo=PARIS), datetime(2026, 1, 1, 10, tzinfo=UTC)),
        (datetime(2026, 1, 1).date(), datetime(2026, 1, 1, tzinfo=UTC)),
        (None, None),
    ],
    ids=repr,
)
def test_instants_become_aware_utc(value, expected):
    result = to_utc(value, __import__("zoneinfo").ZoneInfo("UTC"))
    assert result == expected
    if result is not None:
        assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        (1, "bool", True),
        (0, "bool", False),
        ("t", "bool", True),
        (True, "bool", True),
        (__import__("decimal").Decimal("3"), "number", 3),
        (__import__("decimal").Decimal("2.5"), "number", 2.5),
        ("7", "number", 7),
        (True, "number", 1),
        (42, "string", "42"),
    ],
    ids=repr,
)
def test_values_are_converted_to_fact_types(value, type_, expected):
    result = convert(value, type_, __import__("zoneinfo").ZoneInfo("UTC"))
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "type_"), [(2, "bool"), ("maybe", "bool"), ([], "number")], ids=repr
)
def test_unconvertible_values_raise(value, type_):
    with pytest.raises(ValueError, match="not a"):
        convert(value, type_, __import__("zoneinfo").ZoneInfo("UTC"))


def test_bound_instants_match_each_backend_storage():
    paris = __import__("zoneinfo").ZoneInfo("Europe/Paris")
    at = datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert bind_instant(at, "sqlite", paris) == "2026-01-01 11:00:00.000000"
    assert bind_instant(at, "postgresql", paris) == at
    with pytest.raises(ValueError, match="aware"):
        bind_instant(datetime(2026, 1, 1), "sqlite", paris)


def test_a_sentinel_date_east_of_utc_is_a_bad_value_not_a_crash():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import pytest

    from sync.sources.values import to_utc

    with pytest.raises(ValueError, match="out of range"):
        to_utc(datetime(1, 1, 1), ZoneInfo("Europe/Paris"))
