"""Changes made on Mailchimp's side: webhook parsing, and how both ledgers
(memory, SQLite, PostgreSQL) record them: idempotent, ordered, address moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.mailchimp.changes import MailchimpChange, WebhookError, from_member, parse_webhook
from sync.mailchimp.ledger import PushLedger, SentEvent
from sync.state.store import StateStore
from tests.support.webhook_payloads import CLEANED, PROFILE, UNSUBSCRIBE, UPEMAIL

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_unsubscribe_webhook() -> None:
    change = parse_webhook(UNSUBSCRIBE)
    assert change is not None
    assert (change.kind, change.email, change.status, change.reason) == (
        "unsubscribe",
        "api+unsub@mailchimp.com",
        "unsubscribed",
        "manual",
    )
    assert change.at == datetime(2009, 3, 26, 21, 40, 57, tzinfo=UTC)
    assert change.merges == {"FNAME": "MailChimp", "LNAME": "API"}
    assert change.key == parse_webhook(dict(UNSUBSCRIBE)).key  # type: ignore[union-attr]


def test_unsubscribe_with_action_delete_is_an_archive() -> None:
    change = parse_webhook({**UNSUBSCRIBE, "data[action]": "delete"})
    assert change is not None
    assert (change.kind, change.status) == ("archive", "archived")


def test_cleaned_upemail_profile_and_campaign_webhooks() -> None:
    cleaned = parse_webhook(CLEANED)
    assert cleaned is not None
    assert (cleaned.status, cleaned.reason) == ("cleaned", "hard")
    moved = parse_webhook(UPEMAIL)
    assert moved is not None
    assert (moved.email, moved.old_email) == ("api+new@mailchimp.com", "api+old@mailchimp.com")
    profile = parse_webhook(PROFILE)
    assert profile is not None
    assert (profile.status, dict(profile.merges)) == (None, {"FNAME": "MailChimp"})
    assert parse_webhook({"type": "campaign", "fired_at": "2009-03-26 21:31:21"}) is None


@pytest.mark.parametrize(
    ("form", "field"),
    [
        pytest.param({"type": "bogus"}, "type", id="unknown-type"),
        pytest.param({**CLEANED, "fired_at": "yesterday"}, "fired_at", id="bad-fired-at"),
        pytest.param({**CLEANED, "data[email]": ""}, "data[email]", id="no-email"),
        pytest.param({**UPEMAIL, "data[old_email]": "nope"}, "data[old_email]", id="bad-old"),
        pytest.param({**UNSUBSCRIBE, "data[action]": "x"}, "data[action]", id="bad-action"),
    ],
)
def test_bad_webhooks_name_the_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(WebhookError, match=field.replace("[", r"\[")):
        parse_webhook(form)


def test_member_json_as_an_observation() -> None:
    change = from_member(
        {
            "email_address": "A@x.io",
            "status": "archived",
            "last_changed": "2026-01-02T03:04:05+00:00",
        },
        "poll",
        T0,
    )
    assert change is not None
    assert (change.email, change.status, change.at) == (
        "a@x.io",
        "archived",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert from_member({"email_address": "a@x.io", "status": "weird"}, "poll", T0) is None


# -- the ledgers ----------------------------------------------------------------------


def change(
    kind: str, email: str, at: datetime, status: str | None, **kw: object
) -> MailchimpChange:
    return MailchimpChange(kind, email, at, str(kw.pop("source", "webhook")), status, **kw)  # type: ignore[arg-type]


def test_a_webhook_delivered_twice_is_applied_once(ledger: PushLedger) -> None:
    unsub = parse_webhook(UNSUBSCRIBE)
    assert unsub is not None
    assert ledger.record_mailchimp_changes([unsub]) == 1
    assert ledger.record_mailchimp_changes([unsub]) == 0
    known = ledger.mailchimp_members(["api+unsub@mailchimp.com"])["api+unsub@mailchimp.com"]
    assert (known.status, known.reason, known.status_at) == ("unsubscribed", "manual", unsub.at)


def test_an_older_change_does_not_overwrite_a_newer_one(ledger: PushLedger) -> None:
    ledger.record_mailchimp_changes([change("subscribe", "a@x.io", T0, "subscribed", key="k2")])
    ledger.record_mailchimp_changes(
        [change("unsubscribe", "a@x.io", T0 - timedelta(hours=1), "unsubscribed", key="k1")]
    )
    assert ledger.mailchimp_members(["a@x.io"])["a@x.io"].status == "subscribed"


def test_a_poll_seeing_subscribed_members_stores_nothing_new(ledger: PushLedger) -> None:
    assert (
        ledger.record_mailchimp_changes(
            [change("status", "s@x.io", T0, "subscribed", source="poll")]
        )
        == 0
    )
    assert ledger.mailchimp_members(["s@x.io"]) == {}
    ledger.record_mailchimp_changes([change("status", "s@x.io", T0, "archived", source="poll")])
    back = change("status", "s@x.io", T0 + timedelta(minutes=1), "subscribed", source="poll")
    ledger.record_mailchimp_changes([back])
    assert ledger.mailchimp_members(["s@x.io"])["s@x.io"].status == "subscribed"


def test_an_address_change_moves_the_ledger_entry(ledger: PushLedger) -> None:
    ledger.record_accepted("old@x.io", {"FNAME": "O"}, frozenset({"vip"}), T0)
    ledger.record_events_sent([SentEvent("old@x.io", "e1", "signup", T0)])
    ledger.record_mailchimp_changes(
        [change("unsubscribe", "old@x.io", T0, "unsubscribed", key="u")]
    )
    moved = change("upemail", "new@x.io", T0 + timedelta(minutes=1), None, old_email="old@x.io")
    ledger.record_mailchimp_changes([moved])
    assert ledger.member_states(["old@x.io"]) == {}
    state = ledger.member_states(["new@x.io"])["new@x.io"]
    assert (dict(state.fields), state.tags) == ({"FNAME": "O"}, frozenset({"vip"}))
    assert ledger.sent_events(["new@x.io"]) == {"new@x.io": {"e1"}}
    via_old = ledger.mailchimp_members(["old@x.io"])["old@x.io"]
    assert (via_old.address, via_old.status) == ("new@x.io", "unsubscribed")
    # A second move carries the first one along.
    again = change("upemail", "newer@x.io", T0 + timedelta(minutes=2), None, old_email="new@x.io")
    ledger.record_mailchimp_changes([again])
    assert ledger.mailchimp_members(["old@x.io"])["old@x.io"].address == "newer@x.io"
    assert "newer@x.io" in ledger.member_states(["newer@x.io"])


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_opt_outs_since(request: pytest.FixtureRequest, backend: str) -> None:
    store = StateStore(
        request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    )
    store.migrate()
    try:
        store.record_mailchimp_changes(
            [
                change("unsubscribe", "u@x.io", T0, "unsubscribed", key="1", reason="manual"),
                change(
                    "cleaned", "c@x.io", T0 + timedelta(hours=2), "cleaned", key="2", reason="hard"
                ),
                change("archive", "a@x.io", T0, "archived", key="3"),
                change("profile", "u@x.io", T0 + timedelta(hours=3), None, key="4"),
            ]
        )
        assert [(m.email, m.status) for m in store.mailchimp_opt_outs()] == [
            ("u@x.io", "unsubscribed"),
            ("c@x.io", "cleaned"),
        ]
        # A later profile edit does not make an old unsubscribe new.
        since = [m.email for m in store.mailchimp_opt_outs(T0 + timedelta(hours=1))]
        assert since == ["c@x.io"]
        summary = store.mailchimp_summary()
        assert summary["statuses"] == {"archived": 1, "cleaned": 1, "unsubscribed": 1}
        assert [c.kind for c in store.mailchimp_history("u@x.io")] == ["profile", "unsubscribe"]
    finally:
        store.close()
