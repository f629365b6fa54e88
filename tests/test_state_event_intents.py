"""Event intents (migration 0004), held to one contract on MemoryLedger,
SQLite and PostgreSQL: recorded before a POST, cleared by its answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.mailchimp.ledger import EventIntent, PushLedger, SentEvent, event_signature
from sync.state.store import StateStore

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def intent(key: str, *, email: str = "Ann@Shop.io", at: datetime = T0, **props: str) -> EventIntent:
    return EventIntent(
        email=email,
        key=key,
        name="credit",
        occurred_at=T0 - timedelta(hours=1),
        attempted_at=at,
        properties=props,
    )


def test_intents_are_pending_until_sent(ledger: PushLedger) -> None:
    ledger.record_event_intents([intent("k1", amount="10"), intent("k2")])
    pending = ledger.pending_events(["ann@shop.io", "bob@shop.io"])
    assert list(pending) == ["ann@shop.io"]
    assert [(i.key, i.email, dict(i.properties), i.attempts) for i in pending["ann@shop.io"]] == [
        ("k1", "ann@shop.io", {"amount": "10"}, 1),
        ("k2", "ann@shop.io", {}, 1),
    ]
    first = pending["ann@shop.io"][0]
    assert first.occurred_at == T0 - timedelta(hours=1)
    assert first.attempted_at == T0
    assert first.signature == intent("k1", amount="10").signature

    ledger.record_events_sent([SentEvent("ANN@shop.io", "k1", "credit", T0, first.signature)])
    assert [i.key for i in ledger.pending_events(["ann@shop.io"])["ann@shop.io"]] == ["k2"]
    assert ledger.sent_event_keys("ann@shop.io", ["k1", "k2"]) == {"k1"}
    assert ledger.sent_event_signatures(["ann@shop.io"]) == {"ann@shop.io": [first.signature]}

    ledger.clear_event_intents([("ann@shop.io", "k2")])
    assert ledger.pending_events(["ann@shop.io"]) == {}
    assert ledger.sent_event_keys("ann@shop.io", ["k2"]) == set()


def test_a_second_attempt_counts_and_moves_the_attempt_instant(ledger: PushLedger) -> None:
    ledger.record_event_intents([intent("k1")])
    later = T0 + timedelta(minutes=10)
    ledger.record_event_intents([intent("k1", at=later)])
    (again,) = ledger.pending_events(["ann@shop.io"])["ann@shop.io"]
    assert (again.attempts, again.attempted_at) == (2, later)


def test_events_sent_without_a_signature_are_not_listed(ledger: PushLedger) -> None:
    ledger.record_event_sent("a@x.io", "old", "welcome", T0)
    assert ledger.sent_event_signatures(["a@x.io"]) == {}


def test_intents_are_ordered_oldest_first(ledger: PushLedger) -> None:
    ledger.record_event_intents(
        [intent("late", at=T0 + timedelta(hours=1)), intent("early", at=T0)]
    )
    assert [i.key for i in ledger.pending_events(["ann@shop.io"])["ann@shop.io"]] == [
        "early",
        "late",
    ]


def test_many_intents_in_one_call(ledger: PushLedger) -> None:
    intents = [intent(f"k{i}", email=f"u{i % 700}@x.io") for i in range(1400)]
    ledger.record_event_intents(intents)
    pending = ledger.pending_events(f"u{i}@x.io" for i in range(700))
    assert sum(len(v) for v in pending.values()) == 1400
    ledger.record_events_sent([SentEvent(i.email, i.key, i.name, T0) for i in intents[:900]])
    ledger.clear_event_intents((i.email, i.key) for i in intents[900:])
    assert ledger.pending_events(f"u{i}@x.io" for i in range(700)) == {}


def test_the_signature_ignores_fractions_and_offsets() -> None:
    at = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    same = at.replace(microsecond=0).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert event_signature("credit", at, {"a": "1"}) == event_signature("credit", same, {"a": "1"})
    assert event_signature("credit", at, {"a": "1"}) != event_signature("credit", at, {"a": "2"})
    assert event_signature("credit", at, {}) != event_signature("abo", at, {})
    with pytest.raises(ValueError, match="naive"):
        event_signature("credit", at.replace(tzinfo=None), {})


def test_migration_4_keeps_events_sent_before_it(sqlite_url: str) -> None:
    store = StateStore(sqlite_url)
    try:
        store.migrate()
        assert 4 in store.schema_versions()
        store.record_event_sent("a@x.io", "k", "welcome", T0)
        assert store.sent_event_keys("a@x.io", ["k"]) == {"k"}
        assert store.migrate() == []
    finally:
        store.close()
