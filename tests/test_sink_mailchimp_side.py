"""The sink never changes a member's subscription status and never brings an
archived contact back: for each state, through batch subscribe (a member new
to the ledger), direct PUT and ``/batches``; and it pushes to the address a
member moved to in Mailchimp."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sync.emulator import Emulator
from sync.mailchimp.changes import MailchimpChange
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.memory import MemoryLedger
from sync.mailchimp.push_plan import ARCHIVED_REASON
from sync.records import DesiredMember, EventDue
from sync.state.store import StateStore
from tests.support.clock import Clock
from tests.support.sink import T0, make_sink

PUT = "PUT /lists/{list_id}/members/{subscriber_hash}"
BATCH_SUBSCRIBE = "POST /lists/{list_id}"
START = "POST /batches"

# path -> (is the member known to the ledger, sink settings)
PATHS: dict[str, tuple[bool, dict[str, Any]]] = {
    "batch-subscribe": (False, {}),
    "put": (True, {"use_batches": False}),
    "batches": (True, {"bulk_threshold": 1}),
}


@pytest.fixture
def emulator(mailchimp_emulator: Emulator) -> Emulator:
    mailchimp_emulator.audience.add_merge_field({"tag": "STATUS", "name": "STATUS", "type": "text"})
    return mailchimp_emulator


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[PushLedger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    store = StateStore(sqlite_url)
    store.migrate()
    yield store
    store.close()


def wanted(email: str, status: str = "money_ok") -> DesiredMember:
    return DesiredMember(
        email, {"STATUS": status}, tags=frozenset({"vip"}), events=(EventDue("k1", "paid", T0),)
    )


def prepare(emulator: Emulator, ledger: PushLedger, state: str, known: bool) -> None:
    """A member in ``state`` at Mailchimp, known to the ledger or not."""
    emulator.audience.seed_member("m@x.io", merge_fields={"STATUS": "old"})
    if known:
        ledger.record_accepted("m@x.io", {"STATUS": "old"}, frozenset(), T0)
    if state == "compliance":
        emulator.audience.mark_compliance("m@x.io")  # also unsubscribes it
    elif state == "unsubscribed-by-person":
        emulator.audience.unsubscribe_by_person("m@x.io")
    elif state == "cleaned":
        emulator.audience.clean("m@x.io")
    elif state == "archived":
        emulator.audience.archive_member("m@x.io")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("state", ["unsubscribed-by-person", "cleaned", "compliance"])
def test_opted_out_members_keep_their_status(
    emulator: Emulator, ledger: PushLedger, path: str, state: str
) -> None:
    known, config = PATHS[path]
    prepare(emulator, ledger, state, known)
    before = emulator.audience.member("m@x.io").status  # type: ignore[union-attr]
    summary = make_sink(emulator, ledger, Clock(T0), **config).push([wanted("m@x.io")])
    member = emulator.audience.member("m@x.io")
    assert member is not None
    assert member.status == before
    # Its data still flows: merge fields, tags and events are not consent.
    assert member.merge_fields["STATUS"] == "money_ok"
    assert summary.failed == 0
    assert emulator.calls.count(PUT) + emulator.calls.count(START) >= 1


@pytest.mark.parametrize("path", list(PATHS))
def test_an_archived_contact_is_not_brought_back(
    emulator: Emulator, ledger: PushLedger, path: str
) -> None:
    known, config = PATHS[path]
    prepare(emulator, ledger, "archived", known)
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock, **config)
    summary = sink.push([wanted("m@x.io")])
    member = emulator.audience.member("m@x.io")
    assert member is not None
    assert member.status == "archived"
    assert (summary.archived, summary.pushed, summary.failed) == (1, 0, 0)
    assert member.tags == {}
    assert member.events == []
    if not known:
        assert emulator.calls.count(BATCH_SUBSCRIBE) == 1  # "already a list member"
    # The answer taught the ledger: the next pushes leave the member alone.
    assert ledger.mailchimp_members(["m@x.io"])["m@x.io"].status == "archived"
    (failure,) = ledger.failures()
    assert failure.reason == ARCHIVED_REASON
    emulator.calls.reset()
    clock.now += timedelta(hours=1)
    later = sink.push([wanted("m@x.io", "changed_again")])
    assert emulator.calls.count() == 0
    assert later.held_back == 1 or later.archived == 1


def test_a_member_known_archived_is_not_even_sent(emulator: Emulator, ledger: PushLedger) -> None:
    emulator.audience.seed_member("m@x.io")
    emulator.audience.archive_member("m@x.io")
    ledger.record_mailchimp_changes(
        [MailchimpChange("archive", "m@x.io", T0, "webhook", "archived", key="w1")]
    )
    summary = make_sink(emulator, ledger, Clock(T0)).push([wanted("m@x.io")])
    assert (summary.archived, emulator.calls.count()) == (1, 0)


def test_once_unarchived_in_mailchimp_the_member_is_pushed_again(
    emulator: Emulator, ledger: PushLedger
) -> None:
    emulator.audience.seed_member("m@x.io")
    emulator.audience.archive_member("m@x.io")
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    assert sink.push([wanted("m@x.io")]).archived == 1
    # The person signs up again through a form; the webhook says so.
    emulator.audience.subscribe_by_person("m@x.io")
    clock.now += timedelta(minutes=5)
    # Stamped by Mailchimp's clock (the emulator's is the real one), after
    # the archived status the PUT's answer showed.
    fired = datetime.now(UTC) + timedelta(seconds=1)
    ledger.record_mailchimp_changes(
        [MailchimpChange("subscribe", "m@x.io", fired, "webhook", "subscribed", key="w2")]
    )
    summary = sink.push([wanted("m@x.io")])
    assert (summary.pushed, summary.archived) == (1, 0)
    member = emulator.audience.member("m@x.io")
    assert member is not None
    assert member.merge_fields["STATUS"] == "money_ok"
    assert list(member.tags) == ["vip"]


def test_pushes_follow_an_address_changed_in_mailchimp(
    emulator: Emulator, ledger: PushLedger
) -> None:
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    sink.push([wanted("old@x.io", "first")])
    emulator.audience.change_address("old@x.io", "new@x.io")
    ledger.record_mailchimp_changes(
        [MailchimpChange("upemail", "new@x.io", clock.now, "webhook", old_email="old@x.io")]
    )
    emulator.calls.reset()
    clock.now += timedelta(hours=1)
    # The application still knows the old address.
    summary = sink.push([wanted("old@x.io", "second")])
    assert summary.pushed == 1
    assert emulator.audience.member("old@x.io") is None  # no duplicate created
    moved = emulator.audience.member("new@x.io")
    assert moved is not None
    assert moved.merge_fields["STATUS"] == "second"
    assert len(moved.events) == 1  # the event was not sent again
    # (An hour on, the audience's merge tags are read again first.)
    assert emulator.calls.by_endpoint() == {"GET /lists/{list_id}/merge-fields": 1, PUT: 1}
