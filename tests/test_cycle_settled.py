"""A full pass leaves settled entities alone (issues 11 and 14).

On PostgreSQL the compiled SQL gives each row a digest; an entity whose
digest is the one recorded when it was last settled, with no change due, no
retry and no event in the window, is counted and not decoded. These tests
check that the shortcut never hides a change: over many cycles, with new
and back-dated rows, across timed ladders and re-initialisation baselines,
the audience always holds what the engine computes.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.daemon import settled
from sync.daemon.once import run_once
from sync.daemon.reinit import reinitialise
from sync.demo import load_demo
from sync.evaluate.engine import Baseline, evaluate
from sync.evaluate.members import merge_values
from sync.rules.schema import load_rules
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources
from sync.sql.evaluator import SqlEvaluator
from sync.state.baselines import Baseline as StoredBaseline
from sync.state.entities import EntityEvaluation
from sync.state.store import StateStore
from tests.support.clock import Clock
from tests.support.cycle import FILES, NOW, audience_fields, make_runtime

USERS = 80

#: Steps of the clock between cycles: minutes, then across the ladders'
#: thresholds (24 h, 7 days, 15 days, a month).
STEPS = [
    timedelta(minutes=5),
    timedelta(hours=2),
    timedelta(hours=23),
    timedelta(days=2),
    timedelta(days=5),
    timedelta(days=9),
    timedelta(days=16),
    timedelta(days=40),
]


@pytest.fixture(params=["joined", "looked up"])
def app(request, pg_url, tmp_path, mailchimp_emulator):
    """The state store in the application's database (the compiled SQL joins
    it) or apart from it (the cycle looks the stored rows up)."""
    load_demo(pg_url, "blousebrothers", users=USERS, seed=5, now=NOW)
    clock = Clock(NOW)
    state = None if request.param == "joined" else request.getfixturevalue("state_pg_url")
    runtime, _caller = make_runtime(
        "blousebrothers", pg_url, tmp_path, mailchimp_emulator, clock, state=state
    )
    assert runtime.evaluator is not None
    assert (runtime.evaluator.stored is not None) == (request.param == "joined")
    engine = sa.create_engine(pg_url)
    yield runtime, clock, engine, mailchimp_emulator
    engine.dispose()
    runtime.close()


def _credit(engine, user_id, at):
    with engine.begin() as conn:
        next_id = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM credits"))
        conn.execute(
            sa.text(
                "INSERT INTO credits (id, user_id, amount_cents, credited_at)"
                " VALUES (:id, :u, 1000, :at)"
            ),
            {"id": next_id.scalar_one(), "u": user_id, "at": at},
        )


def _expected(runtime, now):
    """email → merge fields, from the engine, with the stored baselines."""
    entity = runtime.ruleset.entity("user")
    baselines = runtime.state.baselines("user", None) if entity.reinit else {}
    expected = {}
    with SourceReader(runtime.sources, runtime.config.database) as reader:
        for record in reader.read_entities("user", now=now):
            found = baselines.get(record.id)
            baseline = Baseline(found.status, found.entered_at) if found else None
            result = evaluate(entity, record.facts, record.actions, now, baseline)
            assert record.email is not None
            expected[normalise_email(record.email)] = merge_values(entity, result.merge_fields)
    return expected


def _row_fps(runtime):
    with runtime.state.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT entity_id, row_fp FROM entity_state")).all())


@pytest.mark.postgres
def test_a_full_pass_over_an_unchanged_population_decodes_almost_nothing(app):
    runtime, clock, _engine, _emulator = app
    first = run_once(runtime, full=True)
    assert first.entities_settled["user"] == 0
    fps = _row_fps(runtime)
    assert len(fps) == USERS
    assert all(fps.values())
    clock.now = NOW + timedelta(minutes=1)
    again = run_once(runtime, full=True)
    assert again.entities_read["user"] == USERS
    assert again.entities_settled["user"] == USERS
    assert again.evaluations_written == 0
    assert again.push.considered == 0


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["joined", "looked up"])
def test_an_entity_with_an_event_in_the_window_is_compared_in_full(
    where, request, pg_url, tmp_path, mailchimp_emulator
):
    """An occurrence of an action that neither moves the entity nor sets a
    code leaves its SQL row (and digest) as it was; its event is still sent."""
    state = None if where == "joined" else request.getfixturevalue("state_pg_url")
    load_demo(pg_url, "blousebrothers", users=USERS, seed=5, now=NOW)
    rules, sources = FILES["blousebrothers"]
    text = rules.read_text()
    event_only = text.replace(
        "account_credited:        {enters: money_ok, code: credit, event: credit}",
        "account_credited:        {event: credit}",
    )
    assert event_only != text
    (tmp_path / "rules.yaml").write_text(event_only)
    clock = Clock(NOW)
    runtime, _ = make_runtime(
        (tmp_path / "rules.yaml", sources), pg_url, tmp_path, mailchimp_emulator, clock, state=state
    )
    assert runtime.evaluator is not None
    assert (runtime.evaluator.stored is not None) == (where == "joined")
    engine = sa.create_engine(pg_url)
    try:
        run_once(runtime, full=True)
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")).first()
        assert first is not None
        user_id, email = first
        clock.now = NOW + timedelta(minutes=1)
        _credit(engine, user_id, clock.now - timedelta(seconds=30))
        clock.now += timedelta(minutes=1)
        summary = run_once(runtime, full=True)
    finally:
        engine.dispose()
        runtime.close()
    assert summary.entities_settled["user"] == USERS - 1
    assert [e.name for e in mailchimp_emulator.audience.member(email).events] == ["credit"]


@pytest.mark.postgres
def test_settled_entities_never_hide_a_change(app):
    """Cycle after cycle, with new and back-dated rows and the clock crossing
    the ladders' thresholds, the audience holds what the engine computes."""
    runtime, clock, engine, emulator = app
    rng = random.Random(3)
    run_once(runtime, full=True)
    settled = 0
    with engine.connect() as conn:
        ids = [i for (i,) in conn.execute(sa.text("SELECT id FROM users ORDER BY id"))]
    for step in STEPS:
        clock.now += step
        for user_id in rng.sample(ids, 3):
            # Some dated now, some before the previous cycle (late rows).
            _credit(engine, user_id, clock.now - rng.choice([timedelta(0), step / 2]))
        summary = run_once(runtime, full=True)
        settled += summary.entities_settled["user"]
        assert audience_fields(emulator) == _expected(runtime, clock.now), step
    assert settled > USERS  # the shortcut was taken
    assert run_once(runtime, full=True).push.considered == 0


@pytest.mark.postgres
def test_baselines_move_entities_the_digest_does_not_see(app):
    """A re-initialised entity climbs its ladder from the baseline while its
    SQL row (computed without baselines) stays the same: it is due by its
    stored next change, not by its digest. Re-initialising clears the digests."""
    runtime, clock, _engine, emulator = app
    run_once(runtime, full=True)
    clock.now = NOW + timedelta(hours=1)
    run_once(runtime, full=True)
    assert any(_row_fps(runtime).values())
    for _ in reinitialise(runtime.config, at=clock.now):
        pass
    assert not any(_row_fps(runtime).values())
    moved = 0
    for step in STEPS[1:]:
        clock.now += step
        summary = run_once(runtime, full=True)
        moved += sum(summary.status_changes.values())
        assert audience_fields(emulator) == _expected(runtime, clock.now), step
    assert moved > 0


@pytest.mark.postgres
def test_a_refused_push_records_no_digest(app):
    runtime, _clock, engine, emulator = app
    with engine.connect() as conn:
        email = conn.execute(sa.text("SELECT email FROM users ORDER BY id")).scalar()
    emulator.audience.mark_fake(email)
    run_once(runtime, full=True)
    with runtime.state.engine.connect() as conn:
        refused = conn.execute(
            sa.text("SELECT row_fp FROM entity_state WHERE email = :e"),
            {"e": normalise_email(email)},
        ).scalar_one()
    assert refused is None
    assert sum(1 for fp in _row_fps(runtime).values() if fp) == USERS - 1


def test_a_sqlite_application_database_compares_in_full(sqlite_url, tmp_path, mailchimp_emulator):
    load_demo(sqlite_url, "blousebrothers", users=20, seed=5, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", sqlite_url, tmp_path, mailchimp_emulator, clock)
    try:
        run_once(runtime, full=True)
        clock.now = NOW + timedelta(minutes=1)
        again = run_once(runtime, full=True)
    finally:
        runtime.close()
    assert again.entities_read["user"] == 20
    assert again.entities_settled["user"] == 0
    assert again.push.considered == 0


def test_reinitialising_a_type_clears_its_digests(sqlite_url):
    store = StateStore(sqlite_url)
    store.migrate()
    try:
        for entity_type in ("user", "match"):
            store.upsert_evaluations(
                [EntityEvaluation(entity_type, "1", None, "registered", row_fp="abc")], at=NOW
            )
        store.replace_baselines("user", NOW, [StoredBaseline("1", "registered", NOW)])
        assert store.stored_rows("user", ["1"])["1"].row_fp is None
        assert store.stored_rows("match", ["1"])["1"].row_fp == "abc"
    finally:
        store.close()


@pytest.mark.postgres
def test_the_digest_salt_changes_with_what_decoding_depends_on(pg_url, tmp_path):
    """A delay changed: same salt (the digests of unchanged rows hold). A
    merge field's type or an event changed: another salt."""
    load_demo(pg_url, "blousebrothers", users=5, seed=5, now=NOW)
    rules_path, sources_path = FILES["blousebrothers"]
    text = rules_path.read_text()
    variants = {
        "same": text,
        "delay": text.replace("_H24: 24h", "_H24: 12h", 1),
        "event": text.replace("event: credit_low}", "event: credit_is_low}", 1),
    }
    assert len(set(variants.values())) == 3
    sources = load_sources(sources_path)
    salts, bases = {}, {}
    for name, variant in variants.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(variant)
        with SqlEvaluator(load_rules(path), sources, pg_url) as sql, sql.engine.connect() as conn:
            salts[name] = sql.compile(conn, "user", fingerprint=True).salt
            bases[name] = sql.digest_basis("user")
    assert salts["same"] == salts["delay"]
    assert salts["event"] != salts["same"]
    # The basis of the stored digests (``settled.basis_key``) follows both:
    # the same rules read again give the same, any change another.
    with SqlEvaluator(load_rules(tmp_path / "same.yaml"), sources, pg_url) as sql:
        assert sql.digest_basis("user") == bases["same"]
    assert len(set(bases.values())) == 3


@pytest.mark.postgres
def test_the_state_store_is_joined_only_from_its_own_database(pg_url, state_pg_url, sqlite_url):
    app_engine = sa.create_engine(pg_url)
    same = StateStore(pg_url)
    apart = StateStore(state_pg_url)
    schema = f"mailsync_joined_{uuid.uuid4().hex[:8]}"
    in_schema = StateStore(pg_url, schema=schema)
    try:
        assert same.joinable_from(app_engine) is None  # not migrated yet
        for store in (same, apart, in_schema):
            store.migrate()
        joined = same.joinable_from(app_engine)
        assert joined is not None
        assert joined.schema is None
        assert apart.joinable_from(app_engine) is None
        qualified = in_schema.joinable_from(app_engine)
        assert qualified is not None
        assert qualified.schema == schema
        on_sqlite = StateStore(sqlite_url)
        assert on_sqlite.joinable_from(app_engine) is None
        on_sqlite.close()
    finally:
        with app_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        for store in (same, apart, in_schema):
            store.close()
        app_engine.dispose()


@pytest.mark.postgres
def test_a_column_postgresql_cannot_hash_gets_md5_digests(
    pg_url, tmp_path, mailchimp_emulator, caplog
):
    load_demo(pg_url, "blousebrothers", users=20, seed=5, now=NOW)
    rules, sources = FILES["blousebrothers"]
    text = sources.read_text()
    with_json = text.replace(
        "SELECT id, email, first_name, last_name, username FROM users",
        "SELECT id, email, to_json(first_name) AS first_name, last_name, username FROM users",
    )
    assert with_json != text
    (tmp_path / "sources.yaml").write_text(with_json)
    clock = Clock(NOW)
    runtime, _ = make_runtime(
        (rules, tmp_path / "sources.yaml"), pg_url, tmp_path, mailchimp_emulator, clock
    )
    try:
        first = run_once(runtime, full=True)
        clock.now = NOW + timedelta(minutes=1)
        again = run_once(runtime, full=True)
        fps = _row_fps(runtime)
    finally:
        runtime.close()
    assert "cannot hash" in caplog.text
    assert first.evaluated_by == {"user": "sql"}
    assert again.entities_settled["user"] == 20
    # MD5s, of the contribution and of the rest.
    assert {tuple(len(part) for part in fp.split(":")) for fp in fps.values()} == {(32, 32)}


@pytest.mark.postgres
def test_a_full_pass_finds_the_deleted_entities_without_reading_every_stored_id(app, monkeypatch):
    runtime, clock, _engine, _emulator = app
    run_once(runtime, full=True)
    read_back = []
    entity_ids = runtime.state.entity_ids

    def spy(entity_type):
        read_back.append(entity_type)
        return entity_ids(entity_type)

    monkeypatch.setattr(runtime.state, "entity_ids", spy)
    clock.now += timedelta(minutes=1)
    assert not run_once(runtime, full=True).deleted
    assert read_back == []
    # An entity the state store knows and the sources no longer list.
    runtime.state.upsert_evaluations([EntityEvaluation("user", "999999", None, "registered")])
    clock.now += timedelta(minutes=1)
    assert run_once(runtime, full=True).deleted == {"user": 1}
    # Joined, the SQL's full join finds it; looked up, the merge of digests.
    assert read_back == []


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["looked up"], indirect=True)
def test_apart_only_the_entities_whose_digests_differ_are_evaluated(app, monkeypatch):
    """With the state store apart from the application's database, a full
    pass merges the SQL's digests with the stored ones, then evaluates only
    the ids that differ: a new credit, a retry, a change due."""
    runtime, clock, engine, emulator = app
    run_once(runtime, full=True)
    asked = []
    rows = runtime.evaluator.rows

    def spy(entity_type, **kwargs):
        asked.append(kwargs.get("ids"))
        return rows(entity_type, **kwargs)

    monkeypatch.setattr(runtime.evaluator, "rows", spy)
    clock.now += timedelta(minutes=1)
    again = run_once(runtime, full=True)
    assert asked == []  # nothing differs: no row is read at all
    assert again.entities_settled["user"] == again.entities_read["user"] == USERS
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(id) FROM users")).scalar_one()
    _credit(engine, first, (clock.now - timedelta(minutes=30)).replace(tzinfo=None))
    clock.now += timedelta(minutes=1)
    run_once(runtime, full=True)
    assert asked == [[str(first)]]
    due = {e.entity_id for e in runtime.state.due(clock.now + timedelta(days=7), 10_000)}
    assert due
    clock.now += timedelta(days=7)
    asked.clear()
    run_once(runtime, full=True)
    assert len(asked) == 1
    assert set(asked[0]) == due
    assert audience_fields(emulator) == _expected(runtime, clock.now)


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["joined"], indirect=True)
def test_joined_the_settled_rows_never_leave_the_database(app):
    """With the state store joined, a full pass gets only the rows that may
    have changed: a new credit, a retry or event id passed in, a change due,
    and the stored entities no longer listed (their columns null)."""
    runtime, clock, engine, _emulator = app
    run_once(runtime, full=True)
    clock.now += timedelta(minutes=1)

    def rows(unsettled=frozenset()):
        found = runtime.evaluator.rows(
            "user", now=clock.now, fingerprint=True, unsettled=set(unsettled)
        )
        return [(row[0], row[compiled.stored_column]) for compiled, row in found]

    assert rows() == []
    with engine.connect() as conn:
        first, second = conn.execute(sa.text("SELECT id FROM users ORDER BY id LIMIT 2")).scalars()
    _credit(engine, first, (clock.now - timedelta(minutes=30)).replace(tzinfo=None))
    assert rows() == [(first, str(first))]
    assert rows({str(second)}) == [(first, str(first)), (second, str(second))]
    runtime.state.upsert_evaluations([EntityEvaluation("user", "999999", None, "registered")])
    assert rows() == [(first, str(first)), (None, "999999")]
    # A week later the ladders move: every entity whose next change is due.
    due = {e.entity_id for e in runtime.state.due(clock.now + timedelta(days=7), 10_000)}
    assert due
    clock.now += timedelta(days=7)
    assert {str(ident) for ident, _ in rows() if ident is not None} == due | {str(first)}


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["looked up"], indirect=True)
def test_apart_when_most_digests_differ_the_whole_population_is_evaluated(app, monkeypatch):
    """New rules or a store whose digests were cleared: the merge gives up
    early and the pass evaluates everyone in one query, finding deletions
    the way a pass without digests does."""
    runtime, clock, _engine, emulator = app
    run_once(runtime, full=True)
    monkeypatch.setattr(settled, "_EARLY_LOOK", 5)
    with runtime.state.engine.begin() as conn:
        conn.execute(sa.text("UPDATE entity_state SET row_fp = NULL"))
    runtime.state.upsert_evaluations([EntityEvaluation("user", "999999", None, "registered")])
    asked = []
    rows = runtime.evaluator.rows

    def spy(entity_type, **kwargs):
        asked.append(kwargs.get("ids"))
        return rows(entity_type, **kwargs)

    monkeypatch.setattr(runtime.evaluator, "rows", spy)
    clock.now += timedelta(days=2)
    summary = run_once(runtime, full=True)
    assert asked == [None]
    assert summary.deleted == {"user": 1}
    assert summary.entities_settled["user"] == 0
    assert all(_row_fps(runtime).values())
    assert audience_fields(emulator) == _expected(runtime, clock.now)


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["looked up"], indirect=True)
def test_apart_the_merge_gives_up_early_when_too_many_will_differ(app, monkeypatch):
    """A quarter of the digests differ (a rules change that moves many
    entities a little): not most, but projected on the population, more
    than ``MAX_UNSETTLED``. Under new rules (another digest basis), a
    sample of the stored ids, evaluated alone, says so before the whole
    population's digests are asked for; under the rules that computed the
    stored digests, no sample is taken, and the merge stops after
    ``_EARLY_LOOK`` ids rather than walking on to the limit. Either way
    everyone is evaluated at once; with a limit the projection stays
    under, only the ids that differ are."""
    runtime, clock, _engine, emulator = app
    run_once(runtime, full=True)

    def forget_a_quarter():
        with runtime.state.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE entity_state SET row_fp = NULL WHERE entity_id = ANY(:ids)"),
                {"ids": differing},
            )

    with runtime.state.engine.connect() as conn:
        ids = sorted(conn.execute(sa.text("SELECT entity_id FROM entity_state")).scalars())
    differing = ids[::4]
    asked, walked, merged = [], [], []
    rows, stored_digests = runtime.evaluator.rows, runtime.state.stored_digests
    digests = runtime.evaluator.digests

    def spy_rows(entity_type, **kwargs):
        asked.append(kwargs.get("ids"))
        return rows(entity_type, **kwargs)

    def spy_stored(entity_type, now):
        for found in stored_digests(entity_type, now):
            walked.append(found[0])
            yield found

    def spy_digests(entity_type, **kwargs):
        merged.append(entity_type)
        return digests(entity_type, **kwargs)

    monkeypatch.setattr(runtime.evaluator, "rows", spy_rows)
    monkeypatch.setattr(runtime.evaluator, "digests", spy_digests)
    monkeypatch.setattr(runtime.state, "stored_digests", spy_stored)
    monkeypatch.setattr(settled, "MAX_UNSETTLED", len(ids) // 8)
    # New rules: the sample, 8 stored ids, 2 of which differ: 2 / 8 of 80 > 10.
    basis = runtime.state.get_watermark(settled.basis_key("user"))
    assert basis is not None
    runtime.state.set_watermark(settled.basis_key("user"), "the rules before")
    monkeypatch.setattr(settled, "_SAMPLE", 8)
    forget_a_quarter()
    clock.now += timedelta(minutes=5)
    run_once(runtime, full=True)
    assert [len(a) if a is not None else None for a in asked] == [8, None]
    assert merged == []
    assert runtime.state.get_watermark(settled.basis_key("user")) == basis
    # The same rules again, no sample: the early look, up to the next id
    # that differs (one in four), and the one read ahead; walking on to the
    # limit would read 40.
    monkeypatch.setattr(settled, "_EARLY_LOOK", 8)
    asked.clear()
    walked.clear()
    forget_a_quarter()
    run_once(runtime, full=True)
    assert asked == [None]
    assert merged == ["user"]
    assert len(walked) <= 8 + 4 + 1
    # Under the limit, only the ids that differ are evaluated.
    monkeypatch.setattr(settled, "MAX_UNSETTLED", len(ids) // 2)
    asked.clear()
    forget_a_quarter()
    summary = run_once(runtime, full=True)
    assert [sorted(a) for a in asked] == [differing]
    assert summary.entities_settled["user"] == len(ids) - len(differing)
    assert audience_fields(emulator) == _expected(runtime, clock.now)


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["looked up"], indirect=True)
def test_going_live_looks_nothing_up_in_an_empty_state_store(app, monkeypatch):
    """The first full pass of a type finds nothing stored: it asks the
    state store for no stored row, and the audience is still complete;
    the next pass that reads rows looks them up."""
    runtime, clock, engine, emulator = app
    asked = []
    stored_rows = runtime.state.stored_rows

    def spy(entity_type, ids):
        asked.append(len(ids))
        return stored_rows(entity_type, ids)

    monkeypatch.setattr(runtime.state, "stored_rows", spy)
    first = run_once(runtime, full=True)
    assert asked == []
    assert first.push.pushed == USERS
    assert audience_fields(emulator) == _expected(runtime, clock.now)
    with engine.connect() as conn:
        user = conn.execute(sa.text("SELECT min(id) FROM users")).scalar_one()
    clock.now += timedelta(minutes=5)
    _credit(engine, user, (clock.now - timedelta(minutes=1)).replace(tzinfo=None))
    run_once(runtime, full=True)
    assert asked == [1]
    assert audience_fields(emulator) == _expected(runtime, clock.now)
