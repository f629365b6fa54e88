"""The operator's commands through ``main()``, as the CLI tests run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.cli import main
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator


def live(
    monkeypatch: pytest.MonkeyPatch,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    config: Path,
) -> None:
    """Point the commands at the emulator (a real cycle, not a dry run, which
    writes nothing to the state store) and create its merge fields."""
    monkeypatch.setenv("MAILCHIMP_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("MAILCHIMP_LIST_ID", DEFAULT_LIST_ID)
    monkeypatch.setenv("MAILCHIMP_BASE_URL", emulator.url)
    run(capsys, "check", "--fix", "--config", str(config))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``mailsync ARGS`` through ``main()``: the exit code, stdout and stderr."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err
