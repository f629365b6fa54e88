"""``/batches`` jobs left running: a push waits for a job only so long, a
later push collects it.

Mailchimp runs an account's jobs one after the other and may take minutes,
or hours, to finish one (docs/emulator.md). Before, a push waited up to 30
minutes per job and then treated its operations as unanswered: updates were
retried and every event was looked up in Mailchimp, member by member.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from sync.emulator import Emulator
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.collect import GIVE_UP
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.summary import PushSummary
from sync.records import DesiredMember, EventDue
from tests.support.clock import Clock
from tests.support.sink import T0, make_sink

START = "POST /batches"
EVENTS_READ = "GET /lists/{list_id}/members/{subscriber_hash}/events"
N = 12
#: A push waits this long for a job, then leaves it running.
SHORT = BatchPolling(first_wait=0.01, max_wait=0.05, deadline=0.3)


@pytest.fixture
def emulator(mailchimp_emulator: Emulator) -> Emulator:
    mailchimp_emulator.audience.add_merge_field({"tag": "STATUS", "name": "STATUS", "type": "text"})
    return mailchimp_emulator


# ``ledger`` (tests/conftest.py): in memory, and the state store on SQLite and
# PostgreSQL.


def wanted(status: str, *, event: bool = False) -> list[DesiredMember]:
    events = (EventDue("user:credit:1", "credit", T0, {"amount": "10"}),) if event else ()
    return [
        DesiredMember(
            f"User{i}@Example.com",
            {"STATUS": status},
            tags=frozenset({"vip"}) if event else frozenset(),
            managed_tags=frozenset({"vip"}),
            events=events,
        )
        for i in range(N)
    ]


def created(emulator: Emulator, ledger: PushLedger, clock: Clock) -> MailchimpSink:
    """A sink whose members exist in Mailchimp (created synchronously)."""
    sink = make_sink(emulator, ledger, clock, polling=SHORT, bulk_threshold=2)
    assert sink.push(wanted("registered")).pushed == N
    emulator.calls.reset()
    return sink


def pushed_while_held(
    emulator: Emulator, ledger: PushLedger, clock: Clock, status: str, *, event: bool = False
) -> tuple[MailchimpSink, PushSummary]:
    """The members created, then a push of ``status`` while Mailchimp holds jobs."""
    sink = created(emulator, ledger, clock)
    emulator.hold_batches = True
    return sink, sink.push(wanted(status, event=event))


def release(emulator: Emulator) -> None:
    emulator.hold_batches = False
    for job in emulator.batches.batches():
        emulator.batches.wait_finished(job.id)


def statuses(emulator: Emulator) -> set[str]:
    return {
        str(m.merge_fields["STATUS"])
        for i in range(N)
        if (m := emulator.audience.member(f"user{i}@example.com")) is not None
    }


def test_a_job_not_finished_in_time_is_left_running_then_collected(
    emulator: Emulator, ledger: PushLedger
) -> None:
    clock = Clock(T0)
    sink, left = pushed_while_held(emulator, ledger, clock, "money_ok", event=True)
    # Not failures: the update job is left running, and nothing follows it yet.
    assert (left.failed, left.pushed, left.events_sent) == (0, 0, 0)
    assert sorted(left.running_members) == sorted(f"user{i}@example.com" for i in range(N))
    assert ledger.running_emails() == set(left.running_members)
    assert ledger.failures() == []
    assert emulator.calls.count(START) == 1
    assert statuses(emulator) == {"registered"}

    # While it runs, its members are not pushed again.
    again = sink.push(wanted("money_ok", event=True))
    assert (again.held_running, again.pushed) == (N, 0)
    assert emulator.calls.count(START) == 1

    release(emulator)
    emulator.calls.reset()
    clock.now += timedelta(minutes=1)
    collected = sink.collect_running()
    assert collected.collected == N
    assert (collected.failed, collected.pushed, collected.events_sent) == (0, N, N)
    assert ledger.running_emails() == set()
    assert statuses(emulator) == {"money_ok"}
    for i in range(N):
        member = emulator.audience.member(f"user{i}@example.com")
        assert member is not None
        assert list(member.tags) == ["vip"]
        assert [e.name for e in member.events] == ["credit"]
    # One job for the tags and events that follow the updates; no event looked up.
    assert emulator.calls.count(START) == 1
    assert emulator.calls.count(EVENTS_READ) == 0

    emulator.calls.reset()
    assert sink.push(wanted("money_ok", event=True)).unchanged == N
    assert sink.collect_running().collected == 0
    assert emulator.calls.count() == 0


def test_events_left_running_keep_their_intents_until_collected(
    emulator: Emulator, ledger: PushLedger
) -> None:
    clock = Clock(T0)
    sink, left = pushed_while_held(emulator, ledger, clock, "registered", event=True)
    assert (left.failed, left.events_sent, left.events_unconfirmed) == (0, 0, 0)
    keys = [f"user{i}@example.com" for i in range(N)]
    assert set(ledger.pending_events(keys)) == set(keys)  # the intents stay

    release(emulator)
    clock.now += timedelta(minutes=1)
    collected = sink.collect_running()
    assert (collected.collected, collected.events_sent) == (2 * N, N)  # tags and events
    assert ledger.pending_events(keys) == {}
    assert all(ledger.sent_events(keys)[k] == {"user:credit:1"} for k in keys)
    assert emulator.calls.count(EVENTS_READ) == 0
    assert {len(emulator.audience.member(k).events) for k in keys} == {1}  # type: ignore[union-attr]
    # Sent exactly once: the next push has nothing to send.
    emulator.calls.reset()
    assert sink.push(wanted("registered", event=True)).unchanged == N
    assert emulator.calls.count() == 0


def test_a_job_that_vanished_while_left_running_is_retried_later(
    emulator: Emulator, ledger: PushLedger
) -> None:
    clock = Clock(T0)
    sink, _ = pushed_while_held(emulator, ledger, clock, "money_ok")
    (job,) = [b for b in emulator.batches.batches() if b.pending]
    emulator.batches.delete(job.id)
    emulator.hold_batches = False
    collected = sink.collect_running()
    # It may have run: the updates are transient failures, retried with back-off.
    assert (collected.collected, collected.failed) == (N, N)
    assert not any(f.permanent for f in collected.failures)
    assert ledger.running_emails() == set()
    clock.now += timedelta(days=1)
    assert sink.push(wanted("money_ok")).pushed == N
    assert statuses(emulator) == {"money_ok"}


def test_a_job_running_for_too_long_is_given_up(emulator: Emulator, ledger: PushLedger) -> None:
    clock = Clock(T0)
    sink, _ = pushed_while_held(emulator, ledger, clock, "money_ok")
    clock.now += GIVE_UP - timedelta(minutes=1)
    assert sink.collect_running().collected == 0  # still waited for
    assert len(ledger.running_emails()) == N
    clock.now += timedelta(minutes=2)
    given_up = sink.collect_running()
    assert (given_up.collected, given_up.failed) == (N, N)
    assert ledger.running_emails() == set()
    emulator.hold_batches = False
    clock.now += timedelta(days=1)
    assert sink.push(wanted("money_ok")).pushed == N
    assert statuses(emulator) == {"money_ok"}
