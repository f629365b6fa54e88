"""``PUT /lists/{list_id}/members/{subscriber_hash}`` and ``GET …/members``.

Sources (see docs/emulator.md for the full table):
- grouparoo/grouparoo, plugins/@grouparoo/mailchimp/__tests__/fixtures/
  export-record.js: recorded answers of a real audience, among them a member
  created with a merge tag the audience does not have (``email_address``):
  200, and the tag is absent from the returned ``merge_fields``.
- drewm/mailchimp-api#298, brandonseydel/MailChimp.Net#312: required merge
  fields are enforced when an existing member is updated.
- mailchimp/mailchimp-marketing-python, mailchimp_marketing/api/lists_api.py:
  ``set_list_member`` and ``update_list_member`` accept ``skip_merge_validation``.
- mailchimp/mailchimp-client-lib-codegen#241: ``since_last_changed`` ignores
  the offset of the instant it is given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from tests.support.mailchimp_api import ERROR_TYPE, problem_of, put_member

#: Keys of a member as a recorded answer shows them (grouparoo fixture).
MEMBER_KEYS = {
    "id",
    "email_address",
    "unique_email_id",
    "web_id",
    "email_type",
    "status",
    "merge_fields",
    "stats",
    "ip_signup",
    "timestamp_signup",
    "ip_opt",
    "timestamp_opt",
    "member_rating",
    "last_changed",
    "language",
    "vip",
    "email_client",
    "location",
    "source",
    "tags_count",
    "tags",
    "list_id",
    "_links",
}


def test_put_creates_with_status_if_new_and_answers_a_member(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    member = put_member(
        mailchimp_client,
        mailchimp_emulator.list_id,
        "Caio@Grouparoo.com",
        status_if_new="subscribed",
        merge_fields={"FNAME": "Caio"},
    )
    assert MEMBER_KEYS <= set(member)
    assert member["id"] == subscriber_hash("caio@grouparoo.com")
    assert member["email_address"] == "Caio@Grouparoo.com"  # its case is kept
    assert member["status"] == "subscribed"
    assert member["list_id"] == mailchimp_emulator.list_id
    assert isinstance(member["tags"], list)
    assert member["merge_fields"] == {"FNAME": "Caio", "LNAME": "", "ADDRESS": "", "PHONE": ""}


def test_a_tag_the_audience_lacks_is_dropped_with_200(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 1 of issue 12: not an error; the tag is missing from the answer."""
    list_id = mailchimp_emulator.list_id
    # The recorded request sent `email_address` among the merge fields.
    created = put_member(
        mailchimp_client,
        list_id,
        "kq@grouparoo.com",
        status_if_new="subscribed",
        merge_fields={"email_address": "kq@grouparoo.com", "FNAME": "Caio"},
    )
    assert created["merge_fields"] == {"FNAME": "Caio", "LNAME": "", "ADDRESS": "", "PHONE": ""}
    updated = put_member(mailchimp_client, list_id, "kq@grouparoo.com", merge_fields={"LTV": 1})
    assert "LTV" not in updated["merge_fields"]
    assert mailchimp_emulator.audience.member("kq@grouparoo.com").merge_fields == {  # type: ignore[union-attr]
        "FNAME": "Caio"
    }


def test_a_deleted_field_is_dropped_and_its_values_are_gone(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    score = mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "SCORE", "name": "Score", "type": "number"}
    )
    put_member(
        mailchimp_client, list_id, "a@x.io", status_if_new="subscribed", merge_fields={"SCORE": 3}
    )
    mailchimp_client.lists.delete_list_merge_field(list_id, str(score["merge_id"]))
    again = put_member(mailchimp_client, list_id, "a@x.io", merge_fields={"SCORE": 4})
    assert "SCORE" not in again["merge_fields"]


def test_required_fields_are_enforced_on_update(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 2 of issue 12: the answer drewm/mailchimp-api#298 shows, to a PATCH
    and (brandonseydel/MailChimp.Net#312) to an add-or-update PUT."""
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "old@x.io", status_if_new="subscribed")
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "MMERGE4", "name": "Consent", "type": "text", "required": True}
    )
    for update in (
        lambda: put_member(mailchimp_client, list_id, "old@x.io", merge_fields={"FNAME": "O"}),
        lambda: mailchimp_client.lists.update_list_member(
            list_id, subscriber_hash("old@x.io"), {"merge_fields": {"FNAME": "O"}}
        ),
    ):
        with pytest.raises(ApiClientError) as exc:
            update()
        assert exc.value.status_code == 400
        problem = problem_of(exc)
        assert problem["type"] == ERROR_TYPE
        assert (problem["title"], problem["status"]) == ("Invalid Resource", 400)
        assert problem["detail"] == "Your merge fields were invalid."
        assert problem["errors"] == [{"field": "MMERGE4", "message": "Please enter a value"}]
        assert problem["instance"]


def test_skip_merge_validation_lets_updates_through(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "old@x.io", status_if_new="subscribed")
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "PLAN", "name": "Plan", "type": "text", "required": True}
    )
    member = put_member(
        mailchimp_client,
        list_id,
        "old@x.io",
        merge_fields={"FNAME": "O"},
        skip_merge_validation="true",
    )
    assert member["merge_fields"]["FNAME"] == "O"
    patched = mailchimp_client.lists.update_list_member(
        list_id,
        subscriber_hash("old@x.io"),
        {"merge_fields": {"LNAME": "P"}},
        skip_merge_validation="true",
    )
    assert patched["merge_fields"]["LNAME"] == "P"
    # A member that has a value for the required field needs no skipping.
    put_member(mailchimp_client, list_id, "old@x.io", merge_fields={"PLAN": "gold"})
    assert put_member(mailchimp_client, list_id, "old@x.io", merge_fields={"FNAME": "Q"})


def test_a_malformed_address_is_not_an_address(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 7: "Please provide a valid email address."; "… looks fake or
    invalid" is kept for addresses Mailchimp's heuristics distrust."""
    with pytest.raises(ApiClientError) as exc:
        put_member(
            mailchimp_client, mailchimp_emulator.list_id, "AAAAA", status_if_new="subscribed"
        )
    problem = problem_of(exc)
    assert (problem["title"], problem["status"]) == ("Invalid Resource", 400)
    assert problem["detail"] == "Please provide a valid email address."


@pytest.mark.parametrize("field", ["status_if_new", "status"])
def test_archived_cannot_be_requested(
    mailchimp_emulator: Emulator, mailchimp_client: Any, field: str
) -> None:
    """Row 7: the request enum is subscribed, unsubscribed, cleaned, pending,
    transactional; ``archived`` only shows on GET."""
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, "a@x.io", **{field: "archived"})
    problem = problem_of(exc)
    assert problem["status"] == 400
    assert problem["errors"][0]["field"] == "status"
    assert "archived" not in problem["errors"][0]["message"]


def test_a_body_that_is_not_json_is_refused_whole(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 6: the official client writes NaN as a bare token (``json.dumps``
    allows it); Mailchimp's glossary answers "JSON Parse Error"."""
    with pytest.raises(ApiClientError) as exc:
        put_member(
            mailchimp_client,
            mailchimp_emulator.list_id,
            "a@x.io",
            status_if_new="subscribed",
            merge_fields={"FNAME": float("nan")},
        )
    problem = problem_of(exc)
    assert problem["type"] == ERROR_TYPE
    assert (problem["title"], problem["status"]) == ("JSON Parse Error", 400)
    assert problem["detail"] == "We encountered an unspecified JSON parsing error."
    assert mailchimp_emulator.audience.member("a@x.io") is None


def test_since_last_changed_ignores_the_offset(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 7: the experiment of mailchimp-client-lib-codegen#241, replayed."""
    audience = mailchimp_emulator.audience
    for i, moment in enumerate(
        (
            datetime(2021, 9, 2, 10, 48, 33, tzinfo=UTC),
            datetime(2021, 9, 2, 15, 1, 50, tzinfo=UTC),
            datetime(2021, 9, 2, 15, 1, 52, tzinfo=UTC),
        )
    ):
        audience.seed_member(f"m{i}@x.io").last_changed = moment

    def changed_since(instant: str) -> list[str]:
        page = mailchimp_client.lists.get_list_members_info(
            mailchimp_emulator.list_id, since_last_changed=instant
        )
        assert {"members", "list_id", "total_items", "_links"} <= set(page)
        return sorted(m["last_changed"] for m in page["members"])

    in_utc = changed_since("2021-09-02T10:00:00+00:00")
    assert len(in_utc) == 3
    # 10:00 at UTC-2 is 12:00 UTC, yet Mailchimp answers as for 10:00 UTC.
    assert changed_since("2021-09-02T10:00:00-02:00") == in_utc
