"""The PushLedger contract, run on MemoryLedger, SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.mailchimp.ledger import (
    AcceptedPush,
    AudienceProblem,
    PushFailure,
    PushLedger,
    RunningOperation,
    SentEvent,
)

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_unknown_members_are_absent(ledger: PushLedger) -> None:
    assert ledger.member_states(["nobody@example.com"]) == {}


def test_accepted_fields_merge_and_keep_types(ledger: PushLedger) -> None:
    ledger.record_accepted("Ann@Example.com", {"A": "x", "N": 0, "B": False}, None, T0)
    ledger.record_accepted("ann@example.com", {"A": "", "F": 1.5}, None, T0 + timedelta(hours=1))
    state = ledger.member_states(["ANN@example.com "])["ann@example.com"]
    assert dict(state.fields) == {"A": "", "N": 0, "B": False, "F": 1.5}
    assert state.fields["N"] == 0
    assert not isinstance(state.fields["N"], str)
    assert state.fields["B"] is False
    assert state.pushed_at == T0 + timedelta(hours=1)
    assert state.tags == frozenset()
    assert state.failure is None


def test_tags_replace_only_when_given(ledger: PushLedger) -> None:
    ledger.record_accepted("a@x.io", {}, frozenset({"vip", "new"}), T0)
    ledger.record_accepted("a@x.io", {"A": "1"}, None, T0)
    assert ledger.member_states(["a@x.io"])["a@x.io"].tags == {"vip", "new"}
    ledger.record_accepted("a@x.io", {}, frozenset({"vip"}), T0)
    assert ledger.member_states(["a@x.io"])["a@x.io"].tags == {"vip"}


def test_bulk_accept_with_duplicates(ledger: PushLedger) -> None:
    ledger.record_accepted_many(
        [
            AcceptedPush("b@x.io", {"A": "1"}, T0),
            AcceptedPush("B@x.io", {"A": "2", "C": "3"}, T0 + timedelta(seconds=1)),
            *(AcceptedPush(f"m{i}@x.io", {"S": i}, T0) for i in range(1200)),
        ]
    )
    states = ledger.member_states([f"m{i}@x.io" for i in range(1200)] + ["b@x.io"])
    assert len(states) == 1201
    assert states["b@x.io"].fields == {"A": "2", "C": "3"}
    assert states["m1199@x.io"].fields == {"S": 1199}


def test_failures_count_attempts_per_fingerprint_and_clear_on_accept(ledger: PushLedger) -> None:
    fail = PushFailure("c@x.io", "Member In Compliance State", True, T0, "fp1")
    ledger.record_failure(fail)
    ledger.record_failure(fail)
    (only,) = ledger.failures()
    assert only.attempts == 2
    assert only.permanent
    assert only.email == "c@x.io"
    ledger.record_failure(PushFailure("C@x.io", "other", True, T0, "fp2"))
    assert ledger.failures()[0].attempts == 1
    assert ledger.member_states(["c@x.io"])["c@x.io"].pushed_at is None
    assert ledger.member_states(["c@x.io"])["c@x.io"].failure is not None
    retry = T0 + timedelta(minutes=5)
    ledger.record_failures([PushFailure("d@x.io", "429", False, T0, "fp", next_retry_at=retry)])
    assert [f.email for f in ledger.failures(permanent=True)] == ["c@x.io"]
    assert ledger.failures(permanent=False)[0].next_retry_at == retry
    ledger.record_accepted("c@x.io", {"A": "1"}, None, T0)
    assert [f.email for f in ledger.failures()] == ["d@x.io"]
    assert ledger.member_states(["c@x.io"])["c@x.io"].failure is None


def test_events_are_recorded_once(ledger: PushLedger) -> None:
    ledger.record_event_sent("E@x.io", "k1", "signup", T0)
    ledger.record_event_sent("e@x.io", "k1", "signup", T0 + timedelta(days=1))
    ledger.record_events_sent([SentEvent("e@x.io", "k2", "credit", T0)] * 2)
    assert ledger.sent_event_keys("e@X.io", ["k1", "k2", "k3"]) == {"k1", "k2"}
    assert ledger.sent_events(["e@x.io", "f@x.io"]) == {"e@x.io": {"k1", "k2"}}
    assert ledger.sent_event_keys("f@x.io", ["k1"]) == set()


def test_the_first_record_of_a_sent_event_is_kept(ledger: PushLedger) -> None:
    # Its signature is what a reconciliation matches in Mailchimp: a second
    # record of the same key (a retried write) must not replace it.
    ledger.record_events_sent([SentEvent("e@x.io", "k1", "credit", T0, "first")])
    later = T0 + timedelta(hours=1)
    ledger.record_events_sent(
        [SentEvent("e@x.io", "k1", "credit", later, "second"), SentEvent("e@x.io", "k2", "x", T0)]
    )
    assert ledger.sent_event_signatures(["e@x.io"]) == {"e@x.io": ["first"]}
    assert ledger.sent_events(["e@x.io"]) == {"e@x.io": {"k1", "k2"}}


def test_naive_instants_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AcceptedPush("a@x.io", {}, datetime(2026, 1, 1))


def test_audience_problems_keep_the_first_sighting_until_cleared(ledger: PushLedger) -> None:
    later = T0 + timedelta(hours=1)
    ledger.record_audience_problems([AudienceProblem("SCORE", "deleted", 3, T0)])
    ledger.record_audience_problems(
        [AudienceProblem("SCORE", "still missing", 5, later), AudienceProblem("PLAN", "x", 1, T0)]
    )
    found = {p.tag: p for p in ledger.audience_problems()}
    assert [p.tag for p in ledger.audience_problems()] == ["PLAN", "SCORE"]
    score = found["SCORE"]
    assert (score.reason, score.members, score.seen_at, score.first_seen_at) == (
        "still missing",
        5,
        later,
        T0,
    )
    ledger.clear_audience_problems(["SCORE", "NEVER"])
    assert [p.tag for p in ledger.audience_problems()] == ["PLAN"]


def test_jobs_left_running_are_kept_by_job_until_forgotten(ledger: PushLedger) -> None:
    later = T0 + timedelta(minutes=5)
    assert ledger.running_operations() == {}
    assert ledger.running_emails() == set()
    ledger.record_running(
        [
            RunningOperation("job-2", "event:0:b@x.io", "B@x.io", "event", "{}", later),
            RunningOperation("job-1", "upsert:a@x.io", "A@X.io", "upsert", '{"a": 1}', T0),
            RunningOperation("job-1", "upsert:b@x.io", "b@x.io", "upsert", "{}", T0),
        ]
    )
    jobs = ledger.running_operations()
    assert list(jobs) == ["job-1", "job-2"]  # the oldest first
    assert [(o.operation_id, o.email, o.plan_json) for o in jobs["job-1"]] == [
        ("upsert:a@x.io", "a@x.io", '{"a": 1}'),
        ("upsert:b@x.io", "b@x.io", "{}"),
    ]
    assert jobs["job-2"][0].submitted_at == later
    assert ledger.running_emails() == {"a@x.io", "b@x.io"}
    assert ledger.running_emails(["A@x.io", "c@x.io"]) == {"a@x.io"}
    assert ledger.running_batches() == {"job-1", "job-2"}
    ledger.forget_running("job-1")
    assert list(ledger.running_operations()) == ["job-2"]
    assert ledger.running_batches() == {"job-2"}
    assert ledger.running_emails() == {"b@x.io"}
    ledger.forget_running("never")
    ledger.forget_running("job-2")
    assert ledger.running_operations() == {}
    assert ledger.running_batches() == set()


def test_look_ups_find_addresses_with_quotes_commas_and_braces(ledger: PushLedger) -> None:
    """PostgreSQL looks many addresses up as one array parameter: characters
    that mean something in an array's text (quotes, commas, braces,
    backslashes, spaces) must come back as they went in."""
    odd = ['"quoted"@x.io', "o'neil@x.io", "a,b@x.io", "{brace}@x.io", "back\\slash@x.io"]
    ledger.record_accepted_many([AcceptedPush(e, {"A": e}, T0) for e in odd])
    ledger.record_events_sent([SentEvent(e, "k", "welcome", T0) for e in odd])
    states = ledger.member_states([*odd, "absent@x.io"])
    assert sorted(states) == sorted(odd)
    assert all(states[e].fields == {"A": e} for e in odd)
    assert ledger.sent_events(odd) == {e: {"k"} for e in odd}
