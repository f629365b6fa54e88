"""The operator's commands through ``main()``: exit codes and what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.demo import load_demo
from sync.state.store import StateStore
from tests.support.cli import live, run
from tests.support.cycle import NOW

ROOT = Path(__file__).resolve().parent.parent


def test_once_without_mailchimp_is_a_loud_dry_run(demo_settings, capsys):
    config, tmp_path = demo_settings
    code, out, err = run(capsys, "once", "--config", str(config), "--at", NOW.isoformat())
    assert code == 0
    assert "DRY RUN, nothing sent: 40 members considered" in err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines[0]["note"].startswith("DRY RUN")
    lines = lines[1:]
    assert len(lines) == 40
    assert {"email", "merge_fields"} <= set(lines[0])
    assert "DRY RUN: nothing was written to the state store" in err
    # Nothing recorded at all: a real run later still sends everything.
    state = StateStore(f"sqlite:///{tmp_path}/state.sqlite")
    assert state.member_states([lines[0]["email"]]) == {}
    assert state.cycles() == []
    assert state.status_counts("user") == {}
    state.close()


def test_status_and_explain_after_a_cycle(demo_settings, capsys, monkeypatch, mailchimp_emulator):
    config, _ = demo_settings
    live(monkeypatch, mailchimp_emulator, capsys, config)
    at = NOW.isoformat()
    assert run(capsys, "once", "--config", str(config), "--at", at)[0] == 0
    code, out, _ = run(capsys, "status", "--config", str(config), "--at", at)
    assert code == 0
    assert "user: 40 entities" in out
    assert "last successful cycle: 2026-03-01T09:00:00+00:00" in out
    code, out, _ = run(capsys, "status", "--config", str(config), "--at", at, "--json")
    report = json.loads(out)
    assert sum(report["statuses"]["user"].values()) == 40

    code, out, _ = run(capsys, "explain", "1", "--config", str(config), "--at", at, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["id"] == "1"
    assert data["status"] == data["merge_fields"]["MMERGE25"]
    assert data["timeline"][-1]["status"] == data["status"]
    code, text, _ = run(
        capsys, "explain", data["email"].upper(), "--config", str(config), "--at", at
    )
    assert code == 0
    assert f"status: {data['status']}" in text
    assert "timeline:" in text


def test_explain_unknown_entity_exits_2(demo_settings, capsys):
    config, _ = demo_settings
    code, _, err = run(capsys, "explain", "nobody@example.com", "--config", str(config))
    assert code == 2
    assert "no entity 'nobody@example.com'" in err


def test_reinit_is_atomic_and_previewable(demo_settings, capsys):
    config, tmp_path = demo_settings
    at = NOW.isoformat()
    code, out, _ = run(capsys, "reinit", "--config", str(config), "--at", at, "--dry-run")
    assert code == 0
    assert "DRY RUN: nothing was written." in out
    state = StateStore(f"sqlite:///{tmp_path}/state.sqlite")
    state.migrate()
    assert state.reinit_at("user") is None
    code, out, _ = run(capsys, "reinit", "--config", str(config), "--at", at)
    assert code == 0
    assert "user: 40 re-initialised" in out
    assert state.reinit_at("user") == NOW
    assert len(state.baselines("user")) == 40
    state.close()
    # The next cycle is full, and every status starts from the baseline.
    code, _, err = run(capsys, "once", "--config", str(config), "--at", at)
    assert code == 0
    assert "full cycle" in err


def test_reinit_in_sql_stores_what_the_python_evaluator_stores(demo_settings, capsys):
    config, tmp_path = demo_settings
    at = NOW.isoformat()
    outputs, stored = {}, {}
    state = StateStore(f"sqlite:///{tmp_path}/state.sqlite")
    state.migrate()
    for evaluator in ("python", "sql"):
        code, out, _ = run(
            capsys, "reinit", "--config", str(config), "--at", at, "--evaluator", evaluator
        )
        assert code == 0
        outputs[evaluator] = out
        stored[evaluator] = state.baselines("user")
    state.close()
    assert outputs["sql"] == outputs["python"]
    assert stored["sql"] == stored["python"]
    assert len(stored["sql"]) == 40
    assert out.count("  entered ") >= 3  # several lines of reinit: taken


def test_bad_settings_file_is_located(tmp_path, capsys):
    config = tmp_path / "mailsync.yaml"
    config.write_text("database: sqlite:///x\nmailchimp:\n  api_key: secret-us1\n")
    code, _, err = run(capsys, "once", "--config", str(config))
    assert code == 2
    assert "mailsync.yaml:3" in err
    assert "MAILCHIMP_API_KEY" in err
    assert "secret-us1" not in err


def test_missing_database_setting_is_explained(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAILSYNC_DATABASE_URL", raising=False)
    config = tmp_path / "mailsync.yaml"
    config.write_text(f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n")
    code, _, err = run(capsys, "once", "--config", str(config))
    assert code == 2
    assert "MAILSYNC_DATABASE_URL" in err


def test_demo_shows_the_lifecycle_moving(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, _ = run(
        capsys,
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        "--users",
        "300",
        "--days",
        "2",
        "--start",
        NOW.isoformat(),
    )
    assert code == 0, out
    assert "First cycle" in out
    assert "One day later" in out
    assert "->" in out
    assert "mailsync explain" in out
    assert (tmp_path / "demo" / "mailsync.yaml").exists()


@pytest.mark.parametrize("example", ["littleworld", "rallia"])
def test_explain_and_status_on_the_other_lifecycles(
    example, tmp_path, monkeypatch, db_url, capsys, mailchimp_emulator
):
    load_demo(db_url, example, users=30, seed=3, now=NOW)
    base = ROOT / "examples" / example
    config = tmp_path / "mailsync.yaml"
    config.write_text(
        f"rules: {base / 'rules.yaml'}\nsources: {base / 'sources.yaml'}\n"
        f"database: {db_url}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
    )
    live(monkeypatch, mailchimp_emulator, capsys, config)
    at = NOW.isoformat()
    assert run(capsys, "once", "--config", str(config), "--at", at)[0] == 0
    code, out, _ = run(capsys, "status", "--config", str(config), "--at", at, "--json")
    assert code == 0
    statuses = json.loads(out)["statuses"]
    expected = {"match", "user"} if example == "littleworld" else {"match", "participant"}
    assert set(statuses) == expected
    entity = "user" if example == "littleworld" else "match"
    code, out, _ = run(
        capsys, "explain", "1", "--entity", entity, "--config", str(config), "--at", at, "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["entity_type"] == entity
    assert data["status"] in statuses[entity]


def test_once_says_how_far_a_long_cycle_got(demo_settings, capsys, monkeypatch, mailchimp_emulator):
    """Going live with ``mailsync once`` at a million users takes minutes:
    it prints the progress lines ``mailsync run`` logs, not only its summary."""
    import sync.cli.once as once_command
    from sync.daemon.runtime import build_runtime as build

    config, _ = demo_settings
    live(monkeypatch, mailchimp_emulator, capsys, config)

    def small_pushes(*args, **kwargs):
        runtime = build(*args, **kwargs)
        runtime.flush_size = 15  # a progress line once 15 members are waiting
        return runtime

    monkeypatch.setattr(once_command, "build_runtime", small_pushes)
    code, _, err = run(capsys, "once", "--config", str(config), "--at", NOW.isoformat())
    assert code == 0
    progress = [line for line in err.splitlines() if line.startswith("pushing: ")]
    # The demo's 40 users are derived in one chunk: one round, then the
    # summary. The calls: the audience's merge fields, one batch subscribe.
    assert progress == ["pushing: 40 members pushed so far this cycle, 0 failed, 2 API calls"]
