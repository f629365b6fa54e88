"""Which facts the compiled SQL reads (the parity suite checks what it computes)."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.demo import load_demo
from sync.evaluate.engine import reinit_state
from sync.rules.schema import load_rules
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources
from sync.sql.actions import Baselines
from sync.sql.compiler import compile_entity
from sync.sql.evaluator import SqlEvaluator, later_keys
from sync.sql.population import needed_facts

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
BB_BOOLS = {
    "has_wallet",
    "has_finished_unpublished_conf",
    "has_conf_in_progress",
    "has_published_conf",
    "has_credit",
    "has_pending_evaluation",
}


def test_an_action_driven_status_reads_only_the_merge_fields_facts() -> None:
    user = load_rules(ROOT / "rules.yaml").entity("user")
    assert needed_facts(user, reinit=False) >= {"first_name", "last_name", "username"}
    assert not needed_facts(user, reinit=False) & BB_BOOLS
    # Re-initialising at an instant reads the reinit: list's facts.
    assert needed_facts(user, reinit=True) >= BB_BOOLS


def test_conditions_read_their_facts_and_what_derived_facts_read() -> None:
    match = load_rules(ROOT / "examples/littleworld/rules.yaml").entity("match")
    needed = needed_facts(match, reinit=False)
    # `now >= confirmed_at + 12w` reads confirmed_at; `since: created_at`;
    # one_side_wrote / nobody_wrote read the two message counts.
    assert needed >= {
        "confirmed_at",
        "created_at",
        "video_calls",
        "last_interaction_at",
        "still_in_contact_after_12w",
        "messages_from_learner",
        "messages_from_volunteer",
    }


@pytest.mark.parametrize("reinit", [False, True])
def test_facts_queries_are_joined_only_when_needed(reinit: bool) -> None:
    rules, sources = load_rules(ROOT / "rules.yaml"), load_sources(ROOT / "sources.yaml")
    compiled = compile_entity(
        rules,
        sources,
        "user",
        "postgresql",
        identity=("first_name", "last_name", "username"),
        baselines=Baselines(reinit=reinit),
    )
    sql = str(compiled.select.compile(dialect=sa.dialects.postgresql.dialect()))
    for fact in BB_BOOLS:
        assert (f"AS {fact}" in sql) is reinit, fact


def test_stopping_midway_leaves_the_evaluator_usable(db_url: str) -> None:
    """Rows come in batches (streamed on PostgreSQL); a caller that stops
    early must not leave a busy connection behind for the next evaluation."""
    load_demo(db_url, "blousebrothers", users=50, seed=2, now=NOW)
    rules, sources = load_rules(ROOT / "rules.yaml"), load_sources(ROOT / "sources.yaml")
    with SqlEvaluator(rules, sources, db_url, batch_size=7) as evaluator:
        first = evaluator.evaluate("user", now=NOW)
        assert isinstance(first, Generator)
        taken = [next(first) for _ in range(10)]
        first.close()
        everyone = [r.id for r in evaluator.evaluate("user", now=NOW)]
    assert len(everyone) == 50
    assert [r.id for r in taken] == everyone[:10]  # ordered by id, as a merge needs


def test_incremental_evaluation_from_keys_matches_a_full_one(db_url: str) -> None:
    """An evaluation at T1, then new occurrences in (T1, T2]: evaluating at T2
    only the entities with new occurrences or a change due, from their keys at
    T1 and the new occurrences' keys, gives what a full evaluation at T2
    gives, and every other entity is unchanged."""
    t1, t2 = NOW, NOW + timedelta(days=3)
    load_demo(db_url, "blousebrothers", users=150, seed=5, now=t1)
    rules, sources = load_rules(ROOT / "rules.yaml"), load_sources(ROOT / "sources.yaml")
    with SqlEvaluator(rules, sources, db_url, batch_size=40) as evaluator:
        before = {r.id: r for r in evaluator.evaluate("user", now=t1)}
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            credit = sa.text(
                "INSERT INTO credits (id, user_id, amount_cents, credited_at)"
                " VALUES (:id, :user, 1000, :at)"
            )
            subscription = sa.text(
                "INSERT INTO subscriptions (id, user_id, plan, bought_at, expires_at)"
                " VALUES (:id, :user, 'monthly', :at, :at)"
            )
            top = 10**6
            for n, user in enumerate(range(3, 150, 7)):
                at = t1 + timedelta(hours=n + 1, microseconds=n)
                conn.execute(credit, {"id": top + n, "user": user, "at": at.replace(tzinfo=None)})
                if n % 3 == 0:
                    # Same instant: the later-declared action wins the tie.
                    values = {"id": top + n, "user": user, "at": at.replace(tzinfo=None)}
                    conn.execute(subscription, values)
            # After t2: not counted yet.
            late = {
                "id": top + 999,
                "user": 4,
                "at": (t2 + timedelta(hours=1)).replace(tzinfo=None),
            }
            conn.execute(credit, late)
        engine.dispose()

        new = evaluator.keys_since("user", since=t1, now=t2)
        due = {i for i, r in before.items() if r.next_change_at and r.next_change_at <= t2}
        keys = {i: later_keys(before[i].keys, new.get(i)) for i in set(new) | due}
        incremental = {r.id: r for r in evaluator.evaluate("user", now=t2, keys=keys)}
        after = {r.id: r for r in evaluator.evaluate("user", now=t2)}

    assert sorted(new, key=int) == [str(u) for u in range(3, 150, 7)]  # not 4: after t2
    assert due - set(new), "some entities only had a change due"
    assert sorted(incremental) == sorted(keys)
    for ident, result in incremental.items():
        assert result == after[ident], ident
    assert sum(after[i].status != before[i].status for i in keys) > len(new)
    for ident in set(after) - set(keys):
        assert after[ident] == before[ident], ident


@pytest.mark.postgres
def test_with_an_older_libpq_rows_come_through_a_cursor(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq before 17 has no chunked rows: the evaluator falls back to a
    server-side cursor, with the same results."""
    load_demo(pg_url, "blousebrothers", users=40, seed=4, now=NOW)
    rules, sources = load_rules(ROOT / "rules.yaml"), load_sources(ROOT / "sources.yaml")
    with SqlEvaluator(rules, sources, pg_url, batch_size=9) as evaluator:
        streamed = list(evaluator.evaluate("user", now=NOW))
        keys = {r.id: r.keys for r in streamed[::3]}
        some = list(evaluator.evaluate("user", now=NOW, keys=keys))
        monkeypatch.setattr("sync.sql.evaluator.psycopg.pq.version", lambda: 160_000)
        through_cursor = list(evaluator.evaluate("user", now=NOW))
        some_through_cursor = list(evaluator.evaluate("user", now=NOW, keys=keys))
    assert len(streamed) == 40
    assert through_cursor == streamed
    assert some == some_through_cursor == streamed[::3]


def test_keys_are_refused_where_they_mean_nothing(sqlite_url: str) -> None:
    load_demo(sqlite_url, "littleworld", users=5, seed=1, now=NOW)
    rules = load_rules(ROOT / "examples/littleworld/rules.yaml")
    sources = load_sources(ROOT / "examples/littleworld/sources.yaml")
    with SqlEvaluator(rules, sources, sqlite_url) as evaluator:
        # A condition-mode status is chosen from facts: no action keys.
        with pytest.raises(ValueError, match="chosen by conditions"):
            evaluator.keys_since("match", since=NOW, now=NOW)
        with pytest.raises(ValueError, match="chosen by conditions"):
            list(evaluator.evaluate("user", now=NOW, keys={"1": (None, None)}))
        with pytest.raises(ValueError, match="ids or keys"):
            list(evaluator.evaluate("user", now=NOW, ids=["1"], keys={"1": (None, None)}))


def test_reinit_states_in_sql_are_the_engines(db_url: str) -> None:
    """``mailsync reinit`` in SQL: every user's state from the ``reinit:``
    list over current facts, as ``engine.reinit_state`` gives it."""
    load_demo(db_url, "blousebrothers", users=120, seed=9, now=NOW)
    rules, sources = load_rules(ROOT / "rules.yaml"), load_sources(ROOT / "sources.yaml")
    entity = rules.entity("user")
    with SourceReader(sources, db_url) as reader, SqlEvaluator(rules, sources, db_url) as ev:
        expected = {
            r.id: reinit_state(entity, r.facts, NOW) for r in reader.read_entities("user", now=NOW)
        }
        got = dict(ev.reinit_states("user", at=NOW))
    assert got == expected
    assert len(set(got.values())) >= 4  # several lines of the list were taken


@pytest.mark.parametrize(
    ("example", "folder"),
    [
        ("blousebrothers", ROOT),
        ("littleworld", ROOT / "examples" / "littleworld"),
        ("rallia", ROOT / "examples" / "rallia"),
    ],
)
def test_sqlite_joins_every_entity_through_an_index(sqlite_url: str, example, folder) -> None:
    """On SQLite the whole population's evaluation finds each entity's
    action aggregate and facts through an (automatic) index, never by
    scanning them once per entity: with the ids SQLite reads as integers
    compared without affinity, 100k users took 625 s instead of 5 s.
    ``EXPLAIN QUERY PLAN`` says which, without timing anything."""
    load_demo(sqlite_url, example, users=20, seed=1, now=NOW)
    rules = load_rules(folder / "rules.yaml")
    sources = load_sources(folder / "sources.yaml")
    with SqlEvaluator(rules, sources, sqlite_url) as evaluator:
        for entity_type in sources.entities:
            source = sources.entity(entity_type)
            with evaluator._transaction(source) as conn:
                compiled = evaluator.compile(conn, entity_type)
                statement = compiled.select.compile(dialect=conn.dialect)
                expanded = statement.construct_expanded_state(compiled.params(NOW))
                assert expanded.positiontup is not None
                driver = conn.connection.driver_connection
                assert driver is not None
                plan = [
                    row[3]
                    for row in driver.execute(
                        "EXPLAIN QUERY PLAN " + expanded.statement,
                        [expanded.parameters[k] for k in expanded.positiontup],
                    )
                ]
            joins = [step for step in plan if "LEFT-JOIN" in step]
            assert joins, plan
            assert all(step.startswith("SEARCH") for step in joins), (entity_type, joins)
