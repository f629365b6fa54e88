"""What the commands say matches what they did (issue 14's rough edges).

A preview speaks in the conditional ("would re-initialise", "would send N
events"); with ``--log-format json`` every line is JSON; a failure quoting a
whole HTML error page is logged as one line; the address the emulator's
banner advertises answers; the docs cite only files that are in the
repository.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sync.daemon.logs import configure_logging
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from tests.support.cli import run
from tests.support.cycle import NOW

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging takes the "sync" logger over; give it back afterwards,
    so that later tests' caplog still sees its records."""
    logger = logging.getLogger("sync")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


@pytest.fixture
def settings(demo_settings):
    """The demo database and settings file, without Mailchimp (``demo_settings``)."""
    config, _ = demo_settings
    return config


def test_reinit_dry_run_says_would_re_initialise(settings, capsys):
    at = NOW.isoformat()
    code, out, _ = run(capsys, "reinit", "--config", str(settings), "--at", at, "--dry-run")
    assert code == 0
    assert f"user: would re-initialise 40 at {at}" in out
    assert "re-initialised" not in out
    code, out, _ = run(capsys, "reinit", "--config", str(settings), "--at", at)
    assert f"user: 40 re-initialised at {at}" in out


def test_a_dry_run_summary_counts_the_events_it_lists(settings, capsys):
    # With a back-fill, the week's events are due on this first cycle.
    at = NOW.isoformat()
    code, out, err = run(
        capsys, "once", "--config", str(settings), "--at", at, "--backfill-events", "7d"
    )
    assert code == 0
    listed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = sum(len(line.get("events", ())) for line in listed)
    members = sum(1 for line in listed if "email" in line)
    assert events > 0, "the demo data should have events due"
    assert (
        f"DRY RUN, nothing sent: 40 members considered, would push {members}, 0 unchanged, "
        f"0 held back; would send {events} events"
    ) in err
    assert "events sent" not in err


def test_with_log_format_json_every_line_of_the_daemon_is_json(settings, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sync", "run", "--config", str(settings)]
    command += ["--log-format", "json", "--metrics", "127.0.0.1:0"]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        lines: list[str] = []
        try:
            while not any("cycle done" in line for line in lines):
                line = proc.stderr.readline()
                assert line, "the daemon stopped: " + "".join(lines)
                lines.append(line)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=30)
    lines += rest.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert any(r["message"].startswith("metrics on http://127.0.0.1:") for r in records)
    assert records[0]["level"] in {"info", "warning"}


HTML_PAGE = """<!DOCTYPE html>
<html>
<head><title>503 Service Unavailable</title>
<style>body { font-family: sans-serif; }</style></head>
<body>
<h1>Service Unavailable</h1>
<p>The server is temporarily unable to service your request.</p>
</body>
</html>
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_failure_quoting_an_html_page_is_logged_as_one_short_line(fmt):
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    log = logging.getLogger("sync.daemon.runtime")
    log.warning(
        "push failed for %s: %s",
        "ann@shop.io",
        f"HTTP 503: {HTML_PAGE}",
        extra={"failure": {"email": "ann@shop.io", "reason": f"HTTP 503: {HTML_PAGE}"}},
    )
    (line,) = stream.getvalue().splitlines()
    assert "<" not in line
    assert "HTTP 503: an HTML page (503 Service Unavailable): Service Unavailable" in line
    assert len(line) < 700


def test_other_multi_line_messages_are_kept_whole():
    # A rules reload lists every problem, one per line: the reader needs them all.
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    problems = "\n".join(f"rules.yaml:{n}: problem {n}" for n in range(1, 40))
    logging.getLogger("sync.daemon.runtime").error("rules reload: invalid:\n%s", problems)
    assert problems in stream.getvalue()


def test_the_emulators_html_page_reaches_the_log_as_an_excerpt(mailchimp_emulator):
    # The real path: the emulator's edge-filter page, classified, retried, logged.
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    mailchimp_emulator.faults.script("/ping", "503-html", times=2)
    settings = MailchimpSettings(
        mailchimp_emulator.api_key, mailchimp_emulator.list_id, host=mailchimp_emulator.url
    )
    caller = Caller(
        make_client(settings),
        mailchimp_emulator.list_id,
        RetryPolicy(attempts=2, initial_wait=0.0, max_wait=0.0, sleep=lambda _: None),
    )
    caller.call("GET /ping", caller.client.ping.get)
    logged = stream.getvalue().splitlines()
    assert len(logged) == 2  # one retry, then giving up: one line each
    assert all("HTTP 503: an HTML page" in line and "<" not in line for line in logged)


def test_the_inspection_address_on_the_emulators_banner_answers():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sync", "emulator", "--port", "0"]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        try:
            banner = [proc.stdout.readline() for _ in range(4)]
            (address,) = [b.split()[1] for b in banner if b.startswith("Inspection:")]
            answer = requests.get(address, timeout=5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert "GET /_emulator/health" in body["endpoints"]


def test_the_docs_cite_only_files_that_are_in_the_repository():
    # Documents cited by path, like `docs/sink.md` (a spec kept elsewhere was cited so).
    cited = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+\.md)`")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in cited.findall(doc.read_text()):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert missing == []
