"""``mailsync plan``: a preview that says what a real cycle then does.

On SQLite and PostgreSQL application databases, after a real cycle against
the emulator: the plan of the rules in force finds nothing, the plan of a
changed ladder counts exactly the transitions the next real cycle under those
rules makes, and planning writes nothing to the state store.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.daemon import plan as plan_module
from sync.daemon.config import load_config
from sync.daemon.diff import Differ
from sync.daemon.once import make_cycle, run_once
from sync.daemon.plan import PlanReport, ops_calls, plan_rules
from sync.daemon.runtime import build_runtime
from sync.demo import load_demo
from sync.mailchimp.sink_config import SinkConfig
from sync.sources.reader import SourceReader
from sync.state.store import StateStore
from tests.support.cli import live, run
from tests.support.clock import Clock
from tests.support.cycle import FILES, NOW, make_runtime

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("entity_state", "member", "event_sent", "cycle", "watermark", "push")
#: Late enough that ladders have moved since the first cycle.
LATER = NOW + timedelta(days=2, hours=6)


@pytest.fixture
def after_a_cycle(demo_settings, capsys, monkeypatch, mailchimp_emulator):
    """Settings whose state store holds one real cycle at NOW."""
    config, tmp_path = demo_settings
    live(monkeypatch, mailchimp_emulator, capsys, config)
    code, _, err = run(capsys, "once", "--config", str(config), "--at", NOW.isoformat())
    assert code == 0, err
    assert "DRY RUN" not in err
    return config, tmp_path


def _shortened_rules(tmp_path: Path) -> Path:
    text = (ROOT / "rules.yaml").read_text()
    assert "    _H24: 24h\n" in text
    new = tmp_path / "new-rules.yaml"
    new.write_text(text.replace("    _H24: 24h\n", "    _H24: 12h\n", 1))
    return new


def _rows(config: Path) -> dict[str, int]:
    engine = sa.create_engine(load_config(config).state)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES
            }
    finally:
        engine.dispose()


def _plan(capsys, config: Path, *args: str) -> tuple[int, str, str]:
    return run(capsys, "plan", "--config", str(config), *args)


def test_the_rules_in_force_plan_no_change(after_a_cycle, capsys):
    config, _ = after_a_cycle
    code, out, err = _plan(capsys, config, "--at", NOW.isoformat())
    assert code == 0, out + err
    assert "no status would change" in out
    assert "0 new, 0 with merge fields changed, 0 to push" in out
    assert "events the next cycle would send: none" in out
    assert "Mailchimp calls (estimate): 0" in out


def test_a_shortened_ladder_step_plans_what_the_next_cycle_does(after_a_cycle, capsys):
    config, tmp_path = after_a_cycle
    new = _shortened_rules(tmp_path)
    before = _rows(config)
    code, out, err = _plan(capsys, config, "--rules", str(new), "--at", LATER.isoformat())
    assert code == 3, out + err
    assert _rows(config) == before, "plan wrote to the state store"
    assert "would move (from -> to)" in out
    report = plan_rules(load_config(config), rules=new, now=LATER, samples=2)
    assert report.transitions
    # Ladder steps of the new rules: _H24 after 12 hours.
    assert any(after and after.endswith("_H24") for _, _, after in report.transitions)
    for (entity, before_status, after), count in report.transitions.items():
        assert f"{entity} {before_status or '(new)'}" in out
        assert f"-> {after}: {count}" in out
        assert 1 <= len(report.samples[(entity, before_status, after)]) <= min(2, count)
    # The real cycle under the new rules makes exactly these transitions.
    settings = load_config(config)
    runtime = build_runtime(replace(settings, rules=new), clock=lambda: LATER)
    try:
        assert not runtime.dry_run
        summary = run_once(runtime, now=LATER, full=True)
    finally:
        runtime.close()
    assert Counter(summary.transitions) == report.transitions
    assert summary.push.failed == 0
    assert summary.push.pushed == report.members_pushed
    assert summary.push.events_sent == sum(report.events.values())
    # Once applied, the same plan finds nothing left to do.
    code, out, _ = _plan(capsys, config, "--rules", str(new), "--at", LATER.isoformat())
    assert code == 0, out


def test_json_has_every_part(after_a_cycle, capsys):
    config, tmp_path = after_a_cycle
    new = _shortened_rules(tmp_path)
    code, out, _ = _plan(
        capsys, config, "--rules", str(new), "--at", LATER.isoformat(), "--json", "--samples", "1"
    )
    assert code == 3
    data = json.loads(out)
    assert set(data) >= {
        "kind",
        "now",
        "rules",
        "changed",
        "transitions",
        "members",
        "merge_fields",
        "tags",
        "events",
        "calls",
        "member_samples",
    }
    assert data["changed"] is True
    assert data["transitions"][0]["count"] >= data["transitions"][-1]["count"]
    assert all(len(t["samples"]) == 1 for t in data["transitions"])
    assert data["merge_fields"].get("MMERGE25", 0) >= 1
    assert len(data["member_samples"]) == 1
    assert data["calls"]["total"] == sum(v for k, v in data["calls"].items() if k != "total")


def test_invalid_rules_exit_2_naming_file_and_line(after_a_cycle, capsys):
    config, tmp_path = after_a_cycle
    bad = tmp_path / "bad-rules.yaml"
    text = (ROOT / "rules.yaml").read_text().replace("    _H24: 24h\n", "    _H24: soon\n", 1)
    bad.write_text(text)
    line = text.splitlines().index("    _H24: soon") + 1
    before = _rows(config)
    code, out, err = _plan(capsys, config, "--rules", str(bad))
    assert code == 2
    assert out == ""
    assert f"{bad}:{line}" in err
    assert _rows(config) == before


def test_help_documents_the_exit_status(capsys):
    code, out, _ = run(capsys, "plan", "--help")
    assert code == 0
    assert "0 no change, 3 changes" in " ".join(out.split())
    assert "2 invalid" in out


def test_reinit_preview_counts_what_reinit_stores(after_a_cycle, capsys):
    config, _ = after_a_cycle
    at = LATER.isoformat()
    before = _rows(config)
    code, out, err = _plan(capsys, config, "--reinit", "--at", at, "--json")
    assert code == 3, out + err
    assert _rows(config) == before
    data = json.loads(out)
    assert data["kind"] == "reinit"
    planned = Counter(
        {(t["from"], t["to"]): t["count"] for t in data["transitions"] if t["to"] is not None}
    )
    assert planned
    state = StateStore(load_config(config).state)
    try:
        rows = state.entity_states("user", state.entity_ids("user"))
        stored = {ident: row.status for ident, row in rows.items()}
    finally:
        state.close()
    # reinit --dry-run prints the same table and writes nothing.
    code, dry, _ = run(capsys, "reinit", "--config", str(config), "--at", at, "--dry-run")
    assert code == 0
    for (before, after), count in planned.items():
        assert f"user {before or '(not stored)'}" in dry
        assert f"-> {after}: {count}" in dry
    code, _, err = run(capsys, "reinit", "--config", str(config), "--at", at)
    assert code == 0, err
    state = StateStore(load_config(config).state)
    try:
        baselines = state.baselines("user")
    finally:
        state.close()
    assert Counter((stored.get(i), b.status) for i, b in baselines.items()) == planned


def test_before_the_first_cycle_everyone_is_new(demo_settings, capsys):
    config, _ = demo_settings
    store = StateStore(load_config(config).state)
    store.migrate()  # an empty state store, as on the first day
    store.close()
    before = _rows(config)
    report = plan_rules(load_config(config), now=NOW, samples=3)
    assert _rows(config) == before
    assert report.changed
    assert sum(report.transitions.values()) == 40
    assert all(before_status is None for _, before_status, _ in report.transitions)
    assert report.new_members == report.members_pushed == 40
    # 40 new members: one batch subscribe (500 a call).
    assert report.calls["batch subscribe"] == 1
    assert len(report.member_samples) == 3
    assert all(s.new for s in report.member_samples)


@pytest.mark.parametrize(
    ("operations", "calls"),
    [(0, 0), (1, 1), (9, 9), (10, 3), (5000, 3), (5001, 6), (12_000, 9)],
)
def test_operations_cost_direct_calls_or_batches_jobs(operations, calls):
    # Below the bulk threshold (10) one call each; then 3 calls per job of 5000.
    assert ops_calls(operations, SinkConfig()) == calls


def test_an_address_changed_in_the_application_is_planned(after_a_cycle, capsys):
    config, _ = after_a_cycle
    engine = sa.create_engine(load_config(config).database or "")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE users SET email = 'moved@example.org' WHERE id = 1"))
    finally:
        engine.dispose()
    code, out, _ = _plan(capsys, config, "--at", NOW.isoformat(), "--json")
    assert code == 3
    data = json.loads(out)
    assert data["members"]["address_changes"] == 1
    assert data["transitions"] == []


#: Soon after the first cycle: the entities a shorter delay moves are not
#: due yet under the rules in force.
SOON = NOW + timedelta(minutes=30)

#: A delay changed in each shipped example: (example, text before, text after).
DELAY_CHANGES = [
    ("blousebrothers", "    _H24: 24h\n", "    _H24: 12h\n"),
    (
        "littleworld",
        "email_verified_at is set and now >= email_verified_at + 2d",
        "email_verified_at is set and now >= email_verified_at + 1d",
    ),
    ("rallia", "when: now >= start_at - 24h", "when: now >= start_at - 12h"),
]


def _without_samples(report: PlanReport) -> dict[str, Any]:
    found: dict[str, Any] = report.as_json()
    found.pop("member_samples")
    for transition in found["transitions"]:
        transition.pop("samples")
    return found


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("example", "before", "after", "state"),
    [
        (*change, state)
        for change in DELAY_CHANGES
        for state in ("apart", "joined")
        # Little World's statements take seconds to compile, for each of
        # the four runtimes; the joined path is the others' too.
        if (change[0], state) != ("littleworld", "joined")
    ],
)
def test_a_delay_change_is_planned_from_the_contributions_alone(
    pg_url, tmp_path, mailchimp_emulator, monkeypatch, state, example, before, after
):
    """On PostgreSQL a plan leaves alone the entities whose member would get
    nothing new, even when the new rules move their instants: it says what a
    plan comparing every entity in full says, and what the next real cycle
    then does (events included: Little World's statuses send them on entry,
    Rallia's carry properties)."""
    load_demo(pg_url, example, users=60, seed=3, now=NOW)
    clock = Clock(NOW)
    url = None if state == "joined" else f"sqlite:///{tmp_path}/state.sqlite"
    runtime, _ = make_runtime(example, pg_url, tmp_path, mailchimp_emulator, clock, state=url)
    try:
        run_once(runtime, full=True)
    finally:
        runtime.close()
    rules = FILES[example][0]
    text = rules.read_text()
    assert before in text
    new = tmp_path / "new-rules.yaml"
    new.write_text(text.replace(before, after))
    config = replace(runtime.config, rules=new)
    diffed: Counter[bool] = Counter()
    settle = Differ.settle

    def counted(differ, run, derived, *args, **kwargs):
        diffed[differ.record] += len(derived)
        return settle(differ, run, derived, *args, **kwargs)

    monkeypatch.setattr(Differ, "settle", counted)
    previewed = plan_rules(config, now=SOON)
    in_preview = diffed[False]
    diffed.clear()
    with monkeypatch.context() as m:
        m.setattr(
            plan_module, "make_cycle", lambda *a, **k: make_cycle(*a, **k | {"preview": False})
        )
        in_full = plan_rules(config, now=SOON)
    assert _without_samples(previewed) == _without_samples(in_full)
    assert previewed.changed
    assert in_preview <= diffed[False]
    if example == "blousebrothers":
        # Users on a _H24 rung entered it 12 hours earlier: another instant,
        # the same status.
        assert in_preview < diffed[False]
    clock.now = SOON
    runtime, _ = make_runtime(
        (new, FILES[example][1]), pg_url, tmp_path, mailchimp_emulator, clock, state=url
    )
    try:
        summary = run_once(runtime, full=True)
    finally:
        runtime.close()
    assert Counter(summary.transitions) == previewed.transitions
    assert summary.push.failed == 0
    assert summary.push.pushed == previewed.members_pushed
    assert summary.push.events_sent == sum(previewed.events.values())


def test_a_plan_does_not_report_unusable_action_rows(after_a_cycle, monkeypatch):
    """The report of action rows the SQL leaves out reads every action row
    (seconds at a million users); the daemon's full passes make it, a plan
    does not."""
    config, _ = after_a_cycle
    asked: list[str] = []
    unusable_actions = SourceReader.unusable_actions

    def spy(reader, entity_type, **kwargs):
        asked.append(entity_type)
        return unusable_actions(reader, entity_type, **kwargs)

    monkeypatch.setattr(SourceReader, "unusable_actions", spy)
    plan_rules(load_config(config), now=LATER)
    assert asked == []
    settings = load_config(config)
    runtime = build_runtime(settings, clock=lambda: LATER)
    try:
        run_once(runtime, now=LATER, full=True)
    finally:
        runtime.close()
    assert asked == ["user"]


@pytest.mark.postgres
def test_a_status_event_moved_after_going_live_is_planned(pg_url, tmp_path, mailchimp_emulator):
    """Little World's users send an event on entering ``created_reminder``,
    3 hours after signing up. Users who entered it before going live sent
    nothing; under rules that wait 6 hours, they enter it after going live:
    the same status, another entry instant, and an event the next cycle
    sends. The plan counts it, though no status or merge value changes."""
    load_demo(pg_url, "littleworld", users=20, seed=3, now=NOW)
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            moved = conn.execute(
                sa.text(
                    "UPDATE users SET created_at = :at"
                    " WHERE email_verified_at IS NULL AND form_completed_at IS NULL"
                ),
                {"at": (NOW - timedelta(hours=4)).replace(tzinfo=None)},
            ).rowcount
    finally:
        engine.dispose()
    assert moved
    clock = Clock(NOW)
    url = f"sqlite:///{tmp_path}/state.sqlite"
    runtime, _ = make_runtime("littleworld", pg_url, tmp_path, mailchimp_emulator, clock, state=url)
    try:
        going_live = run_once(runtime, full=True)
    finally:
        runtime.close()
    assert going_live.push.events_sent == 0
    rules, sources = FILES["littleworld"]
    text = rules.read_text()
    assert "when: now >= created_at + 3h\n" in text
    new = tmp_path / "new-rules.yaml"
    new.write_text(text.replace("when: now >= created_at + 3h\n", "when: now >= created_at + 6h\n"))
    later = NOW + timedelta(hours=3)
    report = plan_rules(replace(runtime.config, rules=new), now=later)
    assert not report.transitions
    assert report.events["signup_created_reminder"] > 0
    clock.now = later
    runtime, _ = make_runtime(
        (new, sources), pg_url, tmp_path, mailchimp_emulator, clock, state=url
    )
    try:
        summary = run_once(runtime, full=True)
    finally:
        runtime.close()
    assert summary.push.events_sent == sum(report.events.values())
    assert summary.push.pushed == report.members_pushed
