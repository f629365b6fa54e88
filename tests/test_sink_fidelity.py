"""The sink against Mailchimp as it really behaves (issue 12, rows 1, 2, 3, 6).

Each test plays the real behaviour through the emulator (see
``tests/fidelity`` and ``docs/emulator.md`` for the sources) and checks that
the sink survives it: nothing recorded that Mailchimp did not keep, nothing
refused for good that could have gone, every problem visible.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sync.cli import main
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.memory import MemoryLedger
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.subscribe import MEMBER_FIELDS
from sync.payload import EVENT_PROPERTIES_MAX, properties_size
from sync.records import DesiredMember, EventDue
from tests.support.clock import Clock
from tests.support.cycle import NOW
from tests.support.sink import T0
from tests.support.sink import make_sink as sink_for

ROOT = Path(__file__).resolve().parent.parent
READ_TAGS = "GET /lists/{list_id}/merge-fields"
PUT = "PUT /lists/{list_id}/members/{subscriber_hash}"


@pytest.fixture
def emulator(mailchimp_emulator: Emulator) -> Emulator:
    for tag, kind in (("STATUS", "text"), ("SCORE", "number")):
        mailchimp_emulator.audience.add_merge_field({"tag": tag, "name": tag, "type": kind})
    return mailchimp_emulator


def make_sink(emulator: Emulator, ledger: PushLedger, clock: Clock, **config: Any) -> MailchimpSink:
    """The sink of ``tests.support.sink``, polling ``/batches`` briskly."""
    config.setdefault("polling", BatchPolling(first_wait=0.02, max_wait=0.2, deadline=60))
    return sink_for(emulator, ledger, clock, **config)


def people(n: int, **fields: object) -> list[DesiredMember]:
    return [DesiredMember(f"p{i}@x.io", dict(fields)) for i in range(n)]  # type: ignore[arg-type]


def delete_field(emulator: Emulator, tag: str) -> None:
    field = emulator.audience.merge_field(tag)
    assert field is not None
    emulator.audience.delete_merge_field(str(field.merge_id))


# -- row 1: a merge tag the audience does not have ---------------------------------


def test_values_of_a_missing_tag_are_held_back_reported_and_sent_once_it_exists(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    with caplog.at_level(logging.ERROR, logger="sync.mailchimp.merge_tags"):
        summary = sink.push([DesiredMember("a@x.io", {"STATUS": "new", "PLAN": "gold"})])
    # Not a fatal error: the member and its other values went through.
    assert summary.pushed == 1
    assert summary.missing_merge_tags == {"PLAN": 1}
    assert ledger.member_states(["a@x.io"])["a@x.io"].fields == {"STATUS": "new"}
    assert emulator.audience.member("a@x.io").merge_fields == {"STATUS": "new"}  # type: ignore[union-attr]
    (problem,) = ledger.audience_problems()
    assert (problem.tag, problem.members) == ("PLAN", 1)
    assert "merge tag PLAN is not in audience" in caplog.text
    assert any(r.levelno == logging.ERROR and "PLAN" in r.getMessage() for r in caplog.records)

    # The marketer creates the field; once the cached tags are stale, the
    # value goes, is recorded, and the problem is gone.
    emulator.audience.add_merge_field({"tag": "PLAN", "name": "Plan", "type": "text"})
    clock.now += timedelta(minutes=20)
    again = sink.push([DesiredMember("a@x.io", {"STATUS": "new", "PLAN": "gold"})])
    assert again.missing_merge_tags == {}
    assert ledger.member_states(["a@x.io"])["a@x.io"].fields == {"STATUS": "new", "PLAN": "gold"}
    assert ledger.audience_problems() == []


@pytest.mark.parametrize("path", ["create", "put", "batches"])
def test_a_field_deleted_mid_run_is_caught_in_the_answer_and_not_recorded(
    emulator: Emulator, path: str
) -> None:
    """The sink read the tags before the marketer deleted SCORE: Mailchimp
    answers 200 and leaves SCORE out; only what came back is recorded."""
    ledger, clock = MemoryLedger(), Clock(T0)
    n = 12 if path == "batches" else 2
    sink = make_sink(emulator, ledger, clock, bulk_threshold=10)
    if path != "create":
        sink.push(people(n, STATUS="a", SCORE=1))
    # The sink read the tags (SCORE among them) when it was made.
    delete_field(emulator, "SCORE")
    emulator.calls.reset()

    summary = sink.push(people(n, STATUS="b", SCORE=2))

    assert summary.failed == 0
    assert summary.missing_merge_tags == {"SCORE": n}
    states = ledger.member_states([f"p{i}@x.io" for i in range(n)])
    assert all(s.fields.get("STATUS") == "b" for s in states.values())
    assert all(s.fields.get("SCORE") != 2 for s in states.values())
    assert [p.tag for p in ledger.audience_problems()] == ["SCORE"]
    # A dropped tag makes the next push read the audience again, which then
    # holds the values back instead of sending them into the void.
    emulator.calls.reset()
    held = sink.push(people(n, STATUS="b", SCORE=2))
    assert emulator.calls.by_endpoint() == {READ_TAGS: 1}
    assert held.missing_merge_tags == {"SCORE": n}


def test_a_batch_subscribe_asks_for_a_partial_answer(emulator: Emulator) -> None:
    """New members come back whole unless asked otherwise (a few kilobytes
    each from Mailchimp): the sink asks for what it reads, and still sees a
    tag dropped and a member refused in the partial answer."""
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    delete_field(emulator, "SCORE")  # after the sink read the tags
    emulator.audience.seed_member("old@x.io", status="unsubscribed")
    api_client = sink.caller.client.api_client
    sent, send = [], api_client.request

    def request(method: str, url: str, query_params: Any = None, **kwargs: Any) -> Any:
        answer = send(method, url, query_params, **kwargs)
        sent.append((method, url, dict(query_params or []), answer.json()))
        return answer

    api_client.request = request
    summary = sink.push([*people(3, STATUS="a", SCORE=1), DesiredMember("old@x.io", {})])

    ((method, _url, query, answer),) = [c for c in sent if c[1].endswith(emulator.list_id)]
    assert method == "POST"
    assert query["fields"] == (
        "new_members.email_address,new_members.merge_fields,"
        "updated_members.email_address,updated_members.merge_fields,errors"
    )
    assert {frozenset(m) for m in answer["new_members"]} == {
        frozenset({"email_address", "merge_fields"})
    }
    assert [e["email_address"] for e in answer["errors"]] == ["old@x.io"]
    # What the sink made of it: three created, SCORE seen dropped, and the
    # member who exists already updated by the safe upsert.
    assert summary.missing_merge_tags == {"SCORE": 3}
    states = ledger.member_states([f"p{i}@x.io" for i in range(3)])
    assert {s.fields.get("STATUS") for s in states.values()} == {"a"}
    assert all("SCORE" not in s.fields for s in states.values())


@pytest.mark.parametrize("n", [2, 12], ids=["direct-put", "batches"])
def test_updates_ask_for_a_partial_answer_and_still_see_the_status(
    emulator: Emulator, n: int
) -> None:
    """A PUT answers the member whole; the sink asks for what it reads of it
    (the status, the merge values kept) and still learns from the answer
    that a member unsubscribed in Mailchimp, and what it kept."""
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, bulk_threshold=10)
    sink.push(people(n, STATUS="a"))
    emulator.audience.unsubscribe_by_person("p0@x.io")
    api_client = sink.caller.client.api_client
    sent, send = [], api_client.request

    def request(method: str, url: str, query_params: Any = None, **kwargs: Any) -> Any:
        answer = send(method, url, query_params, **kwargs)
        if method == "PUT":
            sent.append((dict(query_params or []), answer.json()))
        return answer

    api_client.request = request
    emulator.calls.reset()
    summary = sink.push(people(n, STATUS="b"))

    if n > 10:
        (job,) = emulator.batches.batches()
        answers = [json.loads(r["response"]) for r in job.results]
        assert all(op.params["fields"] == MEMBER_FIELDS for op in job.operations)
    else:
        assert [query["fields"] for query, _ in sent] == [MEMBER_FIELDS] * n
        answers = [answer for _, answer in sent]
    assert len(answers) == n
    # (``unsubscribe_reason`` only for the unsubscribed, as in Mailchimp.)
    asked = set(MEMBER_FIELDS.split(","))
    assert all({"email_address", "status", "merge_fields"} <= set(a) <= asked for a in answers)
    assert summary.failed == 0
    states = ledger.member_states([f"p{i}@x.io" for i in range(n)])
    assert {s.fields["STATUS"] for s in states.values()} == {"b"}
    (seen,) = ledger.mailchimp_members(["p0@x.io"]).values()
    assert seen.status == "unsubscribed"


def test_the_audience_is_read_once_per_ttl_not_once_per_push(emulator: Emulator) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, merge_fields_ttl=timedelta(minutes=15))
    # Read once when the sink was made, at T0.
    for minute, status in enumerate(("a", "b", "c")):
        clock.now = T0 + timedelta(minutes=minute)
        sink.push([DesiredMember("a@x.io", {"STATUS": status})])
    assert emulator.calls.count(READ_TAGS) == 0
    clock.now = T0 + timedelta(minutes=16)
    sink.push([DesiredMember("a@x.io", {"STATUS": "d"})])
    assert emulator.calls.count(READ_TAGS) == 1


# -- row 2: required merge fields on updates ------------------------------------


@pytest.mark.parametrize("n", [2, 12], ids=["direct-put", "batches"])
@pytest.mark.parametrize("skip", [True, False], ids=["skip", "no-skip"])
def test_updates_carry_skip_merge_validation(emulator: Emulator, n: int, skip: bool) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock, bulk_threshold=10, skip_merge_validation=skip)
    sink.push(people(n, STATUS="a"))
    # A marketer makes a new field required: the members have no value for it.
    emulator.audience.add_merge_field(
        {"tag": "CONSENT", "name": "Consent", "type": "text", "required": True}
    )
    summary = sink.push(people(n, STATUS="b"))
    if skip:
        assert summary.failed == 0
        assert all(m.merge_fields["STATUS"] == "b" for m in emulator.audience.members())
    else:
        assert summary.failed == n
        assert all("Please enter a value" in f.reason for f in ledger.failures())
    if n > 10:
        (job,) = emulator.batches.batches()
        wanted = {"skip_merge_validation": "true"} if skip else {}
        # The query of each operation, with the partial answer it asks for.
        wanted["fields"] = MEMBER_FIELDS
        assert all(dict(op.params) == wanted for op in job.operations)


# -- row 3: event properties ------------------------------------------------------


def test_oversize_event_properties_are_shortened_with_a_warning_never_dropped(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    story = EventDue("k1", "told", T0, {"title": "short", "story": "y" * 3000})
    member = DesiredMember("a@x.io", {"STATUS": "a"}, events=(story,))
    with caplog.at_level(logging.WARNING, logger="sync.mailchimp.push_plan"):
        summary = sink.push([member])
    assert summary.events_sent == 1
    (received,) = emulator.audience.events("a@x.io")
    assert properties_size(received.properties) <= EVENT_PROPERTIES_MAX
    assert received.properties["title"] == "short"
    assert received.properties["story"].startswith("yyy")
    assert any(
        r.levelno == logging.WARNING and "told" in r.getMessage() and "story" in r.getMessage()
        for r in caplog.records
    )
    # Recorded sent under its shortened form: never sent again.
    emulator.calls.reset()
    assert sink.push([member]).events_sent == 0
    assert emulator.audience.events("a@x.io") == [received]


# -- row 6: values that are not JSON --------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("path", ["create", "update"])
def test_a_value_that_is_not_json_fails_that_member_only(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, bad: float, path: str
) -> None:
    ledger, clock = MemoryLedger(), Clock(T0)
    sink = make_sink(emulator, ledger, clock)
    if path == "update":
        sink.push(people(3, STATUS="a", SCORE=1))
    desired = people(3, STATUS="b", SCORE=2)
    desired[1] = DesiredMember("p1@x.io", {"STATUS": "b", "SCORE": bad})
    with caplog.at_level(logging.ERROR, logger="sync.mailchimp.sink"):
        summary = sink.push(desired)
    # The others went through whole; the bad member's other values too.
    assert summary.invalid_values == 1
    assert [f.email for f in summary.failures] == ["p1@x.io"]
    (failure,) = ledger.failures()
    assert failure.permanent
    assert "SCORE" in failure.reason
    assert repr(bad) in failure.reason
    assert "p1@x.io" in caplog.text
    members = {m.email_address: m for m in emulator.audience.members()}
    assert members["p0@x.io"].merge_fields == {"STATUS": "b", "SCORE": 2}
    assert members["p1@x.io"].merge_fields["STATUS"] == "b"
    assert members["p1@x.io"].merge_fields.get("SCORE") != 2
    # The same desired state is not pushed (nor reported) again every cycle.
    emulator.calls.reset()
    again = sink.push(desired)
    assert emulator.calls.count(PUT) == 0
    assert again.failed == 0
    assert [f.email for f in ledger.failures()] == ["p1@x.io"]


# -- end to end: `mailsync once` then `mailsync status` -------------------------


def test_a_missing_merge_field_shows_in_status(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_url: str,
    mailchimp_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The audience has every field the shipped rules push but MMERGE3 (a
    marketer deleted it): the cycle goes on, and status says what is wrong."""
    load_demo(sqlite_url, "blousebrothers", users=20, seed=2, now=NOW)
    for tag in ("MMERGE25", "MMERGE28"):
        mailchimp_emulator.audience.add_merge_field({"tag": tag, "name": tag, "type": "text"})
    config = tmp_path / "mailsync.yaml"
    config.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {sqlite_url}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
        f"mailchimp:\n  list_id: {DEFAULT_LIST_ID}\n  base_url: {mailchimp_emulator.url}\n"
    )
    monkeypatch.setenv("MAILCHIMP_API_KEY", DEFAULT_API_KEY)
    at = NOW.isoformat()
    assert main(["once", "--config", str(config), "--at", at]) == 0
    assert "merge tags missing from the audience (values not kept): MMERGE3 20" in (
        capsys.readouterr().out
    )
    assert len(mailchimp_emulator.audience.members()) == 20
    assert main(["status", "--config", str(config), "--at", at]) == 0
    out = capsys.readouterr().out
    assert "AUDIENCE PROBLEMS: 1 merge tag(s) missing from the audience" in out
    # Stamped by the sink's clock (the wall clock here, not `--at`).
    assert re.search(r"MMERGE3: since \S+, 20 value\(s\) not kept", out)
    assert main(["status", "--config", str(config), "--at", at, "--json"]) == 0
    (problem,) = json.loads(capsys.readouterr().out)["audience_problems"]
    assert (problem["merge_tag"], problem["values_not_kept"]) == ("MMERGE3", 20)

    # The marketer creates the field again: the next full pass (every
    # `daemon.full_rescan`) sends the values held back, which were never
    # counted as accepted, and the problem goes.
    mailchimp_emulator.audience.add_merge_field({"tag": "MMERGE3", "name": "x", "type": "text"})
    assert main(["once", "--config", str(config), "--at", at, "--full"]) == 0
    capsys.readouterr()
    assert all("MMERGE3" in m.merge_fields for m in mailchimp_emulator.audience.members())
    assert main(["status", "--config", str(config), "--at", at, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["audience_problems"] == []
