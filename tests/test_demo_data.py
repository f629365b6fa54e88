"""Demo data: deterministic generation, and demo data -> sources -> EntityRecords."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync.cli import cli
from sync.demo import EXAMPLES, load_demo
from sync.demo.synthetic import epoch
from sync.sources.reader import SourceReader
from sync.sources.report import ReadReport
from sync.sources.schema import load_sources

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 1, tzinfo=UTC)
SOURCES = {
    "blousebrothers": ROOT / "sources.yaml",
    "littleworld": ROOT / "examples/littleworld/sources.yaml",
    "rallia": ROOT / "examples/rallia/sources.yaml",
}


def fingerprint(example: str, users: int, seed: int, now: datetime = NOW) -> str:
    digest = hashlib.sha256()
    for batch in EXAMPLES[example].generate(users, seed, epoch(now)):
        digest.update(batch.table.name.encode())
        digest.update(repr(list(batch.rows)).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_same_seed_same_rows_other_seed_other_rows(example):
    first = fingerprint(example, 300, seed=7)
    assert fingerprint(example, 300, seed=7) == first
    assert fingerprint(example, 300, seed=8) != first
    assert fingerprint(example, 300, seed=7, now=datetime(2026, 3, 2, tzinfo=UTC)) != first


def dump(url: str, example: str) -> list[tuple[str, list[tuple[object, ...]]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        result = [
            (
                table.name,
                [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
                ],
            )
            for table in EXAMPLES[example].metadata.sorted_tables
        ]
    engine.dispose()
    return result


def test_two_loads_with_one_seed_are_identical(tmp_path):
    urls = [f"sqlite:///{tmp_path}/a.sqlite", f"sqlite:///{tmp_path}/b.sqlite"]
    for url in urls:
        load_demo(url, "blousebrothers", users=250, seed=3, now=NOW)
    assert dump(urls[0], "blousebrothers") == dump(urls[1], "blousebrothers")


def read_all(url: str, example: str, entity: str, **kwargs):
    report = ReadReport(entity)
    with SourceReader(load_sources(SOURCES[example]), url) as reader:
        records = list(reader.read_entities(entity, now=NOW, report=report, **kwargs))
    assert report.clean, report
    return records


def count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql)).scalar_one()
    engine.dispose()
    return int(value)


def check_records(records, facts: set[str]) -> None:
    for record in records:
        assert set(record.facts) == facts
        for value in record.facts.values():
            if isinstance(value, datetime):
                assert value.tzinfo is UTC
        assert all(a.at <= NOW for a in record.actions)


def test_blousebrothers_round_trip(db_url):
    counts = load_demo(db_url, "blousebrothers", users=200, seed=1, now=NOW)
    users = read_all(db_url, "blousebrothers", "user")
    assert [int(u.id) for u in users] == list(range(1, 201))
    check_records(
        users,
        {
            "first_name",
            "last_name",
            "username",
            "has_wallet",
            "has_finished_unpublished_conf",
            "has_conf_in_progress",
            "has_published_conf",
            "has_credit",
            "has_pending_evaluation",
        },
    )
    actions = [a.action for u in users for a in u.actions]
    assert actions.count("signup") == 200
    assert actions.count("wallet_created") == counts["wallets"]
    assert actions.count("conf_bought") == actions.count("conf_sold") == counts["purchases"]
    assert 4 <= len(actions) / 200 <= 8  # about six action rows per user
    assert sum(u.facts["has_wallet"] is True for u in users) == counts["wallets"]
    assert any(u.email != u.email.lower() for u in users if u.email)  # some mixed case
    assert any((NOW - u.actions[-1].at).days < 3 for u in users)  # ladders in motion


def test_littleworld_round_trip(db_url):
    counts = load_demo(db_url, "littleworld", users=200, seed=1, now=NOW)
    matches = read_all(db_url, "littleworld", "match")
    assert len(matches) == counts["matches"] > 0
    check_records(
        matches,
        {
            "created_at",
            "confirmed_at",
            "messages_from_learner",
            "messages_from_volunteer",
            "video_calls",
            "last_interaction_at",
            "still_in_contact_after_12w",
        },
    )
    assert sum(
        m.facts["messages_from_learner"] + m.facts["messages_from_volunteer"] for m in matches
    ) == count(db_url, "SELECT COUNT(*) FROM messages")
    statuses = {
        m.id: ("pre.pending_confirm" if m.facts["confirmed_at"] is None else "ongoing.ongoing")
        for m in matches
    }
    users = read_all(db_url, "littleworld", "user", related_statuses={"match": statuses})
    assert len(users) == 200
    assert sum(u.facts["matches_total"] for u in users) == 2 * len(matches)
    assert sum(u.facts["matches_pending"] + u.facts["matches_active"] for u in users) == (
        2 * len(matches)
    )
    booked = count(
        db_url,
        "SELECT COUNT(DISTINCT user_id) FROM appointments WHERE starts_at > "
        "'2026-03-01 00:00:00.000000'",
    )
    assert sum(u.facts["onboarding_call_booked"] is True for u in users) == booked
    # Without statuses the rollup facts are absent, not zero.
    plain = read_all(db_url, "littleworld", "user")
    assert "matches_total" not in plain[0].facts


def test_rallia_round_trip(db_url):
    counts = load_demo(db_url, "rallia", users=200, seed=1, now=NOW)
    matches = read_all(db_url, "rallia", "match")
    assert len(matches) == counts["matches"]
    check_records(
        matches, {"cancelled_at", "created_at", "start_at", "end_at", "joined_count", "capacity"}
    )
    assert any(m.facts["joined_count"] >= m.facts["capacity"] for m in matches)  # some full
    assert any(m.facts["joined_count"] < m.facts["capacity"] for m in matches)
    assert any(m.facts["cancelled_at"] is not None for m in matches)
    assert any(m.facts["start_at"] > NOW for m in matches)
    participants = read_all(db_url, "rallia", "participant")
    assert len(participants) == counts["participants"]
    check_records(
        participants,
        {
            "first_name",
            "last_name",
            "match_id",
            "participant_status",
            "cancelled_at",
            "created_at",
            "start_at",
            "end_at",
            "joined_count",
            "capacity",
        },
    )
    assert all(p.id.startswith(f"{p.facts['match_id']}:") for p in participants)
    assert all(p.email for p in participants)
    statuses = {p.facts["participant_status"] for p in participants}
    assert {"joined", "pending"} <= statuses


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    url = f"sqlite:///{tmp_path}/demo.sqlite"
    args = [
        "demo-data",
        "--example",
        "rallia",
        "--users",
        "50",
        "--db",
        url,
        "--seed",
        "2",
        "--now",
        "2026-03-01T00:00:00Z",
    ]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "rallia: " in result.output
    assert "participants" in result.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 2
    assert "pass --replace" in again.output
    assert runner.invoke(cli, [*args, "--replace"]).exit_code == 0


@pytest.mark.parametrize("now", ["2026-03-01T00:00:00", "yesterday"])
def test_cli_rejects_a_now_without_offset(tmp_path, now):
    result = CliRunner().invoke(
        cli,
        [
            "demo-data",
            "--example",
            "rallia",
            "--users",
            "5",
            "--db",
            f"sqlite:///{tmp_path}/x.sqlite",
            "--now",
            now,
        ],
    )
    assert result.exit_code == 2
    assert "--now" in result.output


def test_cli_has_help():
    result = CliRunner().invoke(cli, ["demo-data", "--help"])
    assert result.exit_code == 0
    assert "--example [blousebrothers|littleworld|rallia]" in result.output
