"""A demo state store for the dashboard tests (``mailsync demo`` run once per
module), and a dashboard on it.

The demo writes the state store the way the product does (a real cycle per
simulated day, the history included), so the pages are tested on what a user
would see after `mailsync demo`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sync.cli import cli
from sync.daemon.config import load_config
from sync.dashboard import Access, Dashboard, People, ReadOnlyStore
from sync.rules.schema import load_rules
from sync.sources.schema import load_sources

START = "2026-03-01T09:00:00+00:00"
DAYS = 3
END = "2026-03-04T09:00:00+00:00"


@dataclass(frozen=True)
class Demo:
    folder: Path
    config: Path
    at: datetime

    def status(self) -> dict[str, Any]:
        """`mailsync status --json` at the demo's last instant."""
        result = CliRunner().invoke(
            cli, ["status", "--config", str(self.config), "--at", END, "--json"]
        )
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads(result.output)
        return data


def make_demo(folder: Path, users: int = 300) -> Demo:
    result = CliRunner().invoke(
        cli,
        ["demo", "--dir", str(folder), "--users", str(users), "--days", str(DAYS),
         "--start", START],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return Demo(folder, folder / "mailsync.yaml", datetime.fromisoformat(END))


def dashboard_for(demo: Demo, access: Access | None = None) -> Dashboard:
    """A dashboard on the demo's state store and database, at the demo's last instant."""
    config = load_config(str(demo.config))
    ruleset = load_rules(config.rules)
    assert config.database is not None
    return Dashboard(
        ReadOnlyStore(config.state),
        lambda: ruleset,
        clock=lambda: demo.at,
        access=access,
        people=People(load_sources(config.sources), config.database, timedelta(days=7)),
        rules_file=config.rules,
    )
