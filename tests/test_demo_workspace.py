"""``mailsync demo`` stands alone: one workspace, and hints that work when pasted.

The demo is run from an empty directory with ``--dir`` naming another one;
then every "where to look next" command it printed is parsed from its output
and run, as a separate process, from a third, fresh directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sync.cli import main
from sync.demo.workspace import SHIPPED, Workspace, default_folder

ROOT = Path(__file__).resolve().parent.parent
START = "2026-03-01T08:00:00Z"
HINT = re.compile(r"^  mailsync (?P<args>.+?)(?:\s+#.*)?$")


def run_demo(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["demo", "--users", "150", "--days", "1", "--start", START, *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_every_hint_the_demo_prints_works_pasted_in_a_fresh_directory(
    tmp_path, capsys, monkeypatch
):
    elsewhere, workspace, fresh = tmp_path / "cwd", tmp_path / "demo space", tmp_path / "fresh"
    for folder in (elsewhere, fresh):
        folder.mkdir()
    monkeypatch.chdir(elsewhere)
    out = run_demo(capsys, "--dir", str(workspace))

    assert list(elsewhere.iterdir()) == [], "the demo wrote into the current directory"
    assert f"Workspace: {workspace}" in out
    for name in (*SHIPPED, "mailsync.yaml", "app.sqlite", "state.sqlite"):
        assert (workspace / name).exists(), name

    hints = [m["args"] for line in out.splitlines() if (m := HINT.match(line))]
    assert {shlex.split(h)[0] for h in hints} >= {"explain", "status", "check", "graph", "test"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for hint in hints:
        done = subprocess.run(
            [sys.executable, "-m", "sync", *shlex.split(hint)],
            cwd=fresh,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"mailsync {hint}\n{done.stdout}\n{done.stderr}"
    assert list(fresh.iterdir()) == []


def test_without_dir_the_workspace_is_under_the_users_data_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    out = run_demo(capsys)
    space = tmp_path / "data" / "mailsync" / "demo"
    assert f"Workspace: {space}" in out
    assert (space / "rules.yaml").read_bytes() == (ROOT / "rules.yaml").read_bytes()
    assert f"mailsync test {space / 'rules.test.yaml'}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_default_folder_follows_xdg_and_falls_back_to_local_share():
    home = Path.home() / ".local" / "share" / "mailsync" / "demo"
    assert default_folder({}) == home
    assert default_folder({"XDG_DATA_HOME": "/srv/data"}) == Path("/srv/data/mailsync/demo")
    # A relative XDG_DATA_HOME is invalid by the spec, and would depend on the cwd.
    assert default_folder({"XDG_DATA_HOME": "data"}) == home


def test_a_rerun_keeps_the_marketers_edited_rules_and_starts_a_fresh_story(tmp_path):
    space = Workspace(tmp_path)
    assert space.prepare() == (list(SHIPPED), [])
    edited = space.rules.read_text() + "# my change\n"
    space.rules.write_text(edited)
    (tmp_path / "state.sqlite").write_text("old state")
    assert space.prepare() == ([], list(SHIPPED))
    assert space.rules.read_text() == edited
    assert not (tmp_path / "state.sqlite").exists()
    settings = space.settings.read_text()
    assert "rules: rules.yaml\n" in settings
    assert f"database: sqlite:///{tmp_path / 'app.sqlite'}\n" in settings
