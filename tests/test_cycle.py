"""Whole cycles: demo data → sources → engine → state store → sink → emulator.

Each test runs on SQLite and on PostgreSQL (``db_url``), against the Mailchimp
emulator speaking real HTTP to the official client. The expected values come
from the pure engine, evaluated independently on records read back from the
sources, so the test checks the plumbing, not the rules again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.daemon.once import run_once
from sync.demo import load_demo
from sync.evaluate.engine import evaluate
from sync.sources.reader import SourceReader
from tests.support.clock import Clock
from tests.support.cycle import FILES, NOW, audience_fields, expected_members, make_runtime

ROOT = Path(__file__).resolve().parent.parent


def test_blousebrothers_cycles_push_exactly_what_the_engine_says(
    db_url, tmp_path, mailchimp_emulator
):
    load_demo(db_url, "blousebrothers", users=150, seed=3, now=NOW)
    clock = Clock(NOW)
    runtime, caller = make_runtime("blousebrothers", db_url, tmp_path, mailchimp_emulator, clock)
    try:
        first = run_once(runtime)
        assert first.full
        assert first.entities_read["user"] == 150
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", NOW)

        # Same instant again: nothing changed, nothing is sent.
        calls_before = sum(caller.calls.values())
        again = run_once(runtime, full=False)
        assert again.push.pushed == 0
        assert sum(caller.calls.values()) == calls_before

        # Three days later, incrementally: only due entities are read, and the
        # audience matches the engine again.
        clock.now = NOW + timedelta(days=3)
        later = run_once(runtime)
        assert not later.full
        assert 0 < later.entities_read["user"] < 150
        assert later.push.pushed == len({c[1] for c in later.changed})
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", clock.now)
    finally:
        runtime.close()


def test_new_data_is_picked_up_by_the_watermark(db_url, tmp_path, mailchimp_emulator):
    load_demo(db_url, "blousebrothers", users=60, seed=4, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", db_url, tmp_path, mailchimp_emulator, clock)
    try:
        run_once(runtime)
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            user_id, email = conn.execute(
                sa.text("SELECT id, email FROM users ORDER BY id LIMIT 1")
            ).one()
            at = NOW + timedelta(minutes=30)
            next_id = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM conferences"))
            conn.execute(
                sa.text(
                    "INSERT INTO conferences (id, owner_id, title, progress, created_at) "
                    "VALUES (:id, :u, 'New case', 10, :at)"
                ),
                {
                    "id": next_id.scalar_one(),
                    "u": user_id,
                    # SQLite keeps naive UTC text, as the demo writes it.
                    "at": at.replace(tzinfo=None) if db_url.startswith("sqlite") else at,
                },
            )
        engine.dispose()
        clock.now = NOW + timedelta(hours=1)
        summary = run_once(runtime)
        assert not summary.full
        assert str(user_id) in {c[1] for c in summary.changed}
        member = mailchimp_emulator.audience.member(email)
        assert member.merge_fields["MMERGE25"] == "creat_conf_begin"
    finally:
        runtime.close()


def test_littleworld_users_count_their_matches_statuses(db_url, tmp_path, mailchimp_emulator):
    load_demo(db_url, "littleworld", users=120, seed=5, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("littleworld", db_url, tmp_path, mailchimp_emulator, clock)
    try:
        summary = run_once(runtime)
        assert summary.entities_read["match"] > 0
        assert summary.entities_read["user"] == 120
        # Expected: evaluate matches, then users with rollups over those statuses.
        match = runtime.ruleset.entity("match")
        user = runtime.ruleset.entity("user")
        with SourceReader(runtime.sources, db_url) as reader:
            statuses = {
                r.id: evaluate(match, r.facts, r.actions, NOW).status
                for r in reader.read_entities("match", now=NOW)
            }
            users = list(
                reader.read_entities("user", now=NOW, related_statuses={"match": statuses})
            )
        stored = runtime.state.entity_states("user", [u.id for u in users])
        for record in users:
            assert stored[record.id].status == evaluate(user, record.facts, [], NOW).status
        assert any(r.facts.get("matches_total") for r in users)
        # Each user's record names the matches its counts were computed from.
        for record in users:
            assert len(record.related) == record.facts["matches_total"]
        # Both types are evaluated set-based, users' rollups over the matches'
        # statuses in the same SQL; a tick evaluates users whole, so a user
        # follows their matches without any tracking of links.
        assert summary.evaluated_by == {"match": "sql", "user": "sql"}
        clock.now = NOW + timedelta(hours=1)
        tick = run_once(runtime)
        assert not tick.full
        assert tick.entities_read["user"] == 120
    finally:
        runtime.close()


def test_rallia_reminders_are_sent_once(db_url, tmp_path, mailchimp_emulator):
    load_demo(db_url, "rallia", users=80, seed=6, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("rallia", db_url, tmp_path, mailchimp_emulator, clock)
    try:
        for hours in range(0, 60, 6):
            clock.now = NOW + timedelta(hours=hours)
            run_once(runtime)
        received = mailchimp_emulator.audience.received_events()
        assert received, "some reminders must have been due within 60 hours"
        keys = [
            (email.lower(), event.name, event.properties.get("match_id"))
            for email, event in received
        ]
        assert len(keys) == len(set(keys)), "an event was sent twice"
        assert {name for _, name, _ in keys} <= {
            "match_reminder_24h",
            "match_reminder_2h",
            "match_checkin",
            "match_cancelled",
        }
    finally:
        runtime.close()


def test_one_bad_record_does_not_stop_the_cycle(
    db_url, tmp_path, mailchimp_emulator, monkeypatch, caplog
):
    load_demo(db_url, "blousebrothers", users=30, seed=7, now=NOW)
    runtime, _ = make_runtime("blousebrothers", db_url, tmp_path, mailchimp_emulator, Clock(NOW))
    import sync.daemon.derive

    real = evaluate  # the engine's, which the cycle calls

    def flaky(entity, facts, actions, now, baseline=None, **kw):
        if facts.get("username", "").endswith("2"):
            raise ValueError("a value of the wrong type")
        return real(entity, facts, actions, now, baseline, **kw)

    monkeypatch.setattr(sync.daemon.derive, "evaluate", flaky)
    # The engine path (a type the SQL cannot evaluate) reads record by record.
    runtime.config = replace(
        runtime.config, daemon=replace(runtime.config.daemon, evaluator="engine")
    )
    try:
        summary = run_once(runtime)
    finally:
        runtime.close()
    failed = summary.entities_failed["user"]
    assert failed > 0
    assert summary.push.pushed == 30 - failed
    assert "cannot evaluate user" in caplog.text


@pytest.mark.parametrize("example", ["blousebrothers", "littleworld", "rallia"])
def test_every_example_runs_a_cycle_on_sqlite(example, sqlite_url, tmp_path, mailchimp_emulator):
    load_demo(sqlite_url, example, users=40, seed=8, now=NOW)
    runtime, _ = make_runtime(example, sqlite_url, tmp_path, mailchimp_emulator, Clock(NOW))
    try:
        summary = run_once(runtime)
    finally:
        runtime.close()
    assert sum(summary.entities_read.values()) >= 40
    assert not summary.entities_failed
    assert summary.push.failed == 0


def test_tags_follow_the_status(tmp_path, sqlite_url, mailchimp_emulator):
    """A status's tags are active while the member is in it, and only then."""
    rules = tmp_path / "rules.yaml"
    text = (ROOT / "rules.yaml").read_text()
    text = text.replace(
        "      registered:\n        description: emails urging to create a wallet, then give up\n",
        "      registered:\n        description: emails urging to create a wallet, then give up\n"
        "        tags: [onboarding]\n",
    ).replace(
        "      wallet_ok:\n        description",
        "      wallet_ok:\n        tags: [onboarding, has_wallet]\n        description",
    )
    rules.write_text(text)
    FILES["tagged"] = (rules, ROOT / "sources.yaml")
    try:
        load_demo(sqlite_url, "blousebrothers", users=80, seed=9, now=NOW)
        clock = Clock(NOW)
        runtime, _ = make_runtime("tagged", sqlite_url, tmp_path, mailchimp_emulator, clock)
        try:
            removed: set[str] = set()
            for days in (0, 10, 60):
                clock.now = NOW + timedelta(days=days)
                run_once(runtime)
                if days == 0:
                    # Tagged members credit their account: money_ok has no tag,
                    # so their tags must become inactive at the next cycle.
                    removed = _credit_tagged_members(sqlite_url, mailchimp_emulator, NOW)
                user = runtime.ruleset.entity("user")
                with SourceReader(runtime.sources, sqlite_url) as reader:
                    for record in reader.read_entities("user", now=clock.now):
                        expected = evaluate(user, record.facts, record.actions, clock.now).tags
                        member = mailchimp_emulator.audience.member(record.email)
                        assert set(member.tags) == set(expected), (days, record.id)
        finally:
            runtime.close()
    finally:
        del FILES["tagged"]
    assert removed, "some users must be registered or wallet_ok in the demo data"
    for email in removed:
        assert mailchimp_emulator.audience.member(email).tags == {}


def _credit_tagged_members(database, emulator, now):
    tagged = [m.email_address for m in emulator.audience.members() if m.tags][:5]
    engine = sa.create_engine(database)
    with engine.begin() as conn:
        next_id = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM credits")).scalar_one()
        for offset, email in enumerate(tagged):
            user_id = conn.execute(
                sa.text("SELECT id FROM users WHERE lower(email) = :e"), {"e": email.lower()}
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
                    "VALUES (:id, :u, 500, :at)"
                ),
                {
                    "id": next_id + offset,
                    "u": user_id,
                    "at": (now + timedelta(days=1)).replace(tzinfo=None),
                },
            )
    engine.dispose()
    return set(tagged)
