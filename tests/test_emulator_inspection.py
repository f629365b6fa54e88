"""The inspection API over HTTP, the ``mailsync emulator`` command, and ``client_for``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.cli import cli
from sync.emulator import client_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def inspect(mailchimp_emulator):
    base = mailchimp_emulator.root_url + "/_emulator"

    def call(method: str, path: str, **kwargs):
        return requests.request(method, base + path, timeout=5, **kwargs)

    return call


def test_health_tells_where_to_go(mailchimp_emulator, inspect):
    assert inspect("GET", "/health").json() == {
        "url": mailchimp_emulator.url,
        "api_key": mailchimp_emulator.api_key,
        "list_id": mailchimp_emulator.list_id,
    }


def test_members_and_events_over_http(mailchimp_emulator, mailchimp_client, inspect):
    list_id = mailchimp_emulator.list_id
    seeded = inspect(
        "POST",
        f"/lists/{list_id}/members",
        json={"email_address": "a@shop.io", "status": "subscribed", "tags": ["t"]},
    )
    assert seeded.status_code == 201
    h = subscriber_hash("a@shop.io")
    for name in ("one", "two", "one"):
        mailchimp_client.lists.create_list_member_event(list_id, h, {"name": name})
    mailchimp_client.lists.update_list_member(list_id, h, {"merge_fields": {"FNAME": "A"}})
    member = inspect("GET", f"/lists/{list_id}/members/a@shop.io").json()
    assert member["merge_fields"] == {"FNAME": "A"}
    assert member["tags"] == ["t"]
    assert [e["name"] for e in member["events"]] == ["one", "two", "one"]
    assert [m["id"] for m in inspect("GET", f"/lists/{list_id}/members").json()["members"]] == [h]
    events = inspect("GET", f"/lists/{list_id}/events").json()["events"]
    assert [(e["email_address"], e["name"]) for e in events] == [
        ("a@shop.io", "one"),
        ("a@shop.io", "two"),
        ("a@shop.io", "one"),
    ]
    assert inspect("GET", f"/lists/{list_id}/members/nobody@shop.io").status_code == 404
    assert inspect("GET", "/lists/nope/members").status_code == 404


def test_calls_over_http_are_not_counted_themselves(mailchimp_client, inspect):
    mailchimp_client.ping.get()
    inspect("GET", "/health")
    calls = inspect("GET", "/calls").json()
    assert calls["by_endpoint"] == {"GET /ping": 1}
    assert calls["by_outcome"] == {"200": 1}
    assert calls["calls"][0]["path"] == "/3.0/ping"


def test_scripted_and_random_faults_over_http(mailchimp_client, inspect):
    scripted = inspect(
        "POST", "/faults", json={"pattern": "/ping", "kind": "429-empty", "times": 1}
    )
    assert scripted.status_code == 201
    assert mailchimp_client.ping.get().status_code == 429
    assert inspect("GET", "/faults").json()["scripted"] == []
    inspect("POST", "/faults/random", json={"rate": 1.0, "seed": 3, "kinds": ["500"]})
    with pytest.raises(ApiClientError):
        mailchimp_client.ping.get()
    assert inspect("DELETE", "/faults").status_code == 204
    assert mailchimp_client.ping.get()["health_status"]


@pytest.mark.parametrize(
    ("mark", "title"),
    [
        ("compliance", "Member In Compliance State"),
        ("forgotten", "Forgotten Email Not Subscribed"),
        ("fake", "Invalid Resource"),
    ],
)
def test_marks_over_http(mailchimp_emulator, mailchimp_client, inspect, mark, title):
    list_id = mailchimp_emulator.list_id
    answer = inspect(
        "POST", f"/lists/{list_id}/marks", json={"email_address": "m@shop.io", "mark": mark}
    )
    assert answer.status_code == 204
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.set_list_member(
            list_id,
            subscriber_hash("m@shop.io"),
            {"email_address": "m@shop.io", "status_if_new": "subscribed"},
        )
    assert f'"title": "{title}"' in exc.value.text


def test_settings_and_reset_over_http(mailchimp_emulator, mailchimp_client, inspect):
    changed = inspect("POST", "/settings", json={"service_delay": 0.01, "max_connections": 3})
    assert changed.json()["max_connections"] == 3
    assert mailchimp_emulator.service_delay == 0.01
    assert inspect("POST", "/settings", json={"speed": 1}).status_code == 400
    mailchimp_emulator.audience.seed_member("a@shop.io")
    mailchimp_client.ping.get()
    assert inspect("POST", "/reset").status_code == 204
    assert mailchimp_emulator.audience.members() == []
    assert mailchimp_emulator.calls.calls() == []
    assert inspect("GET", "/settings").json()["max_connections"] == 10


def test_bad_inspection_requests(inspect):
    assert inspect("GET", "/nowhere").status_code == 404
    assert inspect("PUT", "/reset").status_code == 405
    bad = inspect("POST", "/faults", json={"pattern": "/ping", "kind": "teapot"})
    assert bad.status_code == 400
    assert "teapot" in bad.json()["error"]


def test_client_for_points_the_official_client_anywhere(mailchimp_emulator):
    client = client_for(mailchimp_emulator.url + "/", mailchimp_emulator.api_key, timeout=5)
    assert client.api_client.host == mailchimp_emulator.url
    assert client.api_client.server == "us21"
    assert client.api_client.timeout == 5
    assert client.ping.get()["health_status"]
    with pytest.raises(ValueError, match="server"):
        client_for("http://myserver:1/3.0", "k-us1")


def test_cli_serves_until_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sync", "emulator", "--port", "0", "--api-key", "k-us9"]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        try:
            assert first.startswith("Mailchimp emulator listening on http://127.0.0.1:")
            url = first.rsplit(" ", 1)[1].strip()
            assert proc.stdout.readline().split() == ["API", "key:", "k-us9"]
            assert client_for(url, "k-us9", timeout=5).ping.get()["health_status"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err


def test_cli_rejects_bad_fault_rate():
    result = CliRunner().invoke(cli, ["emulator", "--port", "0", "--fault-rate", "2"])
    assert result.exit_code == 2
    assert "--fault-rate" in result.output


def test_cli_reports_a_busy_port(mailchimp_emulator):
    port = str(mailchimp_emulator.port)
    result = CliRunner().invoke(cli, ["emulator", "--port", port])
    assert result.exit_code == 1
    assert "cannot listen" in result.output
