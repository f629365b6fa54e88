"""``POST /batches``, ``GET /batches/{id}`` and the results archive.

Sources: Mailchimp's "Batch operations" guide and reference, as the official
client documents them (mailchimp/mailchimp-marketing-python,
mailchimp_marketing/api/batches_api.py: ``start``, ``status``, ``list``); the
job shape recorded in mailchimp/APIv3-examples#26 (``status: "pending"``,
``completed_at`` and ``response_body_url`` empty strings until finished); an
error answer with an empty ``instance`` in drewm/mailchimp-api#132. That the
problems inside a results archive carry ``instance: ""`` is the assumption of
issue 12 (no recorded archive was found): see docs/emulator.md.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from sync.mailchimp.batches import parse_batch_results
from tests.support.mailchimp_api import BATCH_KEYS


def test_a_job_its_states_and_its_results(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("old@x.io")
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "PLAN", "name": "Plan", "type": "text", "required": True}
    )
    path = f"/lists/{list_id}/members/{subscriber_hash('old@x.io')}"
    body = json.dumps({"email_address": "old@x.io", "merge_fields": {"FNAME": "O"}})
    mailchimp_emulator.hold_batches = True
    job = mailchimp_client.batches.start(
        {
            "operations": [
                {"method": "PUT", "path": path, "body": body, "operation_id": "plain"},
                {
                    "method": "PUT",
                    "path": path,
                    "params": {"skip_merge_validation": "true"},
                    "body": body,
                    "operation_id": "skipping",
                },
            ]
        }
    )
    assert set(job) == BATCH_KEYS
    assert (job["status"], job["completed_at"], job["response_body_url"]) == ("pending", "", "")
    mailchimp_emulator.hold_batches = False
    mailchimp_emulator.batches.wait_finished(job["id"])
    done = mailchimp_client.batches.status(job["id"])
    assert (done["status"], done["total_operations"], done["errored_operations"]) == (
        "finished",
        2,
        1,
    )
    archive = requests.get(done["response_body_url"], timeout=5)
    results = {r.operation_id: r for r in parse_batch_results(archive.content)}
    # Required fields are enforced inside jobs too; `params` is the query.
    assert (results["plain"].status_code, results["skipping"].status_code) == (400, 200)
    problem = json.loads(results["plain"].response)
    assert problem["detail"] == "Your merge fields were invalid."
    assert problem["instance"] == ""  # row 7
    member = json.loads(results["skipping"].response)
    assert member["merge_fields"]["FNAME"] == "O"


def test_a_started_job_reports_its_progress(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """``finished_operations`` grows while the job is ``started`` and counts
    the operations that failed too (MailChimp.Net's ``Core/Batch.cs``: "The
    number of completed operations. This includes operations that returned
    an error."): the pace ``BatchPolling.finish_in`` reads."""
    list_id = mailchimp_emulator.list_id
    operations = [
        {
            "method": "PUT",
            "path": f"/lists/{list_id}/members/{subscriber_hash(email)}",
            "body": json.dumps({"email_address": email, "status_if_new": "subscribed"}),
            "operation_id": email,
        }
        for email in ("a@x.io", "not-an-address", "c@x.io", "d@x.io")
    ]
    # Queued 0.4 s, then 0.1 s per operation.
    mailchimp_emulator.batch_delay = 0.4
    job = mailchimp_client.batches.start({"operations": operations})
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = mailchimp_client.batches.status(job["id"])
        seen.append((status["status"], status["finished_operations"]))
        if status["status"] == "finished":
            break
        time.sleep(0.02)
    assert seen[-1] == ("finished", 4)
    assert status["errored_operations"] == 1
    started = [done for state, done in seen if state == "started"]
    assert any(0 < done < 4 for done in started), seen
    assert [done for _, done in seen] == sorted(done for _, done in seen)
