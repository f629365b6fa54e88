"""Adversarial API keys: a byte-order mark, whitespace, a typographic quote.

A key saved by an editor with a BOM, or pasted with curly quotes, used to
reach the HTTP client, whose ``UnicodeEncodeError`` quoted it (escaped, so
that plain redaction missed it) in the command's error and in the daemon's
log. Now the BOM and whitespace are stripped, other non-ASCII characters are
refused at load with a message that names them but not the key, and every
spelling of the key (raw, ``repr``, JSON, bytes) is redacted from logs, the
JSON log's structured fields and the CLI's error lines.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync.cli import main
from sync.daemon.logs import configure_logging
from sync.demo import load_demo
from sync.emulator import DEFAULT_LIST_ID
from sync.emulator.faults import FaultKind
from sync.emulator.server import Emulator
from sync.exceptions import ConfigurationError
from sync.mailchimp.client import load_api_key
from sync.mailchimp.redaction import clean_api_key, redact, spellings

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-03-01T09:00:00Z"
SECRET = "5ec7e7c0ffee5ec7e7c0ffee5ec7e7c0-us21"
HEAD = SECRET.split("-")[0]
RUN = [sys.executable, "-m", "sync", "run"]

#: (how the key is given, the raw text, whether mailsync accepts it)
ADVERSARIAL = {
    "bom-file": ("file", "\ufeff" + SECRET + "\r\n", True),
    "spaces-env": ("env", "  " + SECRET + "\t", True),
    "bom-env": ("env", "\ufeff" + SECRET, True),
    "curly-quotes-env": ("env", "\u201c" + SECRET + "\u201d", False),
    "accent-file": ("file", SECRET.replace("c0ffee", "c0ff\u00e9e", 1), False),
    "nbsp-inside-env": ("env", SECRET[:10] + "\u00a0" + SECRET[10:], False),
}


def forbidden(raw: str) -> set[str]:
    """Every text that would give the key away."""
    return spellings(raw) | spellings(SECRET) | {HEAD, repr(raw), json.dumps(raw)}


def assert_no_key(raw: str, text: str) -> None:
    for form in forbidden(raw):
        assert form not in text, f"{form!r} leaked"


def test_bom_and_whitespace_are_stripped_other_characters_refused_without_echo():
    assert clean_api_key("\ufeff " + SECRET + "\n", "MAILCHIMP_API_KEY") == SECRET
    with pytest.raises(ConfigurationError) as caught:
        clean_api_key("\u201c" + SECRET + "\u201d", "MAILCHIMP_API_KEY")
    message = str(caught.value)
    assert "U+201C (LEFT DOUBLE QUOTATION MARK)" in message
    assert message.startswith("MAILCHIMP_API_KEY: ")
    assert_no_key(SECRET, message)
    # Letters could be part of the key: counted, not named.
    with pytest.raises(ConfigurationError, match="1 non-ASCII letters or digits"):
        clean_api_key(SECRET.replace("c0ffee", "c0ff\u00e9e"), "k")


def test_a_key_file_that_is_not_utf8_is_refused_by_name(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"\xff\xfe" + SECRET.encode("utf-16-le"))
    with pytest.raises(ConfigurationError, match="not UTF-8 text"):
        load_api_key({"MAILCHIMP_API_KEY_FILE": str(path)})


def test_every_spelling_is_redacted_from_text_json_fields_and_exceptions():
    raw = "\ufeff" + SECRET
    clean_api_key(raw, "test")  # registers it, as loading does
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = logging.getLogger("sync.test_secrets")
    try:
        raise UnicodeEncodeError("latin-1", raw, 0, 1, "ordinal not in range(256)")
    except UnicodeEncodeError as exc:
        log.exception(
            "cycle failed: %r",
            exc,
            extra={"failure": {"kind": "x", "message": repr(exc), "list": [raw, SECRET]}},
        )
    configure_logging("text", stream=stream)
    log.error("text %s", json.dumps(raw), extra={"failure": {"message": repr(raw)}})
    text = stream.getvalue()
    assert '"failure"' in text
    assert "***" in text
    assert_no_key(raw, text)
    assert_no_key(raw, redact(repr(raw.encode("utf-8"))))


@pytest.fixture
def emulator():
    with Emulator(api_key=SECRET) as running:
        yield running


@pytest.fixture
def settings(tmp_path, emulator):
    app = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(app, "blousebrothers", users=20, seed=3, now=datetime(2026, 3, 1, tzinfo=UTC))
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {app}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
        # retry_wait: the failed calls are retried (and logged) as always, on a
        # back-off of hundredths of a second rather than seconds.
        f"mailchimp: {{list_id: {DEFAULT_LIST_ID}, base_url: '{emulator.url}', retry_wait: 0.01}}\n"
        "daemon: {interval: 1s, lease_ttl: 5s}\n"
    )
    return path


def key_env(tmp_path: Path, how: str, raw: str) -> dict[str, str]:
    if how == "env":
        return {"MAILCHIMP_API_KEY": raw}
    path = tmp_path / "api-key.txt"
    path.write_bytes(raw.encode("utf-8"))
    return {"MAILCHIMP_API_KEY_FILE": str(path)}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_keys_through_every_command_and_the_daemon(
    case, settings, tmp_path, emulator, capsys, caplog, monkeypatch
):
    how, raw, accepted = ADVERSARIAL[case]
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_API_KEY_FILE", raising=False)
    env = key_env(tmp_path, how, raw)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    # Every other call fails, so that retries and failures get logged.
    emulator.faults.set_random(0.5, seed=3, kinds=[FaultKind.SERVER_ERROR, "429"])
    outputs: list[str] = []
    codes: dict[str, int] = {}
    for command in (
        ["once", "--at", NOW],
        ["check"],
        ["status", "--at", NOW],
        ["once", "--at", NOW, "--full"],
    ):
        codes[command[0] + str(len(command))] = main([*command, "--config", str(settings)])
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    text = "\n".join(outputs)
    if accepted:
        assert codes["once3"] in (0, 1), text
    else:
        assert codes["once3"] == 2, text
        assert codes["check1"] == 2, text
        assert "the API key contains" in text
    assert codes["status3"] == 0, text
    assert_no_key(raw, text)
    assert_no_key(raw, "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))
    assert_no_key(raw, daemon_output(settings, tmp_path, env, accepted))


def daemon_output(settings: Path, tmp_path: Path, key: dict[str, str], accepted: bool) -> str:
    """``mailsync run --log-format json`` until its first cycle ended (or it
    refused the key), then SIGTERM; its whole output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCHIMP_API_KEY")}
    env.update(PYTHONPATH=str(ROOT), **key)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*RUN, "--config", str(settings), "--log-format", "json"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                if "cycle done" in log_path.read_text() or "cycle failed" in log_path.read_text():
                    break
                time.sleep(0.1)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log_path.read_text()
    if accepted:
        assert code == 0, text
        assert "cycle " in text, text
    else:
        assert code == 2, text
        assert "the API key contains" in text, text
    return text
