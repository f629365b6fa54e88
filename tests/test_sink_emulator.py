"""The sink against the Mailchimp emulator, through the official client over HTTP."""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sync.emulator import Emulator, FaultKind
from sync.exceptions import FatalError
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.dryrun import DryRunSink
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.memory import MemoryLedger
from sync.mailchimp.sink_config import JOB_SIZE
from sync.records import DesiredMember, EventDue
from sync.state.store import StateStore
from tests.support.clock import Clock
from tests.support.sink import T0, make_sink


@pytest.fixture
def emulator(mailchimp_emulator: Emulator) -> Emulator:
    for tag, kind in (("STATUS", "text"), ("CODE", "text"), ("SCORE", "number")):
        mailchimp_emulator.audience.add_merge_field({"tag": tag, "name": tag, "type": kind})
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


def members(n: int, status: str = "registered", **extra: Any) -> list[DesiredMember]:
    return [
        DesiredMember(
            email=f"User{i}@Example.com", merge_fields={"STATUS": status, "SCORE": i}, **extra
        )
        for i in range(n)
    ]


def test_full_push_costs_ceil_n_over_500_calls_then_nothing(
    emulator: Emulator, ledger: PushLedger
) -> None:
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    n = 1203
    summary = sink.push(members(n))
    assert summary.pushed == n
    assert summary.failed == 0
    assert emulator.calls.count() == math.ceil(n / 500)
    assert emulator.calls.by_endpoint() == {"POST /lists/{list_id}": 3}
    assert summary.calls == {"success": 3}
    m = emulator.audience.member("user7@example.com")
    assert m is not None
    assert m.status == "subscribed"
    assert m.merge_fields["STATUS"] == "registered"
    assert emulator.calls.peak_in_flight <= 9

    # Every call of the push is in the log once push() returns: no waiting.
    emulator.calls.reset()
    again = sink.push(members(n))
    assert again.unchanged == n
    assert emulator.calls.count() == 0


def _parts_watched(monkeypatch: pytest.MonkeyPatch, fail_part: int | None = None) -> list[str]:
    """Parts of 300 members; what the push did, in order: "plan k" when it
    planned part k, "create n" when a batch subscribe of n members left.
    From part 3 on, planning waits (5 s at most) for a subscribe to leave."""
    from sync.mailchimp import push_plan, subscribe
    from sync.mailchimp.client import batch_subscribe

    monkeypatch.setattr(push_plan, "PART_SIZE", 300)
    order: list[str] = []
    sent = threading.Event()
    plan_part = push_plan._plan_part

    def watched_plan(*args: Any, **kwargs: Any) -> Any:
        number = sum(1 for step in order if step.startswith("plan")) + 1
        if number >= 3:
            sent.wait(timeout=5)
        order.append(f"plan {number}")
        if number == fail_part:
            raise RuntimeError("the state store went away (injected)")
        return plan_part(*args, **kwargs)

    def watched_subscribe(client: Any, list_id: str, body: Any, query: Any) -> Any:
        order.append(f"create {len(body['members'])}")
        sent.set()
        return batch_subscribe(client, list_id, body, query)

    monkeypatch.setattr(push_plan, "_plan_part", watched_plan)
    monkeypatch.setattr(subscribe, "batch_subscribe", watched_subscribe)
    return order


def test_a_push_sends_its_first_part_while_it_plans_the_next(
    emulator: Emulator, ledger: PushLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push is planned a part at a time and its batch subscribes leave as
    soon as 500 members are planned; parts cost no more calls than one plan
    (only full batches leave before the last part)."""
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    order = _parts_watched(monkeypatch)
    summary = sink.push(members(1203))
    assert summary.pushed == summary.considered == 1203
    # Parts of 300: the first 500 planned by part 2, sent before part 3 is planned.
    assert order.index("create 500") < order.index("plan 3")
    assert sorted(step for step in order if step.startswith("create")) == [
        "create 203",
        "create 500",
        "create 500",
    ]
    assert emulator.calls.by_endpoint() == {"POST /lists/{list_id}": 3}
    assert len(emulator.audience.members()) == 1203


def test_a_push_whose_planning_fails_records_what_it_had_sent(
    emulator: Emulator, ledger: PushLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning part 3 fails after the first batch subscribe left: its
    answer is recorded before the error goes up, so the next push creates
    only the others (no member is sent twice)."""
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    _parts_watched(monkeypatch, fail_part=3)
    with pytest.raises(RuntimeError, match="injected"):
        sink.push(members(1203))
    assert len(emulator.audience.members()) == 500
    monkeypatch.undo()
    clock.now = T0 + timedelta(minutes=1)
    summary = sink.push(members(1203))
    assert summary.pushed == 703
    assert summary.unchanged == 500
    assert emulator.calls.by_endpoint() == {"POST /lists/{list_id}": 1 + 2}


def test_only_changed_fields_are_sent_and_empty_zero_false_are_values(
    emulator: Emulator,
) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    sink.push([DesiredMember("a@x.io", {"STATUS": "registered", "CODE": "welcome", "SCORE": 5})])
    # Someone edits STATUS in Mailchimp: the sink must not send it (unchanged for us).
    seen = emulator.audience.member("a@x.io")
    assert seen is not None
    seen.merge_fields["STATUS"] = "edited-by-hand"
    emulator.calls.reset()
    sink.push([DesiredMember("a@x.io", {"STATUS": "registered", "CODE": "", "SCORE": 0})])
    (call,) = emulator.calls.calls()
    assert call.endpoint == "PUT /lists/{list_id}/members/{subscriber_hash}"
    m = emulator.audience.member("a@x.io")
    assert m is not None
    assert m.merge_fields["STATUS"] == "edited-by-hand"
    assert m.merge_fields["CODE"] == ""
    assert m.merge_fields["SCORE"] in (0, "0")
    assert m.status == "subscribed"
    emulator.calls.reset()
    sink.push([DesiredMember("a@x.io", {"STATUS": "registered", "CODE": "", "SCORE": 0})])
    assert emulator.calls.count() == 0


def test_existing_members_keep_their_status(emulator: Emulator) -> None:
    for email, status in (
        ("u@x.io", "unsubscribed"),
        ("p@x.io", "pending"),
        ("c@x.io", "cleaned"),
        ("t@x.io", "transactional"),
    ):
        emulator.audience.seed_member(email, status=status)
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    emails = ("u@x.io", "p@x.io", "c@x.io", "t@x.io", "new@x.io")
    wanted = [DesiredMember(e, {"STATUS": "money_ok"}) for e in emails]
    summary = sink.push(wanted)
    assert summary.failed == 0
    found = {e: emulator.audience.member(e) for e in emails}
    statuses = {e: member.status for e, member in found.items() if member is not None}
    assert statuses == {
        "u@x.io": "unsubscribed",
        "p@x.io": "pending",
        "c@x.io": "cleaned",
        "t@x.io": "transactional",
        "new@x.io": "subscribed",
    }
    assert all(
        emulator.audience.member(w.email).merge_fields["STATUS"] == "money_ok"  # type: ignore[union-attr]
        for w in wanted
    )


def test_status_if_new_is_configurable(emulator: Emulator) -> None:
    sink = make_sink(emulator, MemoryLedger(), Clock(T0), status_if_new="pending")
    sink.push([DesiredMember("n@x.io", {"STATUS": "x"})])
    assert emulator.audience.member("n@x.io").status == "pending"  # type: ignore[union-attr]


def test_permanent_failures_are_isolated_recorded_and_not_retried(
    emulator: Emulator, ledger: PushLedger
) -> None:
    emulator.audience.mark_compliance("comp@x.io")
    emulator.audience.mark_fake("fake@x.io")
    emulator.audience.forget("gone@x.io")
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock, permanent_backoff=timedelta(days=3))
    event = EventDue("k1", "welcome", T0)
    batch = [
        *members(497),
        *(
            DesiredMember(e, {"STATUS": "registered"}, events=(event,))
            for e in ("comp@x.io", "fake@x.io", "gone@x.io")
        ),
    ]
    summary = sink.push(batch)
    assert summary.pushed == 497
    assert {f.email: f.reason.split(":")[0] for f in summary.failures} == {
        "comp@x.io": "create",
        "fake@x.io": "create",
        "gone@x.io": "create",
    }
    assert all(f.permanent for f in ledger.failures())
    assert "compliance" in ledger.failures()[0].reason.lower()
    assert emulator.audience.events() == []  # no event for a member whose fields failed
    assert emulator.calls.count() == 1

    emulator.calls.reset()
    clock.now += timedelta(hours=1)
    held = sink.push(batch)
    assert held.held_back == 3
    assert emulator.calls.count() == 0

    # A change of the desired data tries again at once (after reading the
    # audience's merge tags again: an hour is longer than `merge_fields_ttl`)...
    sink.push([DesiredMember("comp@x.io", {"STATUS": "money_ok"})])
    assert emulator.calls.by_endpoint() == {
        "GET /lists/{list_id}/merge-fields": 1,
        "POST /lists/{list_id}": 1,
    }
    # ...and so does the same data after the back-off (the audience's merge
    # tags, older than `merge_fields_ttl` by then, are read again first).
    emulator.calls.reset()
    clock.now += timedelta(days=3)
    sink.push(batch)
    assert emulator.calls.by_endpoint() == {
        "GET /lists/{list_id}/merge-fields": 1,
        "POST /lists/{list_id}": 1,
    }
    (fake,) = [f for f in ledger.failures() if f.email == "fake@x.io"]
    assert fake.attempts == 2


def test_events_once_after_fields_and_tags_diff(emulator: Emulator, ledger: PushLedger) -> None:
    clock = Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    emulator.audience.seed_member("old@x.io", tags=["churn", "not-managed"])
    e1 = EventDue("user:1:credit:2026-03-01", "credit", T0, {"amount": "10"})
    who = [
        DesiredMember(
            "new@x.io",
            {"CODE": "credit"},
            tags=frozenset({"vip"}),
            managed_tags=frozenset({"vip", "churn"}),
            events=(e1,),
        ),
        DesiredMember(
            "old@x.io",
            {"CODE": "credit"},
            tags=frozenset({"vip"}),
            managed_tags=frozenset({"vip", "churn"}),
            events=(e1, e1),
        ),
    ]
    summary = sink.push(who)
    assert summary.failed == 0
    assert summary.events_sent == 2
    assert [e.name for _, e in emulator.audience.received_events()] == ["credit", "credit"]
    assert set(emulator.audience.member("old@x.io").tags) == {"vip", "not-managed"}  # type: ignore[union-attr]
    assert set(emulator.audience.member("new@x.io").tags) == {"vip"}  # type: ignore[union-attr]
    order = [c.endpoint for c in emulator.calls.calls()]
    assert order.index("POST /lists/{list_id}/members/{subscriber_hash}/events") > order.index(
        "PUT /lists/{list_id}/members/{subscriber_hash}"
    )

    emulator.calls.reset()
    clock.now += timedelta(minutes=5)
    e2 = EventDue("user:1:credit:2026-03-02", "credit", clock.now)
    again = sink.push(
        [DesiredMember(w.email, w.merge_fields, w.tags, w.managed_tags, (e1, e2)) for w in who]
    )
    assert again.events_sent == 2
    assert emulator.calls.by_endpoint() == {
        "POST /lists/{list_id}/members/{subscriber_hash}/events": 2
    }
    assert len(emulator.audience.events()) == 4


START = "POST /batches"
POLL = "GET /batches/{batch_id}"
DOWNLOAD = "GET /batch-results/{batch_id}.tar.gz"
PUT = "PUT /lists/{list_id}/members/{subscriber_hash}"


def polling() -> BatchPolling:
    # Real sleeps, but short: the emulator finishes a job in milliseconds.
    return BatchPolling(first_wait=0.05, max_wait=0.4, deadline=60)


def polls_within(policy: BatchPolling, elapsed: float) -> int:
    """The most polls of one job that ``policy``'s backoff makes in
    ``elapsed`` seconds (the first after ``first_wait``, each wait doubling
    up to ``max_wait``): a bound that follows the machine's load, where a
    fixed count fails when a loaded machine runs the job slowly."""
    waited, wait, polls = 0.0, policy.first_wait, 0
    while waited < elapsed:
        waited += wait
        wait = min(wait * 2, policy.max_wait)
        polls += 1
    return max(polls, 1)


@pytest.mark.parametrize(
    ("n", "job_size"),
    [
        (40, JOB_SIZE),
        pytest.param(1200, JOB_SIZE, id="1200-in-one-job"),
        pytest.param(1200, 500, id="1200-in-jobs-of-500"),
    ],
)
def test_changed_existing_members_go_through_batches(
    emulator: Emulator, ledger: PushLedger, n: int, job_size: int
) -> None:
    clock = Clock(T0)
    policy = polling()
    sink = make_sink(emulator, ledger, clock, polling=policy, job_size=job_size)
    sink.push(members(n))
    # Two members whose update Mailchimp refuses, each for its own reason.
    emulator.audience.forget("user3@example.com")
    desired = members(n, status="registered_H24")
    desired[5] = DesiredMember("User5@Example.com", {"STATUS": "registered_H24", "SCORE": "lots"})
    emulator.calls.reset()

    started = time.monotonic()
    summary = sink.push(desired)
    elapsed = time.monotonic() - started

    jobs = math.ceil(n / job_size)
    calls = emulator.calls
    polls = calls.count(POLL)
    assert calls.count(START) == jobs
    assert calls.count(DOWNLOAD) == jobs
    # The first poll usually finds the job done; never more than the backoff.
    assert jobs <= polls <= jobs * polls_within(policy, elapsed)
    assert calls.count() == 2 * jobs + polls
    assert calls.by_outcome() == {"200": calls.count()}
    assert calls.count(PUT) == 0
    assert calls.operation_count(PUT) == n
    assert sorted(calls.operations_by_batch().values()) == sorted(
        min(job_size, n - job_size * j) for j in range(jobs)
    )
    assert summary.calls == {"success": calls.count()}
    print(f"\nN={n}: {calls.count()} API calls ({jobs} starts, {polls} polls, {jobs} downloads)")

    # Mailchimp has what was accepted...
    assert summary.pushed == n - 2
    for i in range(n):
        member = emulator.audience.member(f"user{i}@example.com")
        if i == 3:
            assert member is None
            continue
        assert member is not None
        assert member.status == "subscribed"
        assert member.merge_fields["STATUS"] == ("registered" if i == 5 else "registered_H24")
    # ...and the ledger records exactly that, and why the two others failed.
    keys = [f"user{i}@example.com" for i in range(n)]
    states = ledger.member_states(keys)
    assert {k for k, st in states.items() if st.fields["STATUS"] == "registered_H24"} == set(
        keys
    ) - {"user3@example.com", "user5@example.com"}
    assert states["user5@example.com"].fields == {"STATUS": "registered", "SCORE": 5}
    reasons = {f.email: f.reason for f in summary.failures}
    assert set(reasons) == {"user3@example.com", "user5@example.com"}
    assert "Forgotten Email Not Subscribed" in reasons["user3@example.com"]
    assert "SCORE" in reasons["user5@example.com"]
    assert all(f.permanent for f in ledger.failures())

    # Nothing changed since: nothing is sent, not even for the two refused.
    emulator.calls.reset()
    again = sink.push(desired)
    assert (again.unchanged, again.held_back) == (n - 2, 2)
    assert emulator.calls.count() == 0


def test_batches_tags_and_events_with_slow_jobs_and_faults(emulator: Emulator) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, polling=polling())
    n = 12
    sink.push(members(n))
    emulator.calls.reset()
    # Jobs stay pending, then started, for a while: the sink polls through that.
    emulator.batch_delay = 0.15
    emulator.faults.script("/batches", FaultKind.UNAVAILABLE_HTML, method="POST")
    emulator.faults.script("/batches/*", FaultKind.SERVER_ERROR, method="GET")
    emulator.faults.script("/batch-results/*", FaultKind.RESET)
    event = EventDue("user:credit:1", "credit", T0, {"amount": "10"})
    wanted = [
        DesiredMember(
            m.email,
            {"STATUS": "money_ok", "SCORE": i},
            tags=frozenset({"vip"}),
            managed_tags=frozenset({"vip"}),
            events=(event,),
        )
        for i, m in enumerate(members(n))
    ]
    summary = sink.push(wanted)
    assert summary.failed == 0
    assert summary.pushed == n
    assert summary.events_sent == n
    # Two jobs: merge fields first, then tags and events of the accepted members.
    calls = emulator.calls
    assert calls.count(START, outcome=200) == 2
    assert calls.count(DOWNLOAD, outcome=200) == 2
    assert calls.count(POLL, outcome=200) > 2  # pending and started were seen
    assert [c.fault for c in calls.calls() if c.fault] == ["503-html", "500", "reset"]
    assert calls.operation_count() == 3 * n
    for m in members(n):
        seen = emulator.audience.member(m.email)
        assert seen is not None
        assert seen.merge_fields["STATUS"] == "money_ok"
        assert list(seen.tags) == ["vip"]
        assert [e.name for e in seen.events] == ["credit"]
    emulator.calls.reset()
    assert sink.push(wanted).unchanged == n
    assert emulator.calls.count() == 0


def test_a_vanished_batch_job_is_retried_later_not_fatal(emulator: Emulator) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, polling=polling())
    sink.push(members(20))
    emulator.hold_batches = True

    def delete_the_job() -> None:
        while not emulator.batches.batches():
            time.sleep(0.01)
        emulator.batches.delete(emulator.batches.batches()[0].id)

    deleter = threading.Thread(target=delete_the_job)
    deleter.start()
    summary = sink.push(members(20, status="later"))
    deleter.join()
    # Not "unknown audience": the members are transient failures, retried later.
    assert summary.failed == 20
    assert not any(f.permanent for f in summary.failures)
    assert all("not found" in f.reason.lower() for f in summary.failures)
    emulator.hold_batches = False
    clock.now += timedelta(days=2)
    assert sink.push(members(20, status="later")).pushed == 20
    assert emulator.audience.member("user1@example.com").merge_fields["STATUS"] == "later"  # type: ignore[union-attr]


def test_changed_members_beyond_the_threshold_fall_back_without_batches_endpoint(
    emulator: Emulator,
) -> None:
    # A proxy that does not forward /batches: it answers 404 there.
    emulator.serve_batches = False
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, bulk_threshold=10)
    sink.push(members(40))
    emulator.calls.reset()
    summary = sink.push(members(40, status="registered_H24"))
    assert summary.pushed == 40
    put = "PUT /lists/{list_id}/members/{subscriber_hash}"
    # One 404, then direct PUTs.
    assert emulator.calls.count(put, outcome=200) == 40
    assert emulator.calls.count(outcome=404) == 1
    assert emulator.calls.count() == 41
    assert emulator.calls.peak_in_flight <= 9


def test_faults_are_retried_and_the_key_never_reaches_the_logs(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.timeout_hold = 0.6
    emulator.faults.script("/lists/*", FaultKind.TOO_MANY_REQUESTS, times=2, method="POST")
    emulator.faults.script("/lists/*", FaultKind.FORBIDDEN_EMPTY, times=1, method="POST")
    emulator.faults.script("/lists/*/members/*", FaultKind.UNAVAILABLE_HTML, times=2)
    emulator.faults.script("/lists/*/members/*", FaultKind.TIMEOUT, times=1)
    emulator.faults.script("/lists/*/members/*", FaultKind.RESET, times=1)
    emulator.faults.script("/lists/*/members/*/events", FaultKind.TOO_MANY_REQUESTS_EMPTY, times=2)
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, timeout=0.3)
    with caplog.at_level(logging.DEBUG):
        sink.push(members(30))
        emulator.audience.seed_member("seed@x.io", status="unsubscribed")
        ev = EventDue("k", "credit", T0)
        summary = sink.push(
            [
                *members(5, status="money_ok"),
                DesiredMember("seed@x.io", {"STATUS": "x"}, events=(ev,)),
            ]
        )
    assert summary.failed == 0
    assert summary.calls.get("transient", 0) >= 4
    assert len(emulator.audience.events("seed@x.io")) == 1
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) >= 6
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert emulator.api_key not in logged
    assert emulator.api_key.split("-")[0] not in logged


def test_random_faults_converge(emulator: Emulator) -> None:
    emulator.faults.set_random(0.2, seed=7, kinds=["429", "503-html", "500", "403-empty"])
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    summary = sink.push(members(60))
    emulator.faults.clear()
    clock.now += timedelta(days=2)
    sink.push(members(60))
    assert summary.considered == 60
    assert len(emulator.audience.members()) == 60
    assert ledger.failures() == []


def test_fatal_answers_stop_the_run(emulator: Emulator) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    emulator.faults.script("/lists/*", FaultKind.FORBIDDEN_JSON, times=1, method="POST")
    with pytest.raises(FatalError, match="403"):
        sink.push(members(3))
    assert ledger.member_states(["user0@example.com"]) == {}
    assert ledger.failures() == []


def test_dry_run_sends_and_records_nothing(emulator: Emulator) -> None:
    ledger = MemoryLedger()
    out = io.StringIO()
    dry = DryRunSink(ledger, out, clock=Clock(T0))
    summary = dry.push(
        [
            DesiredMember(
                "a@x.io",
                {"STATUS": "x", "SCORE": 0},
                tags=frozenset({"vip"}),
                events=(EventDue("k", "credit", T0),),
            )
        ]
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["dry_run"] is True
    assert "DRY RUN" in lines[0]["note"]
    assert lines[1]["merge_fields"] == {"STATUS": "x", "SCORE": 0}
    assert lines[1]["tags"] == {"add": ["vip"], "remove": []}
    assert lines[1]["events"][0]["name"] == "credit"
    assert summary.dry_run
    assert summary.lines()[0].startswith("DRY RUN")
    assert ledger.member_states(["a@x.io"]) == {}
    assert emulator.calls.count() == 0
