"""``POST/GET …/members/{hash}/tags`` and ``…/events``.

Sources: Mailchimp's references "Add or remove member tags" and "Add event"
as the official client documents them (mailchimp/mailchimp-marketing-python,
mailchimp_marketing/api/lists_api.py); the 204 answers with an empty body
recorded in grouparoo/grouparoo's fixtures (tags); event names of 2 to 30
characters (the staff answer in mailchimp/Mailchimp-SDK-iOS#70). The limit
on event properties is NOT documented: the same staff answer knew of no
limit. The emulator enforces 1,000 characters of names and values together,
the project's assumption (row 3 of issue 12), so the sink is tested against
the stricter case; the wording of the refusal is assumed too.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from tests.support.mailchimp_api import problem_of


@pytest.fixture
def ann(mailchimp_emulator: Emulator) -> str:
    mailchimp_emulator.audience.seed_member("ann@x.io")
    return subscriber_hash("ann@x.io")


def test_tags_answer_204_without_body(
    mailchimp_emulator: Emulator, mailchimp_client: Any, ann: str
) -> None:
    list_id = mailchimp_emulator.list_id
    answer = mailchimp_client.lists.update_list_member_tags(
        list_id, ann, {"tags": [{"name": "vip", "status": "active"}], "is_syncing": False}
    )
    # The official client returns the bare Response of a 204.
    assert isinstance(answer, requests.Response)
    assert (answer.status_code, answer.text) == (204, "")
    listed = mailchimp_client.lists.get_list_member_tags(list_id, ann)
    assert {"tags", "total_items", "_links"} <= set(listed)
    assert [t["name"] for t in listed["tags"]] == ["vip"]
    assert {"id", "name", "date_added"} <= set(listed["tags"][0])


def test_events_answer_204_and_are_listed(
    mailchimp_emulator: Emulator, mailchimp_client: Any, ann: str
) -> None:
    list_id = mailchimp_emulator.list_id
    body = {
        "name": "credit",
        "properties": {"amount": "10"},
        "occurred_at": "2026-03-01T12:00:00+00:00",
        "is_syncing": False,
    }
    answer = mailchimp_client.lists.create_list_member_event(list_id, ann, body)
    assert isinstance(answer, requests.Response)
    assert answer.status_code == 204
    listed = mailchimp_client.lists.get_list_member_events(list_id, ann)
    assert {"events", "total_items", "_links"} <= set(listed)
    (event,) = listed["events"]
    assert (event["name"], event["properties"]) == ("credit", {"amount": "10"})
    assert event["occurred_at"].startswith("2026-03-01T12:00:00")


@pytest.mark.parametrize(("size", "accepted"), [(1000, True), (1001, False)])
def test_event_properties_are_bounded(
    mailchimp_emulator: Emulator, mailchimp_client: Any, ann: str, size: int, accepted: bool
) -> None:
    """Row 3 (assumed limit): names and values together, in characters."""
    body = {"name": "long_story", "properties": {"text": "x" * (size - len("text"))}}
    call = lambda: mailchimp_client.lists.create_list_member_event(  # noqa: E731
        mailchimp_emulator.list_id, ann, body
    )
    if accepted:
        assert call().status_code == 204
        return
    with pytest.raises(ApiClientError) as exc:
        call()
    problem = problem_of(exc)
    assert (problem["title"], problem["status"]) == ("Invalid Resource", 400)
    assert problem["errors"][0]["field"] == "properties"
    assert mailchimp_emulator.audience.events("ann@x.io") == []
