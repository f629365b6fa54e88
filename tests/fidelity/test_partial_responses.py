"""Partial responses: ``fields`` and ``exclude_fields`` on any call.

Sources: Mailchimp's "API 3.0 overview" (kb.mailchimp.com, "Partial
Response": pass "a comma separated list of fields to include or exclude",
quoted in adrian7/mailchimp-api-v3's README); the official client's
docstrings (mailchimp/mailchimp-marketing-python, lists_api.py: "A
comma-separated list of fields to return. Reference parameters of
sub-objects with dot notation."), which also send a list of fields joined by
commas (``collection_formats['fields'] = 'csv'``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from sync.emulator.partial import parse_paths, partial_response
from sync.mailchimp.batches import parse_batch_results
from sync.mailchimp.client import batch_subscribe
from tests.support.mailchimp_api import problem_of, put_member


def test_fields_keeps_only_the_paths_asked_for(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    put_member(mailchimp_client, mailchimp_emulator.list_id, "a@x.io", status="subscribed",
               merge_fields={"FNAME": "Ann", "LNAME": "Lee"})  # fmt: skip
    member = mailchimp_client.lists.get_list_member(
        mailchimp_emulator.list_id,
        subscriber_hash("a@x.io"),
        fields=["email_address", "merge_fields.FNAME"],
    )
    # Dot notation reaches into a sub-object.
    assert member == {"email_address": "a@x.io", "merge_fields": {"FNAME": "Ann"}}


def test_exclude_fields_drops_the_paths_named(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    put_member(mailchimp_client, mailchimp_emulator.list_id, "a@x.io", status="subscribed",
               merge_fields={"FNAME": "Ann", "LNAME": "Lee"})  # fmt: skip
    whole = mailchimp_client.lists.get_list_member(
        mailchimp_emulator.list_id, subscriber_hash("a@x.io")
    )
    member = mailchimp_client.lists.get_list_member(
        mailchimp_emulator.list_id,
        subscriber_hash("a@x.io"),
        exclude_fields=["_links", "stats", "merge_fields.LNAME"],
    )
    assert set(whole) - set(member) == {"_links", "stats"}
    assert member["merge_fields"] == {
        k: v for k, v in whole["merge_fields"].items() if k != "LNAME"
    }


def test_a_path_through_a_list_applies_to_each_item(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    for email in ("a@x.io", "b@x.io"):
        put_member(mailchimp_client, list_id, email, status="subscribed")
    page = mailchimp_client.lists.get_list_members_info(
        list_id, fields=["members.email_address", "total_items"]
    )
    assert page == {
        "members": [{"email_address": "a@x.io"}, {"email_address": "b@x.io"}],
        "total_items": 2,
    }


def test_a_batch_subscribe_answers_only_the_fields_asked_for(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "old@x.io", status="subscribed")
    body = {
        "members": [
            {"email_address": "new@x.io", "status": "subscribed",
             "merge_fields": {"FNAME": "N", "NOSUCHTAG": "x"}},
            {"email_address": "old@x.io", "status": "subscribed"},
        ],
        "update_existing": False,
    }  # fmt: skip
    answer = batch_subscribe(
        mailchimp_client, list_id, body, {"fields": "new_members.email_address,errors"}
    )
    assert answer["new_members"] == [{"email_address": "new@x.io"}]
    # The refusals come whole: a path that stops at a field keeps all of it.
    (error,) = answer["errors"]
    assert error["email_address"] == "old@x.io"
    assert error["error_code"] == "ERROR_CONTACT_EXISTS"
    assert set(answer) == {"new_members", "errors"}


def test_an_error_comes_whole_whatever_fields_ask(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    with pytest.raises(ApiClientError) as missing:
        mailchimp_client.lists.get_list_member(
            mailchimp_emulator.list_id, subscriber_hash("nobody@x.io"), fields=["id"]
        )
    problem = problem_of(missing)
    assert (problem["status"], problem["title"]) == (404, "Resource Not Found")
    assert {"type", "detail", "instance"} <= set(problem)


def test_an_operation_of_a_job_takes_fields_in_its_params(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    path = f"/lists/{list_id}/members/{subscriber_hash('a@x.io')}"
    body = json.dumps({"email_address": "a@x.io", "status_if_new": "subscribed"})
    job = mailchimp_client.batches.start(
        {
            "operations": [
                {"method": "PUT", "path": path, "body": body, "operation_id": "cut",
                 "params": {"fields": "email_address,status"}},
            ]
        }
    )  # fmt: skip
    mailchimp_emulator.batches.wait_finished(job["id"])
    done = mailchimp_client.batches.status(job["id"])
    archive = requests.get(done["response_body_url"], timeout=5)
    (result,) = parse_batch_results(archive.content)
    assert json.loads(result.response) == {"email_address": "a@x.io", "status": "subscribed"}


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a,b.c", {"a": {}, "b": {"c": {}}}),
        (" a . b , a.c ", {"a": {"b": {}, "c": {}}}),
        # A field asked for whole stays whole, in either order.
        ("a,a.b", {"a": {}}),
        ("a.b,a", {"a": {}}),
        ("a..b,,", {}),
    ],
)
def test_the_paths_of_a_query(text: str, tree: dict[str, Any]) -> None:
    assert parse_paths(text) == tree


def test_fields_then_exclude_fields() -> None:
    body = {"a": {"b": 1, "c": 2}, "d": [{"e": 1, "f": 2}], "g": 3}
    both = partial_response(body, {"fields": "a,d", "exclude_fields": "a.c,d.f"})
    assert both == {"a": {"b": 1}, "d": [{"e": 1}]}
    # A name the answer lacks selects nothing (the emulator's rule: no source).
    assert partial_response(body, {"fields": "a.b,zzz"}) == {"a": {"b": 1}}
    # Without either, the answer is left as it is.
    assert partial_response(body, {}) is body
