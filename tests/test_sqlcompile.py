"""Which facts the compiled SQL reads (the parity suite checks what it computes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.demo import load_demo
from sync.schema import load_rules
from sync.sources import load_sources
from sync.sqlcompile import Baselines, SqlEvaluator, compile_entity, needed_facts

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
        taken = [next(first) for _ in range(10)]
        first.close()
        everyone = [r.id for r in evaluator.evaluate("user", now=NOW)]
    assert len(everyone) == 50
    assert [r.id for r in taken] == everyone[:10]  # ordered by id, as a merge needs
