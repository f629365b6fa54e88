"""Merge field definitions through the official client."""

from __future__ import annotations

import json

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator.mergefields import MAX_MERGE_FIELDS

# A new audience's fields, as recorded answers of a real one show them
# (grouparoo/grouparoo, plugins/@grouparoo/mailchimp/__tests__/fixtures).
DEFAULT_TAGS = ["FNAME", "LNAME", "ADDRESS", "PHONE"]


def test_a_new_audience_has_the_default_fields(mailchimp_emulator, mailchimp_client):
    found = mailchimp_client.lists.get_list_merge_fields(mailchimp_emulator.list_id)
    assert [f["tag"] for f in found["merge_fields"]] == DEFAULT_TAGS
    assert found["total_items"] == 4
    fname = found["merge_fields"][0]
    assert (fname["type"], fname["required"], fname["list_id"]) == (
        "text",
        False,
        mailchimp_emulator.list_id,
    )


def test_pagination(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    page = mailchimp_client.lists.get_list_merge_fields(list_id, count=2, offset=2)
    assert [f["tag"] for f in page["merge_fields"]] == ["ADDRESS", "PHONE"]
    assert page["total_items"] == 4


def test_create_and_get_one(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    created = mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "status_1", "name": "Status", "type": "text"}
    )
    # Mailchimp upper-cases the tag.
    assert created["tag"] == "STATUS_1"
    assert created["merge_id"] == 5
    again = mailchimp_client.lists.get_list_merge_field(list_id, "5")
    assert again["tag"] == "STATUS_1"
    auto = mailchimp_client.lists.add_list_merge_field(list_id, {"name": "N", "type": "number"})
    assert auto["tag"] == "MMERGE6"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"tag": "ELEVENCHARS", "name": "x", "type": "text"}, "tag", id="tag-too-long"),
        pytest.param({"tag": "BAD-TAG", "name": "x", "type": "text"}, "tag", id="tag-bad-char"),
        pytest.param({"tag": "OK", "name": "x", "type": "colour"}, "type", id="bad-type"),
        pytest.param({"tag": "OK", "type": "text"}, "name", id="no-name"),
    ],
)
def test_invalid_definitions(mailchimp_emulator, mailchimp_client, body, field):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.add_list_merge_field(mailchimp_emulator.list_id, body)
    assert exc.value.status_code == 400
    assert [e["field"] for e in json.loads(exc.value.text)["errors"]] == [field]


def test_duplicate_tag(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.add_list_merge_field(
            mailchimp_emulator.list_id, {"tag": "FNAME", "name": "Again", "type": "text"}
        )
    assert exc.value.status_code == 400
    assert "already exists" in json.loads(exc.value.text)["detail"]


def test_at_most_thirty_fields(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    for i in range(MAX_MERGE_FIELDS - len(DEFAULT_TAGS)):
        mailchimp_client.lists.add_list_merge_field(
            list_id, {"tag": f"F{i}", "name": f"F{i}", "type": "text"}
        )
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.add_list_merge_field(
            list_id, {"tag": "ONEMORE", "name": "x", "type": "text"}
        )
    assert exc.value.status_code == 400
    assert mailchimp_client.lists.get_list_merge_fields(list_id)["total_items"] == 30


def test_reset_restores_defaults(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_client.lists.add_list_merge_field(list_id, {"tag": "X", "name": "X", "type": "text"})
    mailchimp_emulator.reset()
    found = mailchimp_client.lists.get_list_merge_fields(list_id)
    assert [f["tag"] for f in found["merge_fields"]] == DEFAULT_TAGS
