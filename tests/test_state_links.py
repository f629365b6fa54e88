"""State-store additions for the daemon: dependency links, lookup by email, unscheduling."""

from datetime import UTC, datetime, timedelta

from sync.state.entities import EntityEvaluation
from sync.state.store import StateStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def store(db_url):
    state = StateStore(db_url)
    state.migrate()
    return state


def test_links_are_replaced_per_dependent(db_url):
    state = store(db_url)
    state.replace_links("user", {"u1": [("match", "m1"), ("match", "m2")], "u2": [("match", "m2")]})
    assert state.dependents("user", "match", ["m2"]) == {"u1", "u2"}
    state.replace_links("user", {"u1": [("match", "m3")]})
    assert state.dependents("user", "match", ["m1", "m2"]) == {"u2"}
    assert state.dependents("user", "match", ["m3"]) == {"u1"}
    state.close()


def test_entity_ids_by_email_ignores_case(db_url):
    state = store(db_url)
    state.upsert_evaluations(
        [
            EntityEvaluation("user", "1", "Ada@Example.com", "registered"),
            EntityEvaluation("participant", "m1:1", "ada@example.com", "upcoming"),
            EntityEvaluation("user", "2", "bob@example.com", "registered"),
        ]
    )
    assert state.entity_ids_by_email(["ADA@example.com"]) == {
        "user": {"1"},
        "participant": {"m1:1"},
    }
    state.close()


def test_count_due(db_url):
    state = store(db_url)
    state.upsert_evaluations(
        [
            EntityEvaluation("user", str(i), None, "x", next_change_at=NOW + timedelta(hours=i - 2))
            for i in range(5)
        ]
    )
    assert state.count_due(NOW) == 3  # -2h, -1h and exactly now
    state.close()
