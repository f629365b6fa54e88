"""The emulator's ambiguous faults: the request is carried out, the answer is lost.

``process-then-timeout`` and ``process-then-reset`` are what makes a
non-idempotent call (an event POST) dangerous to retry: the client sees
exactly what a plain ``timeout`` / ``reset`` gives it, yet Mailchimp did the
work. These tests pin both halves: the client's view, and the state behind.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator import FaultKind

EVENT = {"name": "credit", "properties": {"amount": "10"}, "occurred_at": "2026-03-01T09:00:00Z"}
EVENTS = "POST /lists/{list_id}/members/{subscriber_hash}/events"


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        pytest.param(FaultKind.PROCESS_THEN_TIMEOUT, requests.Timeout, id="process-then-timeout"),
        pytest.param(
            FaultKind.PROCESS_THEN_RESET, requests.ConnectionError, id="process-then-reset"
        ),
    ],
)
def test_the_event_is_recorded_but_the_client_sees_a_network_failure(
    mailchimp_emulator, kind, cause
):
    emulator = mailchimp_emulator
    emulator.timeout_hold = 0.5
    emulator.audience.seed_member("ann@shop.io")
    emulator.faults.script("/lists/*/members/*/events", kind)
    client = emulator.client(timeout=0.2)
    with pytest.raises(ApiClientError) as exc:
        client.lists.create_list_member_event(emulator.list_id, "ann@shop.io", EVENT)
    assert exc.value.status_code is None
    assert isinstance(exc.value.text, cause)
    # ... and yet Mailchimp has it.
    received = emulator.audience.received_events()
    assert [(email, e.name) for email, e in received] == [("ann@shop.io", "credit")]
    outcome = "timeout" if kind is FaultKind.PROCESS_THEN_TIMEOUT else "reset"
    assert [(c.outcome, c.fault) for c in emulator.calls.calls(EVENTS)] == [(outcome, kind.value)]


def test_plain_faults_do_not_process(mailchimp_emulator):
    emulator = mailchimp_emulator
    emulator.timeout_hold = 0.3
    emulator.audience.seed_member("ann@shop.io")
    for kind in (FaultKind.TIMEOUT, FaultKind.RESET, FaultKind.SERVER_ERROR):
        emulator.faults.script("/lists/*/members/*/events", kind)
    client = emulator.client(timeout=0.1)
    for _ in range(3):
        with pytest.raises(ApiClientError):
            client.lists.create_list_member_event(emulator.list_id, "ann@shop.io", EVENT)
    assert emulator.audience.received_events() == []


def test_a_put_is_applied_before_the_reset(mailchimp_emulator, mailchimp_client):
    emulator = mailchimp_emulator
    emulator.faults.script("/lists/*/members/*", "process-then-reset", method="PUT")
    body = {"email_address": "bob@shop.io", "status_if_new": "subscribed"}
    with pytest.raises(ApiClientError):
        mailchimp_client.lists.set_list_member(emulator.list_id, "bob@shop.io", body)
    member = emulator.audience.member("bob@shop.io")
    assert member is not None
    assert member.status == "subscribed"


def test_a_batch_job_started_before_the_timeout_runs(mailchimp_emulator):
    emulator = mailchimp_emulator
    emulator.timeout_hold = 0.5
    emulator.audience.seed_member("ann@shop.io")
    emulator.faults.script("/batches", "process-then-timeout", method="POST")
    client = emulator.client(timeout=0.2)
    operation = {
        "method": "POST",
        "path": f"/lists/{emulator.list_id}/members/ann@shop.io/events",
        "body": json.dumps(EVENT),
    }
    with pytest.raises(ApiClientError):
        client.batches.start({"operations": [operation]})
    (batch,) = emulator.batches.batches()
    emulator.batches.wait_finished(batch.id)
    assert len(emulator.audience.events("ann@shop.io")) == 1


def test_a_wrong_key_is_not_processed(mailchimp_emulator):
    emulator = mailchimp_emulator
    emulator.faults.script("/lists/*/members/*", "process-then-reset", method="PUT")
    with pytest.raises(requests.ConnectionError):
        requests.put(
            f"{emulator.url}/lists/{emulator.list_id}/members/eve@shop.io",
            json={"email_address": "eve@shop.io", "status_if_new": "subscribed"},
            auth=("u", "wrong-us1"),
            timeout=5,
        )
    assert emulator.audience.member("eve@shop.io") is None


def test_the_kinds_can_be_scripted_over_http(mailchimp_emulator, mailchimp_client):
    emulator = mailchimp_emulator
    request = urllib.request.Request(
        f"{emulator.root_url}/_emulator/faults/random",
        data=json.dumps(
            {"rate": 1.0, "seed": 3, "kinds": ["process-then-reset", "process-then-timeout"]}
        ).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        kinds = json.loads(answer.read())["random"]["kinds"]
    assert kinds == ["process-then-reset", "process-then-timeout"]
