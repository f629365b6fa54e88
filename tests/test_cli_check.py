"""``mailsync check`` beyond the rules: sources and the Mailchimp audience."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID
from tests.support.cli import run
from tests.support.cycle import NOW

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_LIST_ID", raising=False)
    database = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(database, "blousebrothers", users=5, seed=1, now=NOW)
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\ndatabase: {database}\n"
    )
    return path


def test_without_credentials_mailchimp_is_skipped_and_said(settings, capsys):
    code, out, _ = run(capsys, "check", "--config", str(settings))
    assert code == 0
    assert "rules.yaml: OK" in out
    assert (
        "sources.yaml: OK, provides every action and fact the rules read (against the "
        "database: every query ran, with the columns it must return)" in out
    )
    assert "Mailchimp: skipped (no MAILCHIMP_LIST_ID configured)" in out
    assert "user: cycles evaluate in SQL" in out


def test_a_type_the_sql_cannot_evaluate_is_named_with_the_reason(settings, tmp_path, capsys):
    # SQLite has no time-zone database: naive instants in Europe/Paris cannot
    # be compiled, so the cycles use the Python engine for that type.
    sources = (ROOT / "sources.yaml").read_text()
    assert "naive_timezone: UTC" in sources
    (tmp_path / "sources.yaml").write_text(
        sources.replace("naive_timezone: UTC", "naive_timezone: Europe/Paris")
    )
    settings.write_text(
        settings.read_text().replace(str(ROOT / "sources.yaml"), str(tmp_path / "sources.yaml"))
    )
    code, out, _ = run(capsys, "check", "--config", str(settings))
    assert code == 0, out
    assert "user: cycles evaluate with the Python engine (user: SQLite has no time-zone" in out


def test_sources_missing_an_action_fail(settings, tmp_path, capsys):
    broken = tmp_path / "sources.yaml"
    text = (ROOT / "sources.yaml").read_text()
    broken.write_text(text.replace("      balance_low:", "      balance_lowish:"))
    code, _, err = run(capsys, "check", "--config", str(settings), "--sources", str(broken))
    assert code == 2
    assert "no query for action 'balance_low'" in err


def test_audience_checks_and_fix(settings, capsys, monkeypatch, mailchimp_emulator):
    monkeypatch.setenv("MAILCHIMP_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("MAILCHIMP_LIST_ID", DEFAULT_LIST_ID)
    monkeypatch.setenv("MAILCHIMP_BASE_URL", mailchimp_emulator.url)
    code, _, err = run(capsys, "check", "--config", str(settings))
    assert code == 2
    assert "merge tag MMERGE25: does not exist" in err
    assert "mailsync check --fix" in err
    code, out, _ = run(capsys, "check", "--config", str(settings), "--fix")
    assert code == 0
    assert "created merge field MMERGE25" in out
    assert f"Mailchimp: OK, audience {DEFAULT_LIST_ID} has the 5 merge fields" in out
    code, out, _ = run(capsys, "check", "--config", str(settings))
    assert code == 0


def test_bad_key_fails_without_showing_it(settings, capsys, monkeypatch, mailchimp_emulator):
    monkeypatch.setenv("MAILCHIMP_API_KEY", "0123456789abcdef0123456789abcdef-us99")
    monkeypatch.setenv("MAILCHIMP_LIST_ID", DEFAULT_LIST_ID)
    monkeypatch.setenv("MAILCHIMP_BASE_URL", mailchimp_emulator.url)
    code, out, err = run(capsys, "check", "--config", str(settings))
    assert code == 2
    assert "Mailchimp API key" in err
    assert "0123456789abcdef" not in out + err


def test_unknown_audience(settings, capsys, monkeypatch, mailchimp_emulator):
    monkeypatch.setenv("MAILCHIMP_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("MAILCHIMP_LIST_ID", "nope")
    monkeypatch.setenv("MAILCHIMP_BASE_URL", mailchimp_emulator.url)
    code, _, err = run(capsys, "check", "--config", str(settings))
    assert code == 2
    assert "audience nope" in err
