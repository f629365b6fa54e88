"""Archived, unsubscribed, cleaned and compliance-state members, and list
webhooks, as the emulator models them (sources in docs/emulator.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from tests.support.mailchimp_api import problem_of, put_member

# -- archived ---------------------------------------------------------------------


def test_delete_archives_and_get_shows_archived(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("a@shop.io", merge_fields={"FNAME": "A"})
    answer = mailchimp_client.lists.delete_list_member(list_id, subscriber_hash("a@shop.io"))
    assert answer.status_code == 204
    member = mailchimp_client.lists.get_list_member(list_id, subscriber_hash("a@shop.io"))
    assert member["status"] == "archived"
    assert member["merge_fields"]["FNAME"] == "A"
    listed = mailchimp_client.lists.get_list_members_info(list_id, status="archived")
    assert [m["email_address"] for m in listed["members"]] == ["a@shop.io"]


@pytest.mark.parametrize("status", ["archived", "cleaned", "pending"])
def test_delete_is_405_for_archived_bounced_and_pending(
    mailchimp_emulator, mailchimp_client, status
):
    mailchimp_emulator.audience.seed_member("x@shop.io", status=status)
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.delete_list_member(
            mailchimp_emulator.list_id, subscriber_hash("x@shop.io")
        )
    assert exc.value.status_code == 405
    assert (
        "Can not archive a contact that is bounced, pending or archived"
        in (problem_of(exc)["detail"])
    )
    assert mailchimp_emulator.audience.member("x@shop.io").status == status


def test_delete_of_unknown_member_is_404(mailchimp_emulator, mailchimp_client):
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.delete_list_member(
            mailchimp_emulator.list_id, subscriber_hash("nobody@shop.io")
        )
    assert exc.value.status_code == 404


def test_put_with_status_if_new_leaves_an_archived_contact_archived(
    mailchimp_emulator, mailchimp_client
):
    mailchimp_emulator.audience.seed_member("a@shop.io", status="archived")
    member = put_member(
        mailchimp_client,
        mailchimp_emulator.list_id,
        "a@shop.io",
        status_if_new="subscribed",
        merge_fields={"FNAME": "A"},
    )
    assert member["status"] == "archived"


def test_put_with_status_brings_an_archived_contact_back(mailchimp_emulator, mailchimp_client):
    mailchimp_emulator.audience.seed_member("a@shop.io", status="archived")
    member = put_member(
        mailchimp_client, mailchimp_emulator.list_id, "a@shop.io", status="subscribed"
    )
    assert member["status"] == "subscribed"


def test_post_create_of_an_archived_contact_is_member_exists_in_a_batch(
    mailchimp_emulator, mailchimp_client
):
    audience = mailchimp_emulator.audience
    audience.seed_member("a@shop.io", status="archived")
    body = {"members": [{"email_address": "a@shop.io", "status": "subscribed"}]}
    result = mailchimp_client.lists.batch_list_members(
        mailchimp_emulator.list_id, {**body, "update_existing": False}
    )
    assert result["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
    assert audience.member("a@shop.io").status == "archived"
    # update_existing: true re-adds it, with the status given.
    result = mailchimp_client.lists.batch_list_members(
        mailchimp_emulator.list_id, {**body, "update_existing": True}
    )
    assert result["updated_members"][0]["status"] == "subscribed"


def test_delete_permanent_forgets_the_address(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    h = subscriber_hash("gone@shop.io")
    mailchimp_emulator.audience.seed_member("gone@shop.io")
    answer = mailchimp_client.lists.delete_list_member_permanent(list_id, h)
    assert answer.status_code == 204
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.get_list_member(list_id, h)
    assert exc.value.status_code == 404
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, list_id, "gone@shop.io", status_if_new="subscribed")
    assert problem_of(exc)["title"] == "Forgotten Email Not Subscribed"


# -- unsubscribed, cleaned, compliance ----------------------------------------------


def test_unsubscribed_through_the_api_may_be_resubscribed(mailchimp_emulator, mailchimp_client):
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "u@shop.io", status_if_new="subscribed")
    put_member(mailchimp_client, list_id, "u@shop.io", status="unsubscribed")
    assert put_member(mailchimp_client, list_id, "u@shop.io", status="subscribed")["status"] == (
        "subscribed"
    )


@pytest.mark.parametrize("action", ["unsubscribe", "clean"])
def test_unsubscribed_by_the_person_or_cleaned_is_a_compliance_state(
    mailchimp_emulator, mailchimp_client, action
):
    list_id = mailchimp_emulator.list_id
    put_member(mailchimp_client, list_id, "c@shop.io", status_if_new="subscribed")
    inspect = f"{mailchimp_emulator.root_url}/_emulator/lists/{list_id}/members/c@shop.io"
    assert requests.post(f"{inspect}/{action}", json={}, timeout=5).status_code == 200
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, list_id, "c@shop.io", status="subscribed")
    assert problem_of(exc)["title"] == "Member In Compliance State"
    # The batch subscribe says so per member.
    result = mailchimp_client.lists.batch_list_members(
        list_id,
        {
            "members": [{"email_address": "c@shop.io", "status": "subscribed"}],
            "update_existing": True,
        },
    )
    assert "compliance state" in result["errors"][0]["error"]


def test_archived_in_the_ui_then_signed_up_again_is_subscribed(
    mailchimp_emulator, mailchimp_client
):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("back@shop.io")
    inspect = f"{mailchimp_emulator.root_url}/_emulator/lists/{list_id}/members/back@shop.io"
    requests.post(f"{inspect}/archive", json={}, timeout=5).raise_for_status()
    assert mailchimp_emulator.audience.member("back@shop.io").status == "archived"
    requests.post(f"{inspect}/subscribe", json={}, timeout=5).raise_for_status()
    assert mailchimp_emulator.audience.member("back@shop.io").status == "subscribed"


# -- webhooks -----------------------------------------------------------------------


class Receiver:
    """A stand-in for an integration's webhook URL: records what it gets."""

    def __init__(self) -> None:
        self.gets = 0
        self.posts: list[dict[str, str]] = []
        self.content_types: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.gets += 1
                self._ok()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.content_types.append(self.headers["Content-Type"])
                outer.posts.append(dict(parse_qsl(raw.decode())))
                self._ok()

            def _ok(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def test_webhook_creation_validates_the_url_with_a_get(
    mailchimp_emulator, mailchimp_client, receiver
):
    hook = mailchimp_client.lists.create_list_webhook(
        mailchimp_emulator.list_id, {"url": receiver.url}
    )
    assert receiver.gets == 1
    assert hook["events"]["unsubscribe"] is True
    assert hook["events"]["campaign"] is False
    assert hook["sources"] == {"user": True, "admin": True, "api": False}
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.create_list_webhook(
            mailchimp_emulator.list_id, {"url": "http://127.0.0.1:9/nothing-here"}
        )
    assert exc.value.status_code == 400


def test_each_change_made_in_mailchimp_posts_its_form_encoded_webhook(
    mailchimp_emulator, mailchimp_client, receiver
):
    list_id = mailchimp_emulator.list_id
    mailchimp_client.lists.create_list_webhook(list_id, {"url": receiver.url})
    audience = mailchimp_emulator.audience
    for email in ("u@shop.io", "c@shop.io", "a@shop.io", "p@shop.io", "old@shop.io"):
        audience.seed_member(email, merge_fields={"FNAME": email[0]})
    base = f"{mailchimp_emulator.root_url}/_emulator/lists/{list_id}/members"
    steps = [
        ("u@shop.io", "unsubscribe", {"reason": "abuse"}),
        ("c@shop.io", "clean", {}),
        ("a@shop.io", "archive", {}),
        ("p@shop.io", "profile", {"merge_fields": {"FNAME": "Pat"}}),
        ("old@shop.io", "change-address", {"new_email": "new@shop.io"}),
        ("u@shop.io", "subscribe", {}),
    ]
    for email, action, body in steps:
        requests.post(f"{base}/{email}/{action}", json=body, timeout=5).raise_for_status()
    assert all(t == "application/x-www-form-urlencoded" for t in receiver.content_types)
    unsub, cleaned, archived, profile, upemail, subscribe = receiver.posts
    assert (unsub["type"], unsub["data[action]"], unsub["data[reason]"]) == (
        "unsubscribe",
        "unsub",
        "abuse",
    )
    assert unsub["data[email]"] == "u@shop.io"
    assert unsub["data[list_id]"] == list_id
    assert len(unsub["fired_at"]) == len("2009-03-26 21:35:57")
    assert (cleaned["type"], cleaned["data[email]"], cleaned["data[reason]"]) == (
        "cleaned",
        "c@shop.io",
        "hard",
    )
    assert (archived["type"], archived["data[action]"]) == ("unsubscribe", "delete")
    assert (profile["type"], profile["data[merges][FNAME]"]) == ("profile", "Pat")
    assert (upemail["type"], upemail["data[old_email]"], upemail["data[new_email]"]) == (
        "upemail",
        "old@shop.io",
        "new@shop.io",
    )
    assert subscribe["type"] == "subscribe"
    assert audience.member("new@shop.io") is not None
    assert audience.member("old@shop.io") is None


def test_api_changes_send_webhooks_only_when_the_api_source_is_on(
    mailchimp_emulator, mailchimp_client, receiver
):
    list_id = mailchimp_emulator.list_id
    mailchimp_emulator.audience.seed_member("a@shop.io")
    mailchimp_emulator.audience.seed_member("b@shop.io")
    hook = mailchimp_client.lists.create_list_webhook(list_id, {"url": receiver.url})
    mailchimp_client.lists.delete_list_member(list_id, subscriber_hash("a@shop.io"))
    assert receiver.posts == []
    mailchimp_client.lists.delete_list_webhook(list_id, hook["id"])
    mailchimp_client.lists.create_list_webhook(
        list_id, {"url": receiver.url, "sources": {"api": True}}
    )
    mailchimp_client.lists.delete_list_member(list_id, subscriber_hash("b@shop.io"))
    assert [p["data[email]"] for p in receiver.posts] == ["b@shop.io"]
