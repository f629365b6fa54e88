"""``/batches`` (async bulk) through the official client; downloads with ``requests``."""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import FaultKind, client_for
from sync.emulator.batches import MAX_PENDING, RESULTS_PER_FILE
from tests.support.mailchimp_api import BATCH_KEYS

STATES = ["pending", "preprocessing", "started", "finalizing", "finished"]
START = "POST /batches"
POLL = "GET /batches/{batch_id}"
DOWNLOAD = "GET /batch-results/{batch_id}.tar.gz"


def put(list_id: str, email: str, op_id: str | None = None, **body: Any) -> dict[str, Any]:
    """A ``PUT …/members/{hash}`` operation, its body as the JSON string Mailchimp wants."""
    op = {
        "method": "PUT",
        "path": f"/lists/{list_id}/members/{subscriber_hash(email)}",
        "body": json.dumps({"email_address": email, "status_if_new": "subscribed", **body}),
    }
    if op_id is not None:
        op["operation_id"] = op_id
    return op


def finish(client: Any, batch_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll like a client would until the job is finished."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.batches.status(batch_id)
        if status["status"] == "finished":
            return status
        assert time.monotonic() < deadline, f"batch still {status['status']}"
        time.sleep(0.01)


def download(url: str) -> requests.Response:
    # No key: the URL is pre-signed, as Mailchimp's S3 links are.
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return answer


def results(url: str) -> dict[str, dict[str, Any]]:
    """operation_id → entry, read straight from the tar (not through the sink's parser)."""
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(download(url).content), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                found.update({e["operation_id"]: e for e in json.loads(handle.read())})
    return found


def run(client: Any, operations: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    started = client.batches.start({"operations": operations})
    status = finish(client, started["id"])
    return status, results(status["response_body_url"])


def test_start_answers_a_pending_job_that_finishes(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.hold_batches = True
    started = mailchimp_client.batches.start(
        {"operations": [put(list_id, f"m{i}@shop.io", str(i)) for i in range(3)]}
    )
    assert set(started) == BATCH_KEYS
    assert started["status"] == "pending"
    assert started["total_operations"] == 3
    assert (started["finished_operations"], started["errored_operations"]) == (0, 0)
    assert started["completed_at"] == ""
    assert started["response_body_url"] == ""
    assert mailchimp_client.batches.status(started["id"])["status"] == "pending"
    assert mailchimp_emulator.audience.members() == []  # held: nothing ran

    mailchimp_emulator.hold_batches = False
    done = finish(mailchimp_client, started["id"])
    assert done["finished_operations"] == 3
    assert done["errored_operations"] == 0
    assert done["completed_at"]
    assert done["response_body_url"].startswith(mailchimp_emulator.root_url)
    assert len(mailchimp_emulator.audience.members()) == 3


def test_a_poller_sees_every_state_in_order(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.batch_delay = 0.3
    list_id = mailchimp_emulator.list_id
    ops = [put(list_id, f"m{i}@shop.io", str(i)) for i in range(20)]
    batch_id = mailchimp_client.batches.start({"operations": ops})["id"]
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] != "finished":
        seen.append(mailchimp_client.batches.status(batch_id))
        time.sleep(0.01)
    states = [s["status"] for s in seen]
    assert states[0] == "pending"
    assert "started" in states
    assert states == sorted(states, key=STATES.index)  # never backwards
    progress = [s["finished_operations"] for s in seen]
    assert progress == sorted(progress)
    assert all(s["response_body_url"] == "" for s in seen[:-1])
    assert seen[-1]["finished_operations"] == 20


def test_archive_format(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    n = RESULTS_PER_FILE * 2 + 10
    ops = [put(list_id, f"m{i}@shop.io", f"op-{i}") for i in range(n)]
    ops.append({"method": "GET", "path": "/ping"})  # no operation_id
    status = finish(mailchimp_client, mailchimp_client.batches.start({"operations": ops})["id"])
    answer = download(status["response_body_url"])
    assert answer.content[:2] == b"\x1f\x8b"  # gzip
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        members = tar.getmembers()
        files = [m for m in members if m.isfile()]
        assert any(m.isdir() for m in members)
        assert all(m.name.endswith(".json") for m in files)
        chunks = [json.loads(tar.extractfile(m).read()) for m in files]  # type: ignore[union-attr]
    assert [len(c) for c in chunks] == [RESULTS_PER_FILE, RESULTS_PER_FILE, 11]
    entries = [e for chunk in chunks for e in chunk]
    assert all(set(e) == {"status_code", "operation_id", "response"} for e in entries)
    assert all(isinstance(e["response"], str) for e in entries)
    assert [e["operation_id"] for e in entries] == [f"op-{i}" for i in range(n)] + [None]
    first = json.loads(entries[0]["response"])
    assert (entries[0]["status_code"], first["email_address"]) == (200, "m0@shop.io")
    assert json.loads(entries[-1]["response"]) == {"health_status": "Everything's Chimpy!"}


def test_operations_follow_the_rules_of_direct_calls(mailchimp_emulator, mailchimp_client):
    emulator, list_id = mailchimp_emulator, mailchimp_emulator.list_id
    emulator.audience.seed_member("unsub@shop.io", status="unsubscribed")
    emulator.audience.seed_member("ok@shop.io", merge_fields={"FNAME": "Old"})
    emulator.audience.forget("gone@shop.io")
    # A bounced member cannot be archived: 405 (amro/gibbon#320).
    emulator.audience.seed_member("bounced@shop.io", status="cleaned")
    tags = {"tags": [{"name": "vip", "status": "active"}], "is_syncing": False}
    status, found = run(
        mailchimp_client,
        [
            put(list_id, "ok@shop.io", "ok", merge_fields={"FNAME": "New"}),
            # status_if_new does not resubscribe; status does, and is refused.
            put(list_id, "unsub@shop.io", "keep", merge_fields={"LNAME": "U"}),
            put(list_id, "unsub@shop.io", "resub", status="subscribed"),
            put(list_id, "gone@shop.io", "gone"),
            put(list_id, "new@shop.io", "tag", merge_fields={"FNAME": {"no": "dict"}}),
            {
                "method": "POST",
                "path": f"/lists/{list_id}/members/ok@shop.io/tags",
                "body": json.dumps(tags),
                "operation_id": "tags",
            },
            {
                "method": "PUT",
                "path": f"/lists/{list_id}/members/x",
                "body": "{",
                "operation_id": "json",
            },
            {
                "method": "DELETE",
                "path": f"/lists/{list_id}/members/bounced@shop.io",
                "operation_id": "405",
            },
            {"method": "GET", "path": "/lists/nope/members", "operation_id": "404"},
        ],
    )
    codes = {op_id: e["status_code"] for op_id, e in found.items()}
    assert codes == {
        "ok": 200,
        "keep": 200,
        "resub": 400,
        "gone": 400,
        "tag": 400,
        "tags": 204,
        "json": 400,
        "405": 405,
        "404": 404,
    }
    assert (status["finished_operations"], status["errored_operations"]) == (9, 6)
    problem = {k: json.loads(e["response"]) for k, e in found.items() if e["status_code"] >= 400}
    assert all({"title", "status", "detail", "instance"} <= set(p) for p in problem.values())
    # Inside a job a problem points at no request of its own.
    assert all(p["instance"] == "" for p in problem.values())
    assert problem["resub"]["title"] == "Member In Compliance State"
    assert problem["gone"]["title"] == "Forgotten Email Not Subscribed"
    assert problem["tag"]["detail"] == "Your merge fields were invalid."
    assert problem["tag"]["errors"][0]["field"] == "FNAME"
    assert problem["json"]["title"] == "JSON Parse Error"
    assert found["tags"]["response"] == ""  # a 204 has no body
    assert emulator.audience.member("ok@shop.io").merge_fields["FNAME"] == "New"
    assert list(emulator.audience.member("ok@shop.io").tags) == ["vip"]
    unsub = emulator.audience.member("unsub@shop.io")
    assert (unsub.status, unsub.merge_fields["LNAME"]) == ("unsubscribed", "U")
    assert emulator.audience.member("new@shop.io") is None


def test_same_answer_as_a_direct_call(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.mark_compliance("c@shop.io")
    with pytest.raises(ApiClientError) as direct:
        mailchimp_client.lists.set_list_member(
            list_id, "c@shop.io", {"email_address": "c@shop.io", "status_if_new": "subscribed"}
        )
    _, found = run(mailchimp_client, [put(list_id, "c@shop.io", "c")])
    expected = json.loads(direct.value.text)
    batched = json.loads(found["c"]["response"])
    assert found["c"]["status_code"] == direct.value.status_code == 400
    assert {k: v for k, v in batched.items() if k != "instance"} == {
        k: v for k, v in expected.items() if k != "instance"
    }


def test_params_and_inline_query_reach_the_handler(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    for i in range(3):
        mailchimp_emulator.audience.seed_member(
            f"m{i}@shop.io", status="pending" if i else "subscribed"
        )
    _, found = run(
        mailchimp_client,
        [
            {
                "method": "GET",
                "path": f"/lists/{list_id}/members",
                "params": {"status": "pending", "count": 1},
                "operation_id": "p",
            },
            {
                "method": "GET",
                "path": f"/lists/{list_id}/members?status=subscribed",
                "operation_id": "q",
            },
        ],
    )
    page = json.loads(found["p"]["response"])
    assert (page["total_items"], len(page["members"])) == (2, 1)
    assert json.loads(found["q"]["response"])["total_items"] == 1


def test_operations_are_not_calls_of_the_key(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    status, _ = run(mailchimp_client, [put(list_id, f"m{i}@shop.io", str(i)) for i in range(50)])
    calls = mailchimp_emulator.calls
    assert calls.count(START) == 1
    assert calls.count(POLL) >= 1
    assert calls.count(DOWNLOAD) == 1
    assert calls.count() == 2 + calls.count(POLL)
    assert calls.count("PUT /lists/{list_id}/members/{subscriber_hash}") == 0
    assert calls.operation_count() == 50
    assert calls.operation_count("PUT /lists/{list_id}/members/{subscriber_hash}", 200) == 50
    assert calls.operations_by_batch() == {status["id"]: 50}
    assert calls.peak_in_flight == 1
    over_http = requests.get(f"{mailchimp_emulator.root_url}/_emulator/calls", timeout=5).json()
    assert over_http["batch_operations"]["total"] == 50
    assert over_http["batch_operations"]["by_batch"] == {status["id"]: 50}
    job = requests.get(
        f"{mailchimp_emulator.root_url}/_emulator/batches/{status['id']}", timeout=5
    ).json()
    assert job["operations_executed"] == 50
    assert job["executed_by_outcome"] == {"200": 50}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "operations", id="missing"),
        pytest.param({"operations": {}}, "operations", id="not-array"),
        pytest.param({"operations": ["x"]}, "operations.0", id="not-object"),
        pytest.param({"operations": [{"path": "/ping"}]}, "operations.0.method", id="no-method"),
        pytest.param(
            {"operations": [{"method": "COPY", "path": "/ping"}]},
            "operations.0.method",
            id="bad-method",
        ),
        pytest.param({"operations": [{"method": "GET"}]}, "operations.0.path", id="no-path"),
        pytest.param(
            {"operations": [{"method": "GET", "path": "ping"}]}, "operations.0.path", id="relative"
        ),
        pytest.param(
            {"operations": [{"method": "PUT", "path": "/ping", "body": {"a": 1}}]},
            "operations.0.body",
            id="body-object",
        ),
        pytest.param(
            {"operations": [{"method": "GET", "path": "/ping", "operation_id": 7}]},
            "operations.0.operation_id",
            id="id-number",
        ),
        pytest.param(
            {"operations": [{"method": "GET", "path": "/ping", "params": {"a": [1]}}]},
            "operations.0.params",
            id="params",
        ),
    ],
)
def test_malformed_requests_are_refused_whole(mailchimp_emulator, mailchimp_client, body, field):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.start(body)
    assert exc.value.status_code == 400
    problem = json.loads(exc.value.text)
    assert problem["title"] == "Invalid Resource"
    assert field in [e["field"] for e in problem["errors"]]
    assert mailchimp_emulator.batches.batches() == []


def test_at_most_500_pending_batches(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.hold_batches = True
    # Straight into the queue for speed; the last ones over HTTP.
    for _ in range(MAX_PENDING - 1):
        mailchimp_emulator.batches.submit({"operations": []})
    last = mailchimp_client.batches.start({"operations": [{"method": "GET", "path": "/ping"}]})
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.start({"operations": []})
    assert exc.value.status_code == 429
    assert "500 pending batches" in json.loads(exc.value.text)["detail"]
    assert mailchimp_emulator.batches.pending_count() == MAX_PENDING
    # Once they are done, there is room again.
    mailchimp_emulator.hold_batches = False
    mailchimp_emulator.batches.wait_finished(last["id"])
    assert mailchimp_client.batches.start({"operations": []})["status"] == "pending"


def test_list_and_delete(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.hold_batches = True
    list_id = mailchimp_emulator.list_id
    ids = [
        mailchimp_client.batches.start({"operations": [put(list_id, f"m{i}@shop.io")]})["id"]
        for i in range(3)
    ]
    listed = mailchimp_client.batches.list(count=2, offset=1)
    assert listed["total_items"] == 3
    assert [b["id"] for b in listed["batches"]] == ids[1:]
    answer = mailchimp_client.batches.delete_request(ids[0])
    assert answer.status_code == 204
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.status(ids[0])
    assert exc.value.status_code == 404
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.delete_request(ids[0])
    assert exc.value.status_code == 404
    mailchimp_emulator.hold_batches = False
    for batch_id in ids[1:]:
        mailchimp_emulator.batches.wait_finished(batch_id)
    # The deleted job never ran.
    assert mailchimp_emulator.audience.member("m0@shop.io") is None
    assert mailchimp_emulator.audience.member("m1@shop.io") is not None


def test_download_is_presigned(mailchimp_emulator, mailchimp_client):
    status, _ = run(mailchimp_client, [{"method": "GET", "path": "/ping", "operation_id": "p"}])
    url = status["response_body_url"]
    forged = requests.get(url.split("?")[0] + "?signature=0000", timeout=5)
    assert forged.status_code == 403
    assert b"AccessDenied" in forged.content
    unknown = requests.get(url.replace(status["id"], "0000000000"), timeout=5)
    assert unknown.status_code == 404
    mailchimp_client.batches.delete_request(status["id"])
    assert requests.get(url, timeout=5).status_code == 404
    # Downloads are calls (outcome by status), but not of the key's slots.
    assert mailchimp_emulator.calls.count(DOWNLOAD) == 4
    assert mailchimp_emulator.calls.count(DOWNLOAD, outcome=200) == 1


def test_needs_the_key(mailchimp_emulator):
    client = client_for(mailchimp_emulator.url, "0000-us21", timeout=5)
    with pytest.raises(ApiClientError) as exc:
        client.batches.start({"operations": []})
    assert exc.value.status_code == 401


def test_not_served_when_switched_off(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.serve_batches = False
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.start({"operations": []})
    assert exc.value.status_code == 404
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.status("x")
    assert exc.value.status_code == 404


def test_faults_on_start_poll_and_download(mailchimp_emulator, mailchimp_client):
    faults = mailchimp_emulator.faults
    list_id = mailchimp_emulator.list_id
    faults.script("/batches", FaultKind.UNAVAILABLE_HTML, method="POST")
    faults.script("/batches/*", FaultKind.SERVER_ERROR, method="GET")
    faults.script("/batch-results/*", FaultKind.RESET)
    faults.script("/batch-results/*", FaultKind.FORBIDDEN_EMPTY)
    body = {"operations": [put(list_id, "a@shop.io", "a")]}
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.start(body)
    assert exc.value.status_code == 503
    assert mailchimp_emulator.batches.batches() == []  # the fault came first
    batch_id = mailchimp_client.batches.start(body)["id"]
    mailchimp_emulator.batches.wait_finished(batch_id)
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.batches.status(batch_id)
    assert exc.value.status_code == 500
    url = mailchimp_client.batches.status(batch_id)["response_body_url"]
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    assert requests.get(url, timeout=5).status_code == 403
    assert results(url)["a"]["status_code"] == 200
    outcomes = [(c.endpoint, c.outcome, c.fault) for c in mailchimp_emulator.calls.calls()]
    assert outcomes == [
        (START, "503", "503-html"),
        (START, "200", None),
        (POLL, "500", "500"),
        (POLL, "200", None),
        (DOWNLOAD, "reset", "reset"),
        (DOWNLOAD, "403", "403-empty"),
        (DOWNLOAD, "200", None),
    ]


def test_operations_meet_no_faults(mailchimp_emulator, mailchimp_client):
    # Faults model the infrastructure in front of the API, which a batch's
    # operations never cross.
    mailchimp_emulator.faults.script("/lists/**", FaultKind.SERVER_ERROR, times=5)
    _, found = run(mailchimp_client, [put(mailchimp_emulator.list_id, "a@shop.io", "a")])
    assert found["a"]["status_code"] == 200
    assert len(mailchimp_emulator.faults.to_json()["scripted"]) == 1


def test_reset_stops_a_running_job(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.batch_delay = 0.05  # ~50 ms pending, then ops spread over 50 ms
    list_id = mailchimp_emulator.list_id
    mailchimp_client.batches.start(
        {"operations": [put(list_id, f"m{i}@shop.io") for i in range(200)]}
    )
    while mailchimp_emulator.calls.operation_count() == 0:
        time.sleep(0.005)
    mailchimp_emulator.reset()
    time.sleep(0.15)
    assert mailchimp_emulator.audience.members() == []
    assert mailchimp_emulator.calls.operation_count() == 0
    assert mailchimp_emulator.batches.batches() == []


def test_settings_over_http(mailchimp_emulator):
    url = f"{mailchimp_emulator.root_url}/_emulator/settings"
    answer = requests.post(
        url, json={"batch_delay": 0.5, "hold_batches": True, "serve_batches": False}, timeout=5
    )
    assert answer.status_code == 200
    assert (mailchimp_emulator.batch_delay, mailchimp_emulator.hold_batches) == (0.5, True)
    assert mailchimp_emulator.serve_batches is False
    assert requests.post(url, json={"hold_batches": "no"}, timeout=5).status_code == 400
    mailchimp_emulator.reset()
    assert mailchimp_emulator.settings()["batch_delay"] == 0.0
    assert mailchimp_emulator.settings()["hold_batches"] is False
    assert mailchimp_emulator.settings()["serve_batches"] is True
