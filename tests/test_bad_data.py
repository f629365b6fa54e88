"""Bad data in the application database, through real cycles on SQLite and PostgreSQL.

Each case is one row among good ones: the cycle must report the bad row
clearly (a push failure for that member, a warning, a record that could not
be evaluated) or apply the behaviour documented in ``docs/reliability.md``
("Bad data"), and every other member must end up correct in the emulator.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.daemon.once import run_once
from tests.support.clock import Clock
from tests.support.cycle import audience_fields
from tests.support.cycle import make_runtime as cycle_runtime

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SIGNUP = datetime(2026, 2, 27, 9, 0)  # naive on purpose: read as UTC (naive_timezone)

RULES = """\
entities:
  user:
    facts: {first_name: string, last_name: string}
    actions:
      signup: {enters: registered, code: welcome, event: welcome}
      wallet_created: {enters: wallet_ok}
    statuses:
      registered: {ladder: {_H24: 24h, _J7: 7d}}
      wallet_ok: {ladder: {_H24: 24h}}
    merge_fields: {MMERGE25: status, MMERGE28: action_code, FNAME: first_name, LNAME: last_name}
  booking:
    facts: {starts_at: instant}
    statuses:
      booked_soon: now >= starts_at - 24h
      booked: {when: otherwise}
    merge_fields: {MMERGE30: status}
"""
SOURCES = """\
entities:
  user:
    list: SELECT id, email, first_name, last_name FROM users
    actions:
      signup: SELECT id, signed_up_at AS at FROM users
      wallet_created: SELECT user_id AS id, created_at AS at FROM wallets
  booking:
    list: SELECT b.id, u.email FROM bookings b JOIN users u ON u.id = b.user_id
    facts:
      - sql: SELECT id, starts_at FROM bookings
        columns: {starts_at: instant}
"""

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("signed_up_at", sa.DateTime(timezone=False)),
)
wallets = sa.Table(
    "wallets",
    metadata,
    sa.Column("user_id", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer),
    sa.Column("starts_at", sa.DateTime(timezone=True)),
)


#: A row of the ``users`` table.
Row = dict[str, object]


def user(id_: int, email: str | None, first: str | None = "Ann", **extra: object) -> Row:
    row: Row = {"id": id_, "email": email, "first_name": first, "last_name": "Lee"}
    row["signed_up_at"] = extra.get("signed_up_at", SIGNUP)
    return row


GOOD = [user(1, "ann@example.com"), user(99, "zed@example.com", "Zed")]


def make_app(db_url: str, rows: list[Row], wallet_rows=(), booking_rows=()) -> None:
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(users.insert(), rows)
        if wallet_rows:
            conn.execute(wallets.insert(), list(wallet_rows))
        if booking_rows:
            conn.execute(bookings.insert(), list(booking_rows))
    engine.dispose()


def make_runtime(db_url: str, tmp_path: Path, emulator, clock: Clock):
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "sources.yaml").write_text(SOURCES)
    files = (tmp_path / "rules.yaml", tmp_path / "sources.yaml")
    runtime, _ = cycle_runtime(files, db_url, tmp_path, emulator, clock)
    return runtime


def assert_good_members_correct(emulator) -> None:
    members = audience_fields(emulator)
    for email, first in (("ann@example.com", "Ann"), ("zed@example.com", "Zed")):
        assert members[email]["MMERGE25"] == "registered_H24", members[email]
        assert members[email]["MMERGE28"] == "welcome"
        assert members[email]["FNAME"] == first


def cycle(db_url, tmp_path, emulator, rows, **tables):
    make_app(db_url, GOOD + rows, **tables)
    runtime = make_runtime(db_url, tmp_path, emulator, Clock(NOW))
    try:
        summary = run_once(runtime)
    finally:
        runtime.close()
    assert_good_members_correct(emulator)
    return summary


# -- addresses ------------------------------------------------------------------------------


def test_invalid_address_is_a_permanent_failure_for_that_member_only(
    db_url, tmp_path, mailchimp_emulator
):
    summary = cycle(db_url, tmp_path, mailchimp_emulator, [user(2, "ann at example dot com")])
    assert summary.push.failed == 1
    (failure,) = summary.push.failures
    assert failure.email == "ann at example dot com"
    assert failure.permanent
    assert "ann at example dot com" not in audience_fields(mailchimp_emulator)


def test_empty_or_missing_address_is_evaluated_not_pushed_and_logged(
    db_url, tmp_path, mailchimp_emulator, caplog
):
    rows = [user(2, ""), user(3, "   "), user(4, None)]
    with caplog.at_level(logging.WARNING):
        summary = cycle(db_url, tmp_path, mailchimp_emulator, rows)
    assert summary.entities_read["user"] == 5
    assert summary.push.failed == 0
    assert len(audience_fields(mailchimp_emulator)) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("user 2" in m and "no email address" in m for m in messages), messages
    assert any("user 4" in m and "no email address" in m for m in messages), messages


def test_one_address_in_two_users_and_mixed_case_feed_one_member(
    db_url, tmp_path, mailchimp_emulator, caplog
):
    rows = [
        user(2, "Bob@Example.COM", "Bob", signed_up_at=SIGNUP - timedelta(days=10)),
        user(3, "  bob@example.com ", "Robert"),
    ]
    with caplog.at_level(logging.WARNING):
        cycle(db_url, tmp_path, mailchimp_emulator, rows)
    members = audience_fields(mailchimp_emulator)
    assert len(members) == 3
    # One member, fed by both users in id order: the last one read (highest id) wins.
    assert members["bob@example.com"]["FNAME"] == "Robert"
    assert members["bob@example.com"]["MMERGE25"] == "registered_H24"
    messages = [r.getMessage() for r in caplog.records]
    assert any("bob@example.com" in m and "several user entities" in m for m in messages)


# -- instants --------------------------------------------------------------------------------


def test_null_action_instant_skips_that_row_with_a_warning(
    db_url, tmp_path, mailchimp_emulator, caplog
):
    with caplog.at_level(logging.WARNING):
        cycle(db_url, tmp_path, mailchimp_emulator, [user(2, "nul@example.com", signed_up_at=None)])
    # No status-giving action: no status, an empty status field (not an error).
    # The compiled SQL skips the row as the reader does (an aggregate ignores
    # nulls); the engine path, which reads row by row, also says so.
    assert audience_fields(mailchimp_emulator)["nul@example.com"]["MMERGE25"] == ""
    runtime = make_runtime(db_url, tmp_path, mailchimp_emulator, Clock(NOW))
    runtime.config = replace(
        runtime.config, daemon=replace(runtime.config.daemon, evaluator="engine")
    )
    try:
        with caplog.at_level(logging.WARNING):
            run_once(runtime, full=True)
    finally:
        runtime.close()
    assert audience_fields(mailchimp_emulator)["nul@example.com"]["MMERGE25"] == ""
    assert any("null instant" in r.getMessage() for r in caplog.records)


def test_text_ids_next_to_integer_ids_are_one_entity_and_02_is_none(
    sqlite_url, tmp_path, mailchimp_emulator, caplog
):
    """Issue 13, row 13, on the compiled SQL path (SQLite keeps each value's
    own type): an action table whose ids are text (a TEXT column) next to a
    list of integers. '2' is entity 2, once: the SQL's GROUP BY kept 2 and
    '2' apart and the entity came out twice. '01' is no entity: it was merged
    into entity 1. Both paths now agree, and '01' is reported."""
    make_app(sqlite_url, [*GOOD, user(2, "two@example.com")])
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE text_wallets (user_id TEXT, created_at TIMESTAMP)")
        conn.execute(
            sa.text("INSERT INTO text_wallets VALUES ('2', :at), ('01', :at)"),
            {"at": "2026-03-01 08:00:00"},
        )
    engine.dispose()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "sources.yaml").write_text(SOURCES.replace("FROM wallets", "FROM text_wallets"))
    files = (tmp_path / "rules.yaml", tmp_path / "sources.yaml")
    runtime, _ = cycle_runtime(files, sqlite_url, tmp_path, mailchimp_emulator, Clock(NOW))
    try:
        with caplog.at_level(logging.WARNING):
            summary = run_once(runtime)
    finally:
        runtime.close()
    assert summary.evaluated_by["user"] == "sql"
    assert summary.entities_read["user"] == 3, "each user once"
    members = audience_fields(mailchimp_emulator)
    assert members["two@example.com"]["MMERGE25"] == "wallet_ok"
    assert members["ann@example.com"]["MMERGE25"] == "registered_H24", "'01' is not user 1"
    assert any("id '01' names no entity" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("evaluator", ["sql", "engine"])
def test_a_facts_row_whose_text_id_is_01_is_no_entitys(
    evaluator, sqlite_url, tmp_path, mailchimp_emulator, caplog
):
    """The same on a facts query: on SQLite a TEXT id column joined to an
    integer list compares by number, so '01' gave entity 1 its facts. '2'
    is entity 2; '01' names no entity, on both paths, and is reported."""
    make_app(sqlite_url, [*GOOD, user(2, "two@example.com")])
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE text_names (user_id TEXT, first_name TEXT)")
        conn.exec_driver_sql("INSERT INTO text_names VALUES ('2', 'Two'), ('01', 'Mallory')")
    engine.dispose()
    (tmp_path / "rules.yaml").write_text(RULES)
    sources = SOURCES.replace(
        "    list: SELECT id, email, first_name, last_name FROM users\n",
        "    list: SELECT id, email, last_name FROM users\n"
        "    facts:\n"
        "      - sql: SELECT user_id AS id, first_name FROM text_names\n"
        "        columns: {first_name: string}\n",
    )
    (tmp_path / "sources.yaml").write_text(sources)
    files = (tmp_path / "rules.yaml", tmp_path / "sources.yaml")
    runtime, _ = cycle_runtime(files, sqlite_url, tmp_path, mailchimp_emulator, Clock(NOW))
    runtime.config = replace(
        runtime.config, daemon=replace(runtime.config.daemon, evaluator=evaluator)
    )
    try:
        with caplog.at_level(logging.WARNING):
            summary = run_once(runtime, full=True)
    finally:
        runtime.close()
    assert summary.evaluated_by["user"] == evaluator
    members = audience_fields(mailchimp_emulator)
    assert members["two@example.com"]["FNAME"] == "Two"
    assert members["ann@example.com"]["FNAME"] == "", "'01' is not user 1"
    assert any("'01'" in r.getMessage() for r in caplog.records)


def test_future_and_sentinel_instants_do_not_count_yet(db_url, tmp_path, mailchimp_emulator):
    rows = [user(2, "future@example.com"), user(3, "never@example.com")]
    wallet_rows = [
        {"user_id": 2, "created_at": NOW + timedelta(days=30)},
        {"user_id": 3, "created_at": datetime(9999, 12, 31, tzinfo=UTC)},
    ]
    cycle(db_url, tmp_path, mailchimp_emulator, rows, wallet_rows=wallet_rows)
    members = audience_fields(mailchimp_emulator)
    assert members["future@example.com"]["MMERGE25"] == "registered_H24"
    assert members["never@example.com"]["MMERGE25"] == "registered_H24"


def test_instants_out_of_arithmetic_range_fail_that_record_only(
    db_url, tmp_path, mailchimp_emulator, caplog
):
    # 0001-01-01 minus 24h cannot be computed; the record is reported, the rest go on.
    booking_rows = [
        {"id": 1, "user_id": 1, "starts_at": datetime(1, 1, 1, tzinfo=UTC)},
        {"id": 2, "user_id": 99, "starts_at": NOW + timedelta(hours=12)},
    ]
    with caplog.at_level(logging.ERROR):
        summary = cycle(db_url, tmp_path, mailchimp_emulator, [], booking_rows=booking_rows)
    assert summary.entities_failed["booking"] == 1
    assert audience_fields(mailchimp_emulator)["zed@example.com"]["MMERGE30"] == "booked_soon"
    assert any("cannot evaluate booking 1" in r.getMessage() for r in caplog.records)


# -- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "sent"),
    [
        ("Zoë 😀 Ünïcödé", "Zoë 😀 Ünïcödé"),
        ("Bell\x07 and \x1b[31mred\x1b[0m\ttab", "Bell\x07 and \x1b[31mred\x1b[0m\ttab"),
        ("\u202eevil right-to-left", "\u202eevil right-to-left"),
    ],
    ids=["emoji", "control-characters", "bidi-override"],
)
def test_odd_text_is_sent_as_it_is(db_url, tmp_path, mailchimp_emulator, first, sent):
    cycle(db_url, tmp_path, mailchimp_emulator, [user(2, "odd@example.com", first)])
    assert audience_fields(mailchimp_emulator)["odd@example.com"]["FNAME"] == sent


def test_very_long_text_is_a_failure_for_that_member_only(db_url, tmp_path, mailchimp_emulator):
    summary = cycle(db_url, tmp_path, mailchimp_emulator, [user(2, "long@example.com", "A" * 5000)])
    # Mailchimp (and the emulator) take at most 255 characters in a text field:
    # a permanent failure for that member, recorded and not retried every tick.
    (failure,) = summary.push.failures
    assert failure.email == "long@example.com"
    assert failure.permanent
    assert "255" in failure.reason


# -- an entity deleted between two cycles ---------------------------------------------------


def test_deleted_entity_keeps_its_member_and_is_forgotten(db_url, tmp_path, mailchimp_emulator):
    make_app(db_url, [*GOOD, user(2, "gone@example.com", "Gone")])
    clock = Clock(NOW)
    runtime = make_runtime(db_url, tmp_path, mailchimp_emulator, clock)
    try:
        run_once(runtime)
        before = runtime.state.entity_state_of("user", "2")
        assert before is not None
        assert before.next_change_at is not None
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(users.delete().where(users.c.id == 2))
        engine.dispose()
        clock.now = NOW + timedelta(days=8)  # past the _J7 step of everyone
        later = run_once(runtime)
        assert not later.full
        members = audience_fields(mailchimp_emulator)
        # Never deleted, archived or unsubscribed: it keeps its last pushed values.
        assert members["gone@example.com"]["MMERGE25"] == "registered_H24"
        assert members["ann@example.com"]["MMERGE25"] == "registered_J7"
        # Forgotten by the state store: `status` stops counting it.
        assert runtime.state.entity_state_of("user", "2") is None
        assert later.deleted["user"] == 1
        due = runtime.state.due(clock.now + timedelta(days=365), 10, entity_type="user")
        assert "2" not in {e.entity_id for e in due}
    finally:
        runtime.close()


def test_a_daemon_checks_the_left_out_rows_once_an_hour(
    sqlite_url, tmp_path, mailchimp_emulator, caplog
):
    """The check reads every action row: a daemon makes it with its first
    full pass, then again once an hour has gone by, not every full pass."""
    make_app(sqlite_url, GOOD)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO wallets (user_id, created_at) VALUES (NULL, :ok)"),
            {"ok": NOW - timedelta(hours=1)},
        )
    engine.dispose()
    clock = Clock(NOW)
    runtime = make_runtime(sqlite_url, tmp_path, mailchimp_emulator, clock)
    reports = []
    try:
        for minutes in (0, 15, 30, 61, 75):
            clock.now = NOW + timedelta(minutes=minutes)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                run_once(runtime, full=True)
            reports.append(any("null id" in r.getMessage() for r in caplog.records))
    finally:
        runtime.close()
    assert reports == [True, False, False, True, False]


def test_an_unreadable_instant_does_not_stop_the_cycle(
    db_url, tmp_path, mailchimp_emulator, caplog
):
    """Issue 13, row 4: one bad instant (PostgreSQL's 'infinity', SQLite text
    that is no date) or a null id in an action table stopped every cycle for
    every user. The compiled SQL leaves such rows out; the full pass's check
    reports each with its query and value."""
    make_app(db_url, [*GOOD, user(2, "odd@example.com", "Odd")])
    engine = sa.create_engine(db_url)
    bad = "infinity" if engine.dialect.name == "postgresql" else "not a date"
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO wallets (user_id, created_at) VALUES (2, :bad), (NULL, :ok)"),
            {"bad": bad, "ok": NOW - timedelta(hours=1)},
        )
    engine.dispose()
    runtime = make_runtime(db_url, tmp_path, mailchimp_emulator, Clock(NOW))
    try:
        with caplog.at_level(logging.WARNING):
            summary = run_once(runtime)
    finally:
        runtime.close()
    assert_good_members_correct(mailchimp_emulator)
    # The odd user is evaluated without the unreadable row: the compiled SQL
    # reads 'infinity' as an instant after any `now` (like a 9999-12-31
    # sentinel) and text that is no date as no instant.
    assert audience_fields(mailchimp_emulator)["odd@example.com"]["MMERGE25"] == "registered_H24"
    assert summary.entities_read["user"] == 3
    assert summary.evaluated_by["user"] == "sql"
    messages = [r.getMessage() for r in caplog.records]
    assert any("null id" in m and "row left out" in m for m in messages), messages
    assert any(f"id 2: instant '{bad}': row left out" in m for m in messages), messages
