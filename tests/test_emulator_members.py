"""Members through the official client: upsert rules, validation, listing, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from tests.support.mailchimp_api import problem_of, put_member


def test_ping(mailchimp_client):
    assert mailchimp_client.ping.get() == {"health_status": "Everything's Chimpy!"}


def test_get_list_counts_members(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("a@shop.io")
    mailchimp_emulator.audience.seed_member("b@shop.io", status="unsubscribed")
    found = mailchimp_client.lists.get_list(mailchimp_emulator.list_id)
    assert found["id"] == mailchimp_emulator.list_id
    assert found["stats"]["member_count"] == 1
    assert found["stats"]["unsubscribe_count"] == 1


def test_unknown_list_is_404_problem(mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.get_list("nope")
    assert exc.value.status_code == 404
    body = problem_of(exc)
    assert body["title"] == "Resource Not Found"
    assert set(body) == {"type", "title", "status", "detail", "instance"}


def test_put_creates_with_status_if_new(mailchimp_emulator, mailchimp_client):
    member = put_member(
        mailchimp_client,
        mailchimp_emulator.list_id,
        "Ann@Shop.io",
        status_if_new="subscribed",
        merge_fields={"FNAME": "Ann"},
        tags=["buyer"],
    )
    assert member["id"] == subscriber_hash("ann@shop.io")
    assert member["status"] == "subscribed"
    assert member["merge_fields"]["FNAME"] == "Ann"
    # Every merge field of the audience is listed, unset ones as "".
    assert member["merge_fields"]["LNAME"] == ""
    assert [t["name"] for t in member["tags"]] == ["buyer"]
    stored = mailchimp_emulator.audience.member("ann@shop.io")
    assert stored is not None
    assert stored.email_address == "Ann@Shop.io"


def test_put_with_only_status_if_new_keeps_existing_status(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("u@shop.io", status="unsubscribed")
    member = put_member(
        mailchimp_client,
        mailchimp_emulator.list_id,
        "u@shop.io",
        status_if_new="subscribed",
        merge_fields={"FNAME": "U"},
    )
    assert member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "U"


def test_put_tags_apply_only_on_creation(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "t@shop.io", status_if_new="subscribed", tags=["first"])
    member = put_member(
        mailchimp_client, list_id, "t@shop.io", status_if_new="subscribed", tags=["x"]
    )
    assert [t["name"] for t in member["tags"]] == ["first"]


def test_put_status_changes_existing_member(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("s@shop.io")
    member = put_member(
        mailchimp_client, mailchimp_emulator.list_id, "s@shop.io", status="unsubscribed"
    )
    assert member["status"] == "unsubscribed"


@pytest.mark.parametrize("status", ["unsubscribed", "cleaned"])
def test_resubscribing_compliance_member_is_refused(mailchimp_emulator, mailchimp_client, status):
    mailchimp_emulator.audience.seed_member("c@shop.io", status=status)
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, "c@shop.io", status="subscribed")
    assert exc.value.status_code == 400
    body = problem_of(exc)
    assert body["title"] == "Member In Compliance State"
    assert "c@shop.io is in a compliance state" in body["detail"]
    assert mailchimp_emulator.audience.member("c@shop.io").status == status


def test_pending_is_allowed_for_unsubscribed(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("p@shop.io", status="unsubscribed")
    member = put_member(mailchimp_client, mailchimp_emulator.list_id, "p@shop.io", status="pending")
    assert member["status"] == "pending"


def test_marked_compliance_address_cannot_be_created_subscribed(
    mailchimp_emulator, mailchimp_client
):
    mailchimp_emulator.audience.mark_compliance("new@shop.io")
    with pytest.raises(ApiClientError) as exc:
        put_member(
            mailchimp_client, mailchimp_emulator.list_id, "new@shop.io", status_if_new="subscribed"
        )
    assert problem_of(exc)["title"] == "Member In Compliance State"


def test_forgotten_email_cannot_be_reimported(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("gone@shop.io")
    mailchimp_emulator.audience.forget("gone@shop.io")
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.get_list_member(mailchimp_emulator.list_id, "gone@shop.io")
    assert exc.value.status_code == 404
    with pytest.raises(ApiClientError) as exc:
        put_member(
            mailchimp_client, mailchimp_emulator.list_id, "gone@shop.io", status_if_new="pending"
        )
    body = problem_of(exc)
    assert body["title"] == "Forgotten Email Not Subscribed"
    assert body["detail"].startswith("gone@shop.io was permanently deleted")


@pytest.mark.parametrize(
    ("email", "mark"),
    [
        pytest.param("bot@spam.io", "bot@spam.io", id="marked-address"),
        pytest.param("any@fake.io", "@fake.io", id="marked-domain"),
    ],
)
def test_fake_email_is_refused(mailchimp_emulator, mailchimp_client, email, mark):
    mailchimp_emulator.audience.mark_fake(mark)
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, email, status_if_new="subscribed")
    body = problem_of(exc)
    assert body["status"] == 400
    assert body["detail"] == f"{email} looks fake or invalid, please enter a real email address."


@pytest.mark.parametrize("email", ["no-at-sign", "a@b"])
def test_malformed_email_is_refused(mailchimp_emulator, mailchimp_client, email):
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, email, status_if_new="subscribed")
    body = problem_of(exc)
    assert (body["status"], body["title"]) == (400, "Invalid Resource")
    assert body["detail"] == "Please provide a valid email address."


def test_new_member_needs_a_status(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, "n@shop.io")
    assert problem_of(exc)["errors"][0]["field"] == "status_if_new"


def test_hash_must_match_address_on_creation(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.set_list_member(
            mailchimp_emulator.list_id,
            subscriber_hash("other@shop.io"),
            {"email_address": "n@shop.io", "status_if_new": "subscribed"},
        )
    assert exc.value.status_code == 400


@pytest.mark.parametrize(
    ("merge_fields", "field"),
    [
        pytest.param({"SCORE": "many"}, "SCORE", id="number-not-numeric"),
        pytest.param({"SINCE": "31/31/2024"}, "SINCE", id="bad-date"),
        pytest.param({"SITE": "not a url"}, "SITE", id="bad-url"),
        pytest.param({"BDAY": "13/45"}, "BDAY", id="bad-birthday"),
        pytest.param({"ADDRESS": {"addr1": "1 Road"}}, "ADDRESS", id="incomplete-address"),
        pytest.param({"FNAME": "x" * 256}, "FNAME", id="text-too-long"),
    ],
)
def test_merge_field_values_are_checked(mailchimp_emulator, mailchimp_client, merge_fields, field):
    list_id = mailchimp_emulator.list_id
    kinds = [("SCORE", "number"), ("SINCE", "date"), ("SITE", "url"), ("BDAY", "birthday")]
    for tag, kind in kinds:
        mailchimp_client.lists.add_list_merge_field(
            list_id, {"tag": tag, "name": tag, "type": kind}
        )
    with pytest.raises(ApiClientError) as exc:
        put_member(
            mailchimp_client,
            list_id,
            "m@shop.io",
            status_if_new="subscribed",
            merge_fields=merge_fields,
        )
    body = problem_of(exc)
    assert body["title"] == "Invalid Resource"
    assert body["detail"] == "Your merge fields were invalid."
    assert [e["field"] for e in body["errors"]] == [field]
    assert mailchimp_emulator.audience.member("m@shop.io") is None


def test_valid_typed_values_and_clearing(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "SCORE", "name": "S", "type": "number"}
    )
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "SINCE", "name": "D", "type": "date"}
    )
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "BDAY", "name": "B", "type": "birthday"}
    )
    values = {"SCORE": 12.5, "SINCE": "2024-02-29", "BDAY": "02/29", "FNAME": "Z"}
    put_member(
        mailchimp_client, list_id, "v@shop.io", status_if_new="subscribed", merge_fields=values
    )
    member = put_member(mailchimp_client, list_id, "v@shop.io", merge_fields={"FNAME": ""})
    assert member["merge_fields"]["FNAME"] == ""
    assert member["merge_fields"]["SCORE"] == 12.5


def test_required_merge_field_on_creation(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "PLAN", "name": "Plan", "type": "text", "required": True}
    )
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, list_id, "r@shop.io", status_if_new="subscribed")
    assert problem_of(exc)["errors"] == [{"field": "PLAN", "message": "Please enter a value"}]


def test_patch_updates_existing_and_404s_unknown(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("q@shop.io", merge_fields={"FNAME": "Q"})
    member = mailchimp_client.lists.update_list_member(
        list_id, subscriber_hash("q@shop.io"), {"merge_fields": {"LNAME": "R"}}
    )
    assert member["merge_fields"]["FNAME"] == "Q"
    assert member["merge_fields"]["LNAME"] == "R"
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.update_list_member(list_id, subscriber_hash("z@shop.io"), {})
    assert exc.value.status_code == 404


def test_member_path_accepts_the_address(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("Mixed@Shop.io")
    found = mailchimp_client.lists.get_list_member(mailchimp_emulator.list_id, "mixed@shop.io")
    assert found["id"] == subscriber_hash("mixed@shop.io")


def test_list_members_filters_and_pages(mailchimp_emulator, mailchimp_client):
    audience = mailchimp_emulator.audience
    for i in range(5):
        audience.seed_member(f"s{i}@shop.io")
    for i in range(3):
        audience.seed_member(f"u{i}@shop.io", status="unsubscribed")
    list_id = mailchimp_emulator.list_id
    page = mailchimp_client.lists.get_list_members_info(list_id, status="unsubscribed", count=2)
    assert page["total_items"] == 3
    assert [m["email_address"] for m in page["members"]] == ["u0@shop.io", "u1@shop.io"]
    rest = mailchimp_client.lists.get_list_members_info(
        list_id, status="unsubscribed", count=2, offset=2
    )
    assert [m["email_address"] for m in rest["members"]] == ["u2@shop.io"]
    everyone = mailchimp_client.lists.get_list_members_info(list_id)
    assert everyone["total_items"] == 8
    assert len(everyone["members"]) == 8


def test_since_last_changed_uses_the_emulator_clock():
    now = [datetime(2024, 5, 1, 12, 0, tzinfo=UTC)]
    with Emulator(clock=lambda: now[0]) as emulator:
        client = emulator.client(timeout=5)
        emulator.audience.seed_member("old@shop.io")
        now[0] += timedelta(hours=1)
        put_member(client, emulator.list_id, "old@shop.io", status="unsubscribed")
        emulator.audience.seed_member("quiet@shop.io")
        found = client.lists.get_list_members_info(
            emulator.list_id,
            status="unsubscribed",
            since_last_changed="2024-05-01T12:30:00+00:00",
        )
        assert [m["email_address"] for m in found["members"]] == ["old@shop.io"]
        assert found["members"][0]["last_changed"] == "2024-05-01T13:00:00+00:00"
        none = client.lists.get_list_members_info(
            emulator.list_id, since_last_changed="2024-05-01T13:00:00Z"
        )
        assert none["total_items"] == 0


def test_wrong_api_key_is_401(mailchimp_emulator):
    client = mailchimp_emulator.client(timeout=5)
    client.set_config({"api_key": "ffffffffffffffffffffffffffffffff-us21", "timeout": 5})
    with pytest.raises(ApiClientError) as exc:
        client.ping.get()
    assert exc.value.status_code == 401
    assert problem_of(exc)["title"] == "API Key Invalid"


def test_missing_auth_is_401_and_any_user_name_works(mailchimp_emulator):
    url = mailchimp_emulator.url + "/ping"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert missing.json()["title"] == "API Key Missing"
    ok = requests.get(url, auth=("anything", mailchimp_emulator.api_key), timeout=5)
    assert ok.status_code == 200
    assert ok.headers["Content-Type"].startswith("application/json")


def test_unknown_path_and_wrong_method(mailchimp_emulator):
    auth = ("u", mailchimp_emulator.api_key)
    assert (
        requests.get(mailchimp_emulator.url + "/nowhere", auth=auth, timeout=5).status_code == 404
    )
    # Outside /3.0 nothing is the API.
    assert (
        requests.get(mailchimp_emulator.root_url + "/ping", auth=auth, timeout=5).status_code == 404
    )
    wrong = requests.delete(mailchimp_emulator.url + "/ping", auth=auth, timeout=5)
    assert wrong.status_code == 405
    assert wrong.json()["title"] == "Method Not Allowed"


def test_invalid_json_body(mailchimp_emulator):
    answer = requests.put(
        mailchimp_emulator.url + f"/lists/{mailchimp_emulator.list_id}/members/x",
        data=b"{not json",
        auth=("u", mailchimp_emulator.api_key),
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["title"] == "JSON Parse Error"
