"""``mailsync check`` runs every query of sources.yaml (issue 13, row 11).

A sources.yaml naming a missing table, with a syntax error, returning the
wrong columns or a list without ``email`` used to pass ``mailsync check``
("provides every action and fact"), and ``once`` then failed: the systemd
unit uses ``check`` as its start gate. Now each query runs for no rows in
the read-only transaction, on SQLite and PostgreSQL, and every problem is
reported at once with exit 2, naming sources.yaml and the query's line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.cli import main
from sync.demo import load_demo
from tests.support.cycle import NOW

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "sources.yaml").read_text()


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the file")


@pytest.fixture
def app(db_url, tmp_path, monkeypatch):
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_LIST_ID", raising=False)
    load_demo(db_url, "blousebrothers", users=5, seed=1, now=NOW)
    return db_url


def check(capsys, tmp_path: Path, database: str, sources: str) -> tuple[int, str, str]:
    (tmp_path / "sources.yaml").write_text(sources)
    config = tmp_path / "mailsync.yaml"
    config.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {tmp_path / 'sources.yaml'}\n"
        f"database: {database}\n"
    )
    code = main(["check", "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_shipped_sources_pass_with_every_query_run(app, tmp_path, capsys):
    code, out, err = check(capsys, tmp_path, app, SOURCES)
    assert code == 0, err
    assert "every query ran, with the columns it must return" in out


def test_broken_queries_are_each_reported_with_their_line(app, tmp_path, capsys):
    broken = (
        SOURCES.replace("FROM wallets\n", "FROM no_such_wallets\n", 1)
        .replace("received_at AS at FROM transfers", "received_at AS at FORM transfers")
        .replace("sent_at AS at FROM balance_notices", "sent_at AS sent FROM balance_notices")
        .replace("SELECT id, email, first_name", "SELECT id, email AS mail, first_name")
    )
    code, _, err = check(capsys, tmp_path, app, broken)
    assert code == 2, err
    sources = tmp_path / "sources.yaml"
    expected = {
        "wallet_created: SELECT user_id AS id, created_at AS at FROM no_such_wallets": "refused",
        "FORM transfers": "refused",
        "FROM balance_notices": "action 'balance_low' must return the columns id, at",
        "list: |": "the entity list must return the columns id, email",
    }
    for needle, message in expected.items():
        where = f"{sources}:{line_of(broken, needle)}: "
        lines = [line for line in err.splitlines() if line.startswith(where)]
        assert lines, f"nothing at {where}:\n{err}"
        assert message in lines[0], lines[0]
    assert "(missing: at)" in err
    assert "(missing: email)" in err
    assert "4 errors found." in err
    assert "This is a bug" not in err


def test_the_checked_queries_cannot_write(app, tmp_path, capsys):
    writing = SOURCES.replace(
        "signup: SELECT id, date_joined AS at FROM users",
        "signup: DELETE FROM users RETURNING id, date_joined AS at",
    )
    code, _, err = check(capsys, tmp_path, app, writing)
    assert code == 2, err
    assert f"{tmp_path / 'sources.yaml'}:{line_of(writing, 'DELETE FROM users')}:" in err
    # The users are all still there.
    assert check(capsys, tmp_path, app, SOURCES)[0] == 0


def test_check_rules_finds_the_sources_beside_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no mailsync.yaml, no sources.yaml here
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text((ROOT / "rules.yaml").read_text())
    (tmp_path / "rules" / "sources.yaml").write_text(SOURCES.replace("wallet_created:", "x:"))
    code = main(["check", "--rules", str(tmp_path / "rules" / "rules.yaml")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "wallet_created" in err  # the sources beside the rules were checked
    os.remove(tmp_path / "rules" / "sources.yaml")
    assert main(["check", "--rules", str(tmp_path / "rules" / "rules.yaml")]) == 0
    assert "sources: not checked (no sources.yaml in " in capsys.readouterr().out


def test_without_settings_an_unreadable_file_says_how_to_point_at_them(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILSYNC_RULES", raising=False)
    for command in (["status"], ["once"], ["check"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "rules.yaml: cannot read file" in err
        assert "--config FILE" in err
    # With settings given, the hint would be wrong: the settings name the files.
    (tmp_path / "mailsync.yaml").write_text("rules: elsewhere.yaml\n")
    assert main(["status", "--config", str(tmp_path / "mailsync.yaml")]) == 2
    assert "--config FILE" not in capsys.readouterr().err
