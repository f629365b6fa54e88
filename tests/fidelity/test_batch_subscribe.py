"""``POST /lists/{list_id}`` (batch subscribe, ``lists.batch_list_members``).

Sources: Mailchimp's reference for "Batch subscribe or unsubscribe" as the
official client documents it (mailchimp/mailchimp-marketing-python,
mailchimp_marketing/api/lists_api.py: body ``members[]``, ``update_existing``;
query ``skip_merge_validation``, ``skip_duplicate_check``); the dropped tag of
grouparoo/grouparoo's recorded answers; the required-field refusal of
drewm/mailchimp-api#298 (which this call reports per member, not whole).
"""

from __future__ import annotations

from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator import Emulator
from tests.support.mailchimp_api import problem_of

ANSWER_KEYS = {
    "new_members",
    "updated_members",
    "errors",
    "total_created",
    "total_updated",
    "error_count",
    "_links",
}
ERROR_KEYS = {"email_address", "error", "error_code", "field", "field_message"}


def subscribe(client: Any, list_id: str, members: list[dict[str, Any]], **query: Any) -> Any:
    body = {"members": members, "update_existing": query.pop("update_existing", False)}
    return client.lists.batch_list_members(list_id, body, **query)


def test_answer_shape_and_per_member_errors(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    mailchimp_emulator.audience.seed_member("old@x.io")
    answer = subscribe(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [
            {"email_address": "new@x.io", "status": "subscribed"},
            {"email_address": "old@x.io", "status": "subscribed"},
            {"email_address": "AAAAA", "status": "subscribed"},
        ],
    )
    assert set(answer) == ANSWER_KEYS
    assert (answer["total_created"], answer["total_updated"], answer["error_count"]) == (1, 0, 2)
    errors = {e["email_address"]: e for e in answer["errors"]}
    assert all(set(e) == ERROR_KEYS for e in errors.values())
    assert errors["old@x.io"]["error_code"] == "ERROR_CONTACT_EXISTS"
    assert errors["AAAAA"]["error_code"] == "ERROR_GENERIC"
    assert errors["AAAAA"]["error"] == "Please provide a valid email address."


def test_a_tag_the_audience_lacks_is_dropped(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 1: created, no error, the tag absent from the returned member."""
    answer = subscribe(
        mailchimp_client,
        mailchimp_emulator.list_id,
        [{"email_address": "n@x.io", "status": "subscribed", "merge_fields": {"NOPE": "x"}}],
    )
    assert answer["error_count"] == 0
    (created,) = answer["new_members"]
    assert "NOPE" not in created["merge_fields"]


@pytest.mark.parametrize("skip", [False, True], ids=["enforced", "skipped"])
def test_required_fields_on_update_existing(
    mailchimp_emulator: Emulator, mailchimp_client: Any, skip: bool
) -> None:
    """Row 2: an existing member lacking a required value is refused (per
    member) unless skip_merge_validation is true."""
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("old@x.io")
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "PLAN", "name": "Plan", "type": "text", "required": True}
    )
    query = {"skip_merge_validation": "true"} if skip else {}
    answer = subscribe(
        mailchimp_client,
        list_id,
        [{"email_address": "old@x.io", "status": "subscribed", "merge_fields": {"FNAME": "O"}}],
        update_existing=True,
        **query,
    )
    if skip:
        assert answer["total_updated"] == 1
    else:
        (error,) = answer["errors"]
        assert (error["error"], error["field"], error["field_message"]) == (
            "Your merge fields were invalid.",
            "PLAN",
            "Please enter a value",
        )


def test_one_value_that_is_not_json_spoils_the_whole_call(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 6: why the sink must never let a NaN into a 500-member body."""
    members = [
        {"email_address": f"m{i}@x.io", "status": "subscribed", "merge_fields": {"FNAME": "x"}}
        for i in range(3)
    ]
    members[1]["merge_fields"] = {"FNAME": float("inf")}
    with pytest.raises(ApiClientError) as exc:
        subscribe(mailchimp_client, mailchimp_emulator.list_id, members)
    assert problem_of(exc)["title"] == "JSON Parse Error"
    assert mailchimp_emulator.audience.members() == []
