"""``mailsync run`` receiving Mailchimp's webhooks on its metrics port: a
marketer archives a contact and two people unsubscribe mid-run; the daemon
keeps them so and ``mailsync status`` shows them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import requests

from sync.cli import main
from sync.mailchimp.webhooks import PREFIX
from tests.support.cycle import NOW
from tests.support.daemon_process import Daemon, cycles_done, wait_cycles, write_settings

SECRET = "daemon-webhook-secret-0123"


def test_webhooks_reach_the_running_daemon(daemon_demo, monkeypatch, capsys):
    tmp_path, database, state, emulator = daemon_demo
    monkeypatch.setenv("MAILSYNC_WEBHOOK_SECRET", SECRET)
    settings = write_settings(tmp_path, database, state, emulator)
    daemon = Daemon(settings, NOW, "--metrics", "127.0.0.1:0")
    port = int(daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    daemon.wait_for(r"Mailchimp webhooks on http://127\.0\.0\.1:\d+/mailchimp/webhook/<secret>")
    assert SECRET not in daemon.text()
    # What the operator does in Mailchimp's audience settings; it GETs the URL.
    url = f"http://127.0.0.1:{port}{PREFIX}{SECRET}"
    emulator.store.webhooks.register(emulator.list_id, {"url": url})
    wait_cycles(state, 1, daemon)

    archived, unsub1, unsub2 = sorted(m.email_address for m in emulator.audience.members())[:3]
    base = f"{emulator.root_url}/_emulator/lists/{emulator.list_id}/members"
    for email, action in ((archived, "archive"), (unsub1, "unsubscribe"), (unsub2, "unsubscribe")):
        answer = requests.post(f"{base}/{email}/{action}", json={}, timeout=10).json()
        assert [d["status"] for d in answer["deliveries"]] == [200]
    wait_cycles(state, cycles_done(state) + 3, daemon)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert 'mailsync_webhooks_total{result="applied"} 3' in answer.read().decode()
    assert daemon.stop() == 0

    audience = emulator.audience
    assert audience.member(archived).status == "archived"
    assert audience.member(unsub1).status == "unsubscribed"
    assert audience.member(unsub2).status == "unsubscribed"
    report = json.loads(_status(settings, capsys))
    assert report["mailchimp_side"]["statuses"] == {"archived": 1, "unsubscribed": 2}


def test_a_webhook_secret_needs_the_http_port(daemon_demo, monkeypatch, capsys):
    tmp_path, database, state, emulator = daemon_demo
    monkeypatch.setenv("MAILSYNC_WEBHOOK_SECRET", SECRET)
    settings = write_settings(tmp_path, database, state, emulator)
    assert main(["run", "--config", str(settings)]) == 2
    assert "no HTTP port" in capsys.readouterr().err


@pytest.mark.parametrize("secret", ["short", "has/a/slash-0123456789"])
def test_a_weak_webhook_secret_is_refused(daemon_demo, monkeypatch, capsys, secret):
    tmp_path, database, state, emulator = daemon_demo
    monkeypatch.setenv("MAILSYNC_WEBHOOK_SECRET", secret)
    monkeypatch.setenv("MAILCHIMP_API_KEY", emulator.api_key)
    settings = write_settings(tmp_path, database, state, emulator)
    assert main(["run", "--config", str(settings), "--metrics", "127.0.0.1:0"]) == 2
    assert "webhook secret: expected at least 16" in capsys.readouterr().err


def _status(settings: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["status", "--config", str(settings), "--json"]) == 0
    return capsys.readouterr().out
