"""The webhook receiver's answers, request by request (the HTTP path is
covered end to end in test_mailchimp_side_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from sync.exceptions import ConfigurationError
from sync.mailchimp.changes import MailchimpChange
from sync.mailchimp.webhooks import PREFIX, WebhookReceiver
from sync.state.store import StateStore
from tests.support.webhook_payloads import CLEANED

SECRET = "0123456789abcdef-secret"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[StateStore]:
    found = StateStore(sqlite_url)
    found.migrate()
    yield found
    found.close()


def test_only_the_secret_path_is_a_webhook(store: StateStore) -> None:
    receiver = WebhookReceiver(store, SECRET)
    assert receiver.handles(f"{PREFIX}{SECRET}")
    assert receiver.handles(f"{PREFIX}{SECRET}/?x=1")
    assert not receiver.handles(f"{PREFIX}{SECRET[:-1]}")
    assert not receiver.handles("/metrics")
    assert receiver.answer_get()[0] == 200


def test_an_event_is_recorded_once(store: StateStore) -> None:
    receiver = WebhookReceiver(store, SECRET, "a6b5da1054")
    body = urlencode(CLEANED).encode()
    assert receiver.answer_post(body)[0] == 200
    assert receiver.answer_post(body)[0] == 200
    assert dict(receiver.counts) == {"applied": 1, "duplicate": 1}
    known = store.mailchimp_members(["api+cleaned@mailchimp.com"])
    assert known["api+cleaned@mailchimp.com"].status == "cleaned"


def test_other_audiences_and_campaigns_are_ignored(store: StateStore) -> None:
    receiver = WebhookReceiver(store, SECRET, "my-audience")
    assert receiver.answer_post(urlencode(CLEANED).encode()) == (200, b"ignored\n")
    campaign = {"type": "campaign", "fired_at": "2009-03-26 21:31:21", "data[id]": "5aa2102003"}
    assert receiver.answer_post(urlencode(campaign).encode()) == (200, b"ignored\n")
    assert store.mailchimp_members(["api+cleaned@mailchimp.com"]) == {}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"type=cleaned&fired_at=2009-03-26+22%3A01%3A00", id="no-email"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"just text", id="not-a-form"),
    ],
)
def test_garbage_is_a_400_naming_the_problem(store: StateStore, body: bytes) -> None:
    status, text = WebhookReceiver(store, SECRET).answer_post(body)
    assert status == 400
    assert text.startswith(b"not a Mailchimp webhook event")


class BrokenStore(StateStore):
    def record_mailchimp_changes(self, changes: Sequence[MailchimpChange]) -> int:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))


def test_a_store_that_cannot_write_asks_mailchimp_to_deliver_again(sqlite_url: str) -> None:
    broken = BrokenStore(sqlite_url)
    try:
        status, _ = WebhookReceiver(broken, SECRET).answer_post(urlencode(CLEANED).encode())
    finally:
        broken.close()
    assert status == 503


@pytest.mark.parametrize("secret", ["short", "with/slash-0123456789", "nön-ascii-0123456789"])
def test_weak_secrets_are_refused(store: StateStore, secret: str) -> None:
    with pytest.raises(ConfigurationError, match="webhook secret"):
        WebhookReceiver(store, secret)
