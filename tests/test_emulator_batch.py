"""Batch subscribe (``POST /lists/{id}``) through the official client."""

from __future__ import annotations

import json

import pytest
from mailchimp_marketing.api_client import ApiClientError

ERROR_KEYS = {"email_address", "error", "error_code", "field", "field_message"}


def batch(client, list_id, members, **options):
    body = {"members": members}
    body.update({k: v for k, v in options.items() if k in ("update_existing", "sync_tags")})
    params = {k: v for k, v in options.items() if k.startswith("skip_")}
    return client.lists.batch_list_members(list_id, body, **params)


def test_creates_new_members(mailchimp_emulator, mailchimp_client):
    result = batch(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [
            {"email_address": "a@shop.io", "status": "subscribed", "merge_fields": {"FNAME": "A"}},
            {"email_address": "b@shop.io", "status": "pending", "tags": ["vip"]},
        ],
    )
    assert result["total_created"] == 2
    assert result["total_updated"] == 0
    assert result["error_count"] == 0
    assert result["errors"] == []
    assert [m["email_address"] for m in result["new_members"]] == ["a@shop.io", "b@shop.io"]
    b = mailchimp_emulator.audience.member("b@shop.io")
    assert b.status == "pending"
    assert list(b.tags) == ["vip"]


def test_existing_member_without_update_existing(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("a@shop.io")
    result = batch(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [{"email_address": "a@shop.io", "status": "subscribed", "merge_fields": {"FNAME": "X"}}],
    )
    assert result["error_count"] == 1
    (error,) = result["errors"]
    assert set(error) == ERROR_KEYS
    assert error["error_code"] == "ERROR_CONTACT_EXISTS"
    assert "update_existing" in error["error"]
    assert mailchimp_emulator.audience.member("a@shop.io").merge_fields == {}


def test_update_existing_changes_status_and_fields(mailchimp_emulator, mailchimp_client):
    # The trap the spec warns about: status is required and is applied.
    mailchimp_emulator.audience.seed_member("a@shop.io", status="subscribed")
    result = batch(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [{"email_address": "a@shop.io", "status": "unsubscribed", "merge_fields": {"FNAME": "X"}}],
        update_existing=True,
    )
    assert result["total_updated"] == 1
    assert result["updated_members"][0]["status"] == "unsubscribed"
    member = mailchimp_emulator.audience.member("a@shop.io")
    assert (member.status, member.merge_fields["FNAME"]) == ("unsubscribed", "X")


def test_per_member_errors_do_not_fail_the_call(mailchimp_emulator, mailchimp_client):
    audience = mailchimp_emulator.audience
    audience.seed_member("unsub@shop.io", status="unsubscribed")
    audience.seed_member("gone@shop.io")
    audience.forget("gone@shop.io")
    result = batch(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [
            {"email_address": "unsub@shop.io", "status": "subscribed"},
            {"email_address": "gone@shop.io", "status": "subscribed"},
            {"email_address": "bad-address", "status": "subscribed"},
            {"email_address": "m@shop.io", "status": "subscribed", "merge_fields": {"FNAME": []}},
            {"email_address": "ok@shop.io", "status": "subscribed", "merge_fields": {"NOPE": 1}},
        ],
        update_existing=True,
    )
    assert result["total_created"] == 1
    # An unknown tag is dropped, not refused: the member is created without it.
    assert result["new_members"][0]["email_address"] == "ok@shop.io"
    assert "NOPE" not in result["new_members"][0]["merge_fields"]
    assert result["error_count"] == 4
    errors = {e["email_address"]: e for e in result["errors"]}
    assert all(e["error_code"] == "ERROR_GENERIC" for e in errors.values())
    assert "compliance state" in errors["unsub@shop.io"]["error"]
    assert "permanently deleted" in errors["gone@shop.io"]["error"]
    assert errors["bad-address"]["error"] == "Please provide a valid email address."
    assert errors["m@shop.io"]["field"] == "FNAME"
    assert errors["m@shop.io"]["field_message"]
    assert audience.member("unsub@shop.io").status == "unsubscribed"


def test_more_than_500_members_is_400(mailchimp_emulator, mailchimp_client):
    members = [{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(501)]
    with pytest.raises(ApiClientError) as exc:
        batch(mailchimp_client, mailchimp_emulator.list_id, members)
    assert exc.value.status_code == 400
    assert json.loads(exc.value.text)["errors"][0]["field"] == "members"
    assert mailchimp_emulator.audience.members() == []


def test_exactly_500_members_is_fine(mailchimp_emulator, mailchimp_client):
    members = [{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(500)]
    assert batch(mailchimp_client, mailchimp_emulator.list_id, members)["total_created"] == 500


def test_status_is_required_per_member(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        batch(
            mailchimp_client,
            mailchimp_emulator.list_id,
            [
                {"email_address": "a@shop.io", "status": "subscribed"},
                {"email_address": "b@shop.io", "status_if_new": "subscribed"},
            ],
        )
    assert exc.value.status_code == 400
    assert json.loads(exc.value.text)["errors"] == [
        {"field": "members.1.status", "message": "Required property status is missing"}
    ]


def test_skip_merge_validation_sent_as_python_true(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "PLAN", "name": "Plan", "type": "text", "required": True}
    )
    members = [{"email_address": "a@shop.io", "status": "subscribed"}]
    refused = batch(mailchimp_client, list_id, members)
    assert refused["errors"][0]["field"] == "PLAN"
    # The client turns True into "True" in the query string.
    accepted = batch(mailchimp_client, list_id, members, skip_merge_validation=True)
    assert accepted["total_created"] == 1
    assert mailchimp_emulator.calls.calls()[-1].path.endswith(list_id)


def test_duplicates_in_one_request(mailchimp_emulator, mailchimp_client):
    members = [
        {"email_address": "d@shop.io", "status": "subscribed"},
        {"email_address": "D@shop.io", "status": "unsubscribed"},
    ]
    result = batch(mailchimp_client, mailchimp_emulator.list_id, members)
    assert (result["total_created"], result["error_count"]) == (1, 1)
    mailchimp_emulator.reset()
    result = batch(mailchimp_client, mailchimp_emulator.list_id, members, skip_duplicate_check=True)
    assert (result["total_created"], result["error_count"]) == (1, 0)
    assert mailchimp_emulator.audience.member("d@shop.io").status == "subscribed"


def test_sync_tags_replaces_tags_of_existing(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("a@shop.io", tags=["old", "keep"])
    member = {"email_address": "a@shop.io", "status": "subscribed", "tags": ["keep", "new"]}
    batch(mailchimp_client, mailchimp_emulator.list_id, [member], update_existing=True)
    assert list(mailchimp_emulator.audience.member("a@shop.io").tags) == ["old", "keep"]
    batch(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [member],
        update_existing=True,
        sync_tags=True,
    )
    assert list(mailchimp_emulator.audience.member("a@shop.io").tags) == ["keep", "new"]


def test_unknown_list(mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.batch_list_members("nope", {"members": []})
    assert exc.value.status_code == 404
