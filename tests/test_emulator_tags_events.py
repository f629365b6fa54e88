"""Member tags and events through the official client."""

from __future__ import annotations

import json

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash


@pytest.fixture
def ann(mailchimp_emulator):
    mailchimp_emulator.audience.seed_member("ann@shop.io", tags=["old"])
    return subscriber_hash("ann@shop.io")


def test_tags_answer_204_response_object(mailchimp_emulator, mailchimp_client, ann):
    answer = mailchimp_client.lists.update_list_member_tags(
        mailchimp_emulator.list_id,
        ann,
        {
            "tags": [{"name": "buyer", "status": "active"}, {"name": "old", "status": "inactive"}],
            "is_syncing": True,
        },
    )
    # A 204 comes back as the raw requests.Response.
    assert isinstance(answer, requests.Response)
    assert answer.status_code == 204
    listed = mailchimp_client.lists.get_list_member_tags(mailchimp_emulator.list_id, ann)
    assert [t["name"] for t in listed["tags"]] == ["buyer"]
    assert listed["total_items"] == 1


def test_inactive_unknown_tag_is_a_no_op(mailchimp_emulator, mailchimp_client, ann):
    mailchimp_client.lists.update_list_member_tags(
        mailchimp_emulator.list_id, ann, {"tags": [{"name": "never", "status": "inactive"}]}
    )
    assert list(mailchimp_emulator.audience.member(ann).tags) == ["old"]


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param([{"name": "x", "status": "on"}], id="bad-status"),
        pytest.param([{"status": "active"}], id="no-name"),
        pytest.param("x", id="not-a-list"),
    ],
)
def test_invalid_tags_are_400(mailchimp_emulator, mailchimp_client, ann, tags):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.update_list_member_tags(
            mailchimp_emulator.list_id, ann, {"tags": tags}
        )
    assert exc.value.status_code == 400
    assert json.loads(exc.value.text)["errors"]


def test_tags_of_unknown_member_404(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.update_list_member_tags(
            mailchimp_emulator.list_id,
            subscriber_hash("x@shop.io"),
            {"tags": [{"name": "a", "status": "active"}]},
        )
    assert exc.value.status_code == 404


def test_events_are_recorded_in_order_with_duplicates(mailchimp_emulator, mailchimp_client, ann):
    list_id = mailchimp_emulator.list_id
    first = {
        "name": "became_buyer",
        "properties": {"plan": "pro"},
        "occurred_at": "2024-05-01T12:00:00+00:00",
        "is_syncing": False,
    }
    answer = mailchimp_client.lists.create_list_member_event(list_id, ann, first)
    assert answer.status_code == 204
    mailchimp_client.lists.create_list_member_event(list_id, ann, {"name": "went-quiet"})
    mailchimp_client.lists.create_list_member_event(list_id, ann, first)
    events = mailchimp_emulator.audience.events("ann@shop.io")
    assert [e.name for e in events] == ["became_buyer", "went-quiet", "became_buyer"]
    assert events[0].properties == {"plan": "pro"}
    assert events[0].occurred_at == "2024-05-01T12:00:00+00:00"
    listed = mailchimp_client.lists.get_list_member_events(list_id, ann)
    assert listed["total_items"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": "x"}, "name", id="name-too-short"),
        pytest.param({"name": "a" * 31}, "name", id="name-too-long"),
        pytest.param({"name": "has space"}, "name", id="name-bad-char"),
        pytest.param({}, "name", id="name-missing"),
        pytest.param({"name": "ok", "properties": {"n": 3}}, "properties.n", id="non-string"),
        pytest.param({"name": "ok", "occurred_at": "yesterday"}, "occurred_at", id="bad-instant"),
        pytest.param({"name": "ok", "is_syncing": "yes"}, "is_syncing", id="bad-syncing"),
    ],
)
def test_invalid_events_are_400(mailchimp_emulator, mailchimp_client, ann, body, field):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.create_list_member_event(mailchimp_emulator.list_id, ann, body)
    assert exc.value.status_code == 400
    assert [e["field"] for e in json.loads(exc.value.text)["errors"]] == [field]
    assert mailchimp_emulator.audience.events() == []


def test_event_names_at_the_limits(mailchimp_emulator, mailchimp_client, ann):
    for name in ("ab", "A" * 30, "a_b-C9"):
        mailchimp_client.lists.create_list_member_event(
            mailchimp_emulator.list_id, ann, {"name": name}
        )
    assert len(mailchimp_emulator.audience.events()) == 3


def test_event_for_unknown_member_404(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.create_list_member_event(
            mailchimp_emulator.list_id, subscriber_hash("x@shop.io"), {"name": "hello"}
        )
    assert exc.value.status_code == 404
