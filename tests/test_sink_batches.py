"""The bulk update path (``POST /batches``), with ``responses`` playing Mailchimp."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses

from sync.mailchimp.batches import BatchPolling, parse_batch_results
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.memory import MemoryLedger
from sync.mailchimp.push_plan import fingerprint, plan_pushes
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import JOB_SIZE, SinkConfig
from sync.records import DesiredMember
from tests.support.mailchimp_api import results_archive

KEY = "c0ffee00c0ffee00c0ffee00c0ffee00-us19"
BASE = "https://us19.api.mailchimp.com/3.0"
LIST = "L1"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class FakeBatches:
    """POST /batches, GET /batches/{id}, and the results archive."""

    def __init__(self, refuse: set[str]) -> None:
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.refuse = refuse

    def start(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        ops = json.loads(request.body or "{}")["operations"]
        job = f"b{len(self.jobs)}"
        self.jobs[job] = ops
        return 200, {}, json.dumps({"id": job, "status": "pending"})

    def status(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        job = str(request.url).rsplit("/", 1)[1]
        url = f"https://results.example/{job}.tar.gz"
        body = {"id": job, "status": "finished", "response_body_url": url}
        return 200, {}, json.dumps(body)

    def results(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        job = str(request.url).rsplit("/", 1)[1].split(".")[0]
        entries = []
        for op in self.jobs[job]:
            email = json.loads(op["body"])["email_address"]
            if email in self.refuse:
                problem = {"title": "Member In Compliance State", "status": 400, "detail": "no"}
                entries.append(
                    {
                        "operation_id": op["operation_id"],
                        "status_code": 400,
                        "response": json.dumps(problem),
                    }
                )
            else:
                entries.append(
                    {
                        "operation_id": op["operation_id"],
                        "status_code": 200,
                        "response": json.dumps({"email_address": email}),
                    }
                )
        return 200, {}, results_archive(entries)


@responses.activate
@pytest.mark.parametrize("job_size", [JOB_SIZE, 500])
def test_changed_existing_members_cost_three_calls_per_job(job_size: int) -> None:
    fake = FakeBatches(refuse={"m7@x.io"})
    responses.add_callback(
        responses.POST, f"{BASE}/batches", callback=fake.start, content_type="application/json"
    )
    responses.add_callback(
        responses.GET,
        re.compile(rf"{BASE}/batches/\w+"),
        callback=fake.status,
        content_type="application/json",
    )
    responses.add_callback(
        responses.GET, re.compile(r"https://results\.example/.*"), callback=fake.results
    )
    # The sink reads the audience's merge tags before it sends values.
    responses.add(
        responses.GET,
        f"{BASE}/lists/{LIST}/merge-fields",
        json={"merge_fields": [{"tag": "STATUS", "type": "text"}], "total_items": 1},
    )
    ledger = MemoryLedger()
    n = 1200
    for i in range(n):
        ledger.record_accepted(f"m{i}@x.io", {"STATUS": "old"}, None, T0)
    client = make_client(MailchimpSettings(KEY, LIST, timeout=5))
    caller = Caller(client, LIST, RetryPolicy(sleep=lambda _: None))
    polling = BatchPolling(first_wait=0, sleep=lambda _: None)
    config = SinkConfig(polling=polling, job_size=job_size)
    sink = MailchimpSink(caller, ledger, config, clock=lambda: T0)
    summary = sink.push([DesiredMember(f"m{i}@x.io", {"STATUS": "new"}) for i in range(n)])
    jobs = math.ceil(n / job_size)
    assert sorted(len(ops) for ops in fake.jobs.values()) == sorted(
        min(job_size, n - job_size * j) for j in range(jobs)
    )
    # The merge tags once, then start + one poll + results download, per job.
    assert len(responses.calls) == 1 + 3 * jobs
    assert summary.calls == {"success": 1 + 3 * jobs}
    assert summary.pushed == n - 1
    (failure,) = summary.failures
    assert failure.email == "m7@x.io"
    assert failure.permanent
    first = json.loads(fake.jobs["b0"][0]["body"])
    assert first == {
        "email_address": first["email_address"],
        "status_if_new": "subscribed",
        "merge_fields": {"STATUS": "new"},
    }
    assert fake.jobs["b0"][0]["method"] == "PUT"
    assert ledger.member_states(["m8@x.io"])["m8@x.io"].fields == {"STATUS": "new"}
    assert ledger.member_states(["m7@x.io"])["m7@x.io"].fields == {"STATUS": "old"}
    # The archive URL is pre-signed: the key is never sent there.
    download = next(c for c in responses.calls if "results.example" in (c.request.url or ""))
    assert "Authorization" not in download.request.headers


def test_parse_batch_results_reads_every_file() -> None:
    data = results_archive(
        [
            {"operation_id": "a", "status_code": 204, "response": ""},
            {"operation_id": "b", "status_code": 404, "response": {"title": "x"}},
        ]
    )
    got = parse_batch_results(data)
    assert [(r.operation_id, r.status_code) for r in got] == [("a", 204), ("b", 404)]


def test_plan_diff_rules() -> None:
    ledger = MemoryLedger()
    ledger.record_accepted("a@x.io", {"N": 0, "S": "x", "B": False}, frozenset({"vip"}), T0)
    want = DesiredMember(
        "A@x.io",
        {"N": False, "S": "x", "B": False, "E": ""},
        tags=frozenset({"new"}),
        managed_tags=frozenset({"vip", "new", "old"}),
    )
    plan = plan_pushes([want], ledger, T0)
    (p,) = plan.pushes
    assert dict(p.fields) == {"N": False, "E": ""}  # False is not 0; "" clears
    assert p.tags_add == {"new"}
    assert p.tags_remove == {"vip"}
    assert p.fingerprint == fingerprint(want)
    assert plan_pushes([want, want], ledger, T0).considered == 1


def test_connection_limit_is_enforced() -> None:
    from sync.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="10 simultaneous"):
        SinkConfig(max_connections=10)
    with pytest.raises(ConfigurationError):
        SinkConfig(batch_size=501)
    with pytest.raises(ConfigurationError):
        SinkConfig(status_if_new="cleaned")
