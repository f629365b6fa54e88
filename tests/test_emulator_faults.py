"""Injected faults and the concurrency limit, as the official client reports them.

The client's quirks are asserted on purpose, since the sink must handle
exactly these shapes: an empty-bodied error is *returned* as a
``requests.Response``; a bodied one is raised as ``ApiClientError`` with the
body as a string; a network failure is ``ApiClientError`` with
``status_code`` None.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator import FaultKind
from sync.emulator.faults import FaultPlan

PING = "GET /ping"


@pytest.mark.parametrize(
    ("kind", "status", "title"),
    [
        pytest.param(FaultKind.TOO_MANY_REQUESTS, 429, "Too Many Requests", id="429"),
        pytest.param(FaultKind.FORBIDDEN_JSON, 403, "Forbidden", id="403-json"),
        pytest.param(FaultKind.SERVER_ERROR, 500, "Internal Server Error", id="500"),
    ],
)
def test_problem_faults_are_raised(mailchimp_emulator, mailchimp_client, kind, status, title):
    mailchimp_emulator.faults.script("/ping", kind)
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.ping.get()
    assert exc.value.status_code == status
    assert isinstance(exc.value.text, str)
    assert json.loads(exc.value.text)["title"] == title
    # One shot only: the next call goes through.
    assert mailchimp_client.ping.get()["health_status"]


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        pytest.param(FaultKind.TOO_MANY_REQUESTS_EMPTY, 429, id="429-empty"),
        pytest.param(FaultKind.FORBIDDEN_EMPTY, 403, id="403-empty"),
    ],
)
def test_empty_body_faults_are_returned_not_raised(
    mailchimp_emulator, mailchimp_client, kind, status
):
    mailchimp_emulator.faults.script("/ping", kind)
    answer = mailchimp_client.ping.get()
    assert isinstance(answer, requests.Response)
    assert answer.status_code == status
    assert answer.content == b""


def test_503_html_page(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.faults.script("/ping", "503-html")
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.ping.get()
    assert exc.value.status_code == 503
    assert exc.value.text.lstrip().startswith("<!DOCTYPE html>")


def test_timeout(mailchimp_emulator):
    mailchimp_emulator.timeout_hold = 0.5
    mailchimp_emulator.faults.script("/ping", FaultKind.TIMEOUT)
    client = mailchimp_emulator.client(timeout=0.1)
    with pytest.raises(ApiClientError) as exc:
        client.ping.get()
    assert exc.value.status_code is None
    assert isinstance(exc.value.text, requests.Timeout)


def test_connection_reset(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.faults.script("/ping", FaultKind.RESET)
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.ping.get()
    assert exc.value.status_code is None
    assert isinstance(exc.value.text, requests.ConnectionError)
    assert mailchimp_emulator.calls.by_outcome() == {"reset": 1}


def test_scripted_fault_counts_and_pattern(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("a@shop.io")
    mailchimp_emulator.faults.script("/lists/*/members/*", "500", times=2, method="get")
    for _ in range(2):
        with pytest.raises(ApiClientError):
            mailchimp_client.lists.get_list_member(list_id, "a@shop.io")
    # `*` is one segment: the tags endpoint below was never matched.
    mailchimp_client.lists.get_list_member_tags(list_id, "a@shop.io")
    assert mailchimp_client.lists.get_list_member(list_id, "a@shop.io")["status"] == "subscribed"
    endpoint = "GET /lists/{list_id}/members/{subscriber_hash}"
    assert mailchimp_emulator.calls.count(endpoint, 500) == 2
    assert mailchimp_emulator.calls.count(endpoint, 200) == 1
    assert [c.fault for c in mailchimp_emulator.calls.calls(endpoint)] == ["500", "500", None]


def test_scripted_fault_method_filter(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.faults.script("/**", "500", method="PUT")
    assert mailchimp_client.ping.get()["health_status"]
    assert mailchimp_emulator.faults.to_json()["scripted"][0]["remaining"] == 1


def test_faults_come_before_authentication(mailchimp_emulator):
    mailchimp_emulator.faults.script("/ping", "503-html")
    answer = requests.get(mailchimp_emulator.url + "/ping", timeout=5)
    assert answer.status_code == 503


def _outcomes(emulator, client, n):
    for _ in range(n):
        try:
            client.ping.get()
        except ApiClientError:
            pass
    return [c.outcome for c in emulator.calls.calls()]


def test_random_faults_replay_with_the_same_seed(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.faults.set_random(0.5, seed=7, kinds=["500", "429"])
    first = _outcomes(mailchimp_emulator, mailchimp_client, 30)
    mailchimp_emulator.reset()
    mailchimp_emulator.faults.set_random(0.5, seed=7, kinds=["500", "429"])
    second = _outcomes(mailchimp_emulator, mailchimp_client, 30)
    assert first == second
    assert set(first) == {"200", "500", "429"}


def test_fault_plan_rejects_nonsense():
    plan = FaultPlan()
    with pytest.raises(ValueError, match="rate"):
        plan.set_random(1.5)
    with pytest.raises(ValueError, match="'teapot' is not a valid FaultKind"):
        plan.script("/ping", "teapot")
    with pytest.raises(ValueError, match="times"):
        plan.script("/ping", "500", times=0)


def _hammer(emulator, n):
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        status = requests.get(
            emulator.url + "/ping", auth=("u", emulator.api_key), timeout=5
        ).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_more_than_ten_in_flight_get_429(mailchimp_emulator):
    mailchimp_emulator.service_delay = 0.3
    statuses = _hammer(mailchimp_emulator, 14)
    assert statuses.count(429) >= 1
    assert statuses.count(200) <= 10
    assert mailchimp_emulator.calls.peak_in_flight > 10
    problem = [c for c in mailchimp_emulator.calls.calls() if c.outcome == "429"]
    assert problem
    assert all(c.fault is None for c in problem)


def test_nine_in_flight_are_fine(mailchimp_emulator):
    mailchimp_emulator.service_delay = 0.2
    assert _hammer(mailchimp_emulator, 9) == [200] * 9
    assert mailchimp_emulator.calls.peak_in_flight == 9


def test_the_limit_is_per_api_key(mailchimp_emulator):
    mailchimp_emulator.max_connections = 1
    mailchimp_emulator.service_delay = 0.2
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def call(key: str) -> None:
        barrier.wait()
        answer = requests.get(mailchimp_emulator.url + "/ping", auth=("u", key), timeout=5)
        statuses[key] = answer.status_code

    threads = [
        threading.Thread(target=call, args=(k,)) for k in (mailchimp_emulator.api_key, "other-us1")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == {mailchimp_emulator.api_key: 200, "other-us1": 401}
