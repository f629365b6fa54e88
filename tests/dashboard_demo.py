"""A demo state store for the dashboard tests: ``mailsync demo`` run once per module.

The demo writes the state store the way the product does (a real cycle per
simulated day, the history included), so the pages are tested on what a user
would see after `mailsync demo`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sync.cli import cli

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
