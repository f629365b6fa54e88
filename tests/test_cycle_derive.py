"""The daemon derives, diffs and pushes the difference (issue 11).

Each test runs on SQLite and PostgreSQL application databases against the
emulator, through ``run_once`` (what ``mailsync once`` and ``run`` call). They
pin the behaviours that tracking changes got wrong: a dry run that lost data,
late rows skipped, a rules reload that re-evaluated nobody, an address change
that created a second member, and a burst of past events on going live.
"""

from __future__ import annotations

import io
import math
import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.daemon.config import Config, DaemonConfig, MailchimpConfig
from sync.daemon.diff import Differ
from sync.daemon.once import run_once
from sync.daemon.runtime import build_runtime
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID
from sync.evaluate.engine import evaluate
from sync.exceptions import FatalError
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields
from sync.mailchimp.caller import Caller
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.dryrun import DryRunSink
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.rules.schema import load_rules
from tests.support.clock import Clock
from tests.support.cycle import NOW, audience_fields, expected_members
from tests.support.sink import BRISK_POLLING

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bb(db_url, tmp_path, mailchimp_emulator):
    """BlouseBrothers demo data and a factory of runtimes on it."""
    load_demo(db_url, "blousebrothers", users=120, seed=11, now=NOW)
    state = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path}/state.sqlite"
    clock = Clock(NOW)
    client = make_client(
        MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=mailchimp_emulator.url)
    )
    runtimes = []

    def make(
        *,
        dry_run: bool = False,
        state_url: str | None = None,
        state_schema: str | None = None,
        **daemon,
    ):
        config = Config(
            rules=ROOT / "rules.yaml",
            sources=ROOT / "sources.yaml",
            database=db_url,
            state=state_url or state,
            state_schema=state_schema,
            mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=mailchimp_emulator.url),
            daemon=DaemonConfig(**daemon),
        )
        caller = Caller(client, DEFAULT_LIST_ID)
        out = io.StringIO()

        def sink(store):
            if dry_run:
                return DryRunSink(store, out, clock=clock)
            return MailchimpSink(caller, store, SinkConfig(polling=BRISK_POLLING), clock=clock)

        runtime = build_runtime(config, clock=clock, sink_factory=sink)
        runtime.dry_run = dry_run
        runtimes.append(runtime)
        wanted = wanted_merge_fields(runtime.ruleset.entities.values())
        fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
        return runtime, caller, out

    engine = sa.create_engine(db_url)
    yield make, clock, engine, mailchimp_emulator
    engine.dispose()
    for runtime in runtimes:
        runtime.close()


def _at(engine, instant):
    # SQLite keeps naive UTC text, as the demo writes it.
    return instant.replace(tzinfo=None) if engine.dialect.name == "sqlite" else instant


def _credit(engine, user_id, at):
    with engine.begin() as conn:
        next_id = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM credits"))
        conn.execute(
            sa.text(
                "INSERT INTO credits (id, user_id, amount_cents, credited_at)"
                " VALUES (:id, :u, 1000, :at)"
            ),
            {"id": next_id.scalar_one(), "u": user_id, "at": _at(engine, at)},
        )


def test_cycles_evaluate_in_sql_and_push_what_the_engine_says(bb):
    make, clock, _engine, emulator = bb
    runtime, _, _ = make()
    summary = run_once(runtime)
    assert summary.evaluated_by == {"user": "sql"}
    assert audience_fields(emulator) == expected_members(runtime, "user", NOW)
    clock.now = NOW + timedelta(days=3)
    later = run_once(runtime, full=True)
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)
    assert later.push.pushed == len({c[1] for c in later.changed})


def test_a_full_pass_with_nothing_changed_sends_and_writes_nothing(bb):
    make, _clock, _engine, _emulator = bb
    runtime, caller, _ = make()
    run_once(runtime)
    calls = sum(caller.calls.values())
    again = run_once(runtime, full=True)
    assert again.entities_read["user"] == 120
    assert again.evaluations_written == 0
    assert again.push.considered == 0
    assert sum(caller.calls.values()) == calls


def test_going_live_writes_each_entity_once(bb):
    """A new entity's evaluation and the digests of what Mailchimp accepted
    from it are one write. Before, the row was inserted, then updated once
    the push was accepted: going live at 1M users, a million writes more."""
    make, _clock, _engine, _emulator = bb
    runtime, _, _ = make()
    updates = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE") and "entity_state" in statement:
            updates.append(statement)

    sa.event.listen(runtime.state.engine, "before_cursor_execute", seen)
    try:
        summary = run_once(runtime)
    finally:
        sa.event.remove(runtime.state.engine, "before_cursor_execute", seen)
    assert summary.push.pushed == 120
    assert updates == []
    with runtime.state.engine.connect() as conn:
        settled = sa.text("SELECT COUNT(*) FROM entity_state WHERE pushed_fp IS NOT NULL")
        assert conn.execute(settled).scalar_one() == 120
    again = run_once(runtime, full=True)
    assert again.evaluations_written == 0
    assert again.push.considered == 0


def test_a_cycle_that_pushes_in_several_rounds_logs_its_progress(bb, caplog):
    """Going live at 1M users takes minutes: after each full push buffer
    the cycle logs how far it got, and the rounds lose nothing."""
    make, clock, _engine, emulator = bb
    runtime, _, _ = make(batch_size=40)  # entities derived 40 at a time
    runtime.flush_size = 30
    with caplog.at_level("INFO", logger="sync.daemon.progress"):
        summary = run_once(runtime)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pushing:")]
    assert progress == [
        f"pushing: {n} members pushed so far this cycle, 0 failed, {calls} API calls"
        # A batch subscribe per round; the first also reads the audience's merge fields.
        for n, calls in ((40, 2), (80, 3), (120, 4))
    ]
    assert summary.push.pushed == 120
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)


class WatchedSink:
    """The runtime's own sink, watched: how many pushes run at once, and
    whether the cycle derived a chunk (reached ``Differ.settle``) while one
    of the first ``overlapping`` pushes ran."""

    def __init__(self, sink, *, overlapping: int, fail_push: int | None = None) -> None:
        self.sink = sink
        self.overlapping = overlapping
        self.fail_push = fail_push
        self.changed = threading.Condition()
        self.derived = 0
        self.running = 0
        self.most_at_once = 0
        self.pushes = 0
        self.derived_during: list[bool] = []

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def chunk_derived(self) -> None:
        with self.changed:
            self.derived += 1
            self.changed.notify_all()

    def push(self, members):
        with self.changed:
            self.running += 1
            self.pushes += 1
            self.changed.notify_all()
            number = self.pushes
            self.most_at_once = max(self.most_at_once, self.running)
            if number <= self.overlapping:
                # Push k takes the members of chunk k: give the cycle a
                # moment to derive chunk k + 1 meanwhile (without an
                # overlap, nothing can: the wait runs out).
                self.changed.wait_for(lambda: self.derived > number, timeout=5)
                self.derived_during.append(self.derived > number)
        try:
            if number == self.fail_push:
                raise FatalError("Mailchimp refused the key (injected)")
            return self.sink.push(members)
        finally:
            with self.changed:
                self.running -= 1


def _watch(runtime, monkeypatch, **kwargs) -> WatchedSink:
    from sync.daemon.diff import Differ

    watched = runtime.sink = WatchedSink(runtime.sink, **kwargs)
    settle = Differ.settle

    def derived_then_settle(self, *args, **kw):
        watched.chunk_derived()
        settle(self, *args, **kw)

    monkeypatch.setattr(Differ, "settle", derived_then_settle)
    return watched


def test_pushing_overlaps_deriving_one_push_at_a_time(bb, monkeypatch):
    """Going live, a full buffer is pushed while the next chunks are derived
    (the wait for Mailchimp is not spent idle), never two pushes at once, and
    the outcome is what pushing in turn gives."""
    make, clock, _engine, emulator = bb
    runtime, _, _ = make(batch_size=40)  # 120 users: three chunks, three pushes
    runtime.flush_size = 30
    watched = _watch(runtime, monkeypatch, overlapping=2)
    summary = run_once(runtime)
    assert watched.pushes == 3
    assert watched.most_at_once == 1
    # The first two pushes each saw the next chunk derived while they ran
    # (the third is the last: there is nothing left to derive).
    assert watched.derived_during == [True, True]
    assert summary.push.pushed == 120
    assert summary.evaluations_written == 120
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)
    again = run_once(runtime, full=True)
    assert again.push.considered == 0
    assert again.evaluations_written == 0


def test_a_push_failing_in_the_background_stops_the_cycle_with_its_error(bb, monkeypatch):
    """The error of a push in flight is the cycle's: nothing is pushed after
    it, and the next cycle pushes what it left."""
    make, clock, _engine, emulator = bb
    runtime, _, _ = make(batch_size=40)
    runtime.flush_size = 30
    watched = _watch(runtime, monkeypatch, overlapping=2, fail_push=2)
    with pytest.raises(FatalError, match="injected"):
        run_once(runtime)
    assert watched.pushes == 2  # the third buffer was never pushed
    assert len(emulator.store.audience(DEFAULT_LIST_ID).members()) == 40
    runtime.sink = watched.sink
    clock.now = NOW + timedelta(minutes=1)
    again = run_once(runtime, full=True)
    assert again.push.pushed == 80
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)


def _watch_settling(monkeypatch, watched: WatchedSink) -> list[tuple[str, int]]:
    """What the push buffer did, in order: ("push", k) when push k started,
    ("settle while sending", k) when push k was settled while push k + 1
    sent, ("settle", k) when it was settled with no push sending."""
    from sync.daemon.push import PushBuffer

    order: list[tuple[str, int]] = []
    record_settled = PushBuffer._record_settled
    settled = 0

    def watched_record(self, push, pending):
        nonlocal settled
        settled += 1
        with watched.changed:
            # The next push may be on its way: give it a moment to start.
            watched.changed.wait_for(lambda: watched.pushes > settled, timeout=2)
            order.append(("settle while sending" if watched.running else "settle", settled))
        return record_settled(self, push, pending)

    push = watched.push

    def watched_push(members):
        order.append(("push", watched.pushes + 1))
        return push(members)

    monkeypatch.setattr(PushBuffer, "_record_settled", watched_record)
    monkeypatch.setattr(watched, "push", watched_push)
    return order


def test_a_push_is_settled_while_the_next_one_sends(bb, monkeypatch):
    """Recording what a push settled (the evaluations held back for it, the
    digests of the entities Mailchimp accepted) is the cycle's work while the
    next push already sends: Mailchimp's connections do not wait for it.
    The outcome is what pushing and settling in turn gives."""
    make, clock, _engine, emulator = bb
    runtime, _, _ = make(batch_size=40)  # 120 users: three chunks, three pushes
    runtime.flush_size = 30
    watched = _watch(runtime, monkeypatch, overlapping=2)
    order = _watch_settling(monkeypatch, watched)
    summary = run_once(runtime)
    # Push 2 waits for chunk 3, derived after push 1 is settled: settling
    # push 1 happens while push 2 sends.
    assert order[:3] == [("push", 1), ("push", 2), ("settle while sending", 1)]
    assert [step for step in order if step[0] == "push"] == [("push", k) for k in (1, 2, 3)]
    assert len(order) == 6
    assert watched.most_at_once == 1
    assert summary.push.pushed == 120
    assert summary.evaluations_written == 120
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)
    again = run_once(runtime, full=True)
    assert again.push.considered == 0
    assert again.evaluations_written == 0


def test_a_push_sharing_a_member_with_the_one_before_waits_for_its_settling(bb, monkeypatch):
    """Two users of two chunks share an address: the push of the second is
    planned against everything the first one's push recorded, so that one
    is settled before it starts."""
    make, _clock, engine, emulator = bb
    with engine.begin() as conn:
        ids = conn.execute(sa.text("SELECT id FROM users ORDER BY id")).scalars().all()
        # Derived in chunks of 40 by id: the 50th user is in push 2, the 100th in push 3.
        shared = conn.execute(
            sa.text("SELECT email FROM users WHERE id = :id"), {"id": ids[49]}
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"),
            {"email": shared, "id": ids[99]},
        )
    runtime, _, _ = make(batch_size=40)
    runtime.flush_size = 30
    watched = _watch(runtime, monkeypatch, overlapping=2)
    order = _watch_settling(monkeypatch, watched)
    summary = run_once(runtime)
    assert order.index(("push", 2)) < order.index(("settle while sending", 1))
    settled_2 = [i for i, step in enumerate(order) if step[1] == 2 and step[0] != "push"]
    assert settled_2 == [order.index(("settle", 2))]
    assert settled_2[0] < order.index(("push", 3))
    assert summary.evaluations_written == 120
    # One member for the two users, pushed by both pushes in turn.
    assert len(emulator.store.audience(DEFAULT_LIST_ID).members()) == 119
    again = run_once(runtime, full=True)
    assert again.evaluations_written == 0


def test_settling_that_fails_while_the_next_push_sends_loses_nothing(bb, monkeypatch):
    """Settling push 1 fails (the state store went away) while push 2 sends:
    the error is the cycle's, push 2 is finished and settled before it goes
    up, and the next pass re-sends nothing Mailchimp already accepted."""
    from sync.daemon.push import PushBuffer

    make, clock, _engine, emulator = bb
    runtime, _, _ = make(batch_size=40)
    runtime.flush_size = 30
    watched = _watch(runtime, monkeypatch, overlapping=2)
    record_settled = PushBuffer._record_settled
    settled: list[int] = []

    def failing_first(self, push, pending):
        settled.append(len(pending.members))
        if len(settled) == 1:
            raise RuntimeError("the state store went away (injected)")
        return record_settled(self, push, pending)

    monkeypatch.setattr(PushBuffer, "_record_settled", failing_first)
    with pytest.raises(RuntimeError, match="injected"):
        run_once(runtime)
    assert watched.pushes == 2  # the third buffer was never pushed
    assert settled == [40, 40]  # push 2 settled on the way out
    assert len(emulator.store.audience(DEFAULT_LIST_ID).members()) == 80
    monkeypatch.undo()
    runtime.sink = watched.sink
    clock.now = NOW + timedelta(minutes=1)
    calls = emulator.calls.count()
    again = run_once(runtime, full=True)
    # Push 1's entities are queued again (their evaluations were not stored):
    # the ledger knows Mailchimp accepted them, so nothing is sent for them.
    assert again.push.considered == 80
    assert again.push.unchanged == 40
    assert again.push.pushed == 40
    assert emulator.calls.count() - calls == 1  # one batch subscribe, for the last 40
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)
    assert run_once(runtime, full=True).push.considered == 0


@pytest.mark.parametrize("evaluator", ["sql", "engine"])
def test_a_cycle_stopped_by_an_error_ends_its_read_at_once(bb, monkeypatch, evaluator):
    """A cycle that fails mid-stream gives the read connection back at once,
    its transaction ended. The compiled SQL's rows once stayed open (a local
    of the failed frame, which the error's traceback keeps alive) until the
    garbage collector ran; a test then hung dropping its schema."""
    make, _clock, _engine, _emulator = bb
    runtime, _, _ = make(evaluator=evaluator, batch_size=5)

    def settle_fails(*_args, **_kwargs):
        raise RuntimeError("settling failed")

    monkeypatch.setattr(Differ, "settle", settle_fails)
    with pytest.raises(RuntimeError, match="settling failed") as failure:
        run_once(runtime)
    assert failure.traceback  # the failed cycle's frames are still referenced
    assert runtime.reader.engine.pool.checkedout() == 0


def test_a_runtime_lets_the_cycle_collector_run_less_often(bb):
    """Going live allocates a few objects per member: the collector's young
    pass is made rarer in a process that runs cycles, never more frequent."""
    import gc

    from sync.daemon.runtime import GC_YOUNG_THRESHOLD

    make, _clock, _engine, _emulator = bb
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's default
        make()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
        gc.set_threshold(GC_YOUNG_THRESHOLD * 2, 5, 5)
        make()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD * 2, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_a_dry_run_writes_nothing_and_loses_nothing(bb):
    """Wrong before: a dry run stored the evaluations and moved the
    watermarks, so the next real cycle created none of the members it showed."""
    make, _clock, _engine, emulator = bb
    runtime, _, out = make(dry_run=True)
    summary = run_once(runtime)
    assert summary.dry_run
    shown = {
        line.split('"email": "')[1].split('"')[0].lower()
        for line in out.getvalue().splitlines()
        if '"email"' in line
    }
    assert len(shown) == 120
    state = sa.create_engine(runtime.config.state)
    with state.connect() as conn:
        for table in ("entity_state", "cycle", "watermark", "member"):
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 0
    state.dispose()
    real, _, _ = make()
    run_once(real)
    assert set(audience_fields(emulator)) == shown


def test_a_late_row_is_caught_by_the_next_full_pass_and_gets_its_event(bb):
    """Wrong before: a row dated before the watermark was ignored until the
    daily re-scan; its event was never sent."""
    make, clock, engine, emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    clock.now = NOW + timedelta(minutes=10)
    run_once(runtime)
    with engine.connect() as conn:
        user_id, email = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")).first()
    # Inserted after the cycle at +10 min, dated two minutes before it (a
    # replicated or back-filled row).
    _credit(engine, user_id, clock.now - timedelta(minutes=2))
    clock.now = NOW + timedelta(minutes=12)
    full = run_once(runtime, full=True)
    member = emulator.audience.member(email)
    assert member.merge_fields["MMERGE25"].startswith("money_ok")
    assert [e.name for e in member.events] == ["credit"]
    assert full.push.events_sent == 1
    # ... and exactly once.
    clock.now = NOW + timedelta(minutes=13)
    run_once(runtime, full=True)
    assert [e.name for e in emulator.audience.member(email).events] == ["credit"]


def test_a_tick_reads_only_new_rows_and_due_entities(bb):
    make, clock, engine, emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    with engine.connect() as conn:
        user_id, email = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")).first()
    clock.now = NOW + timedelta(minutes=1)
    _credit(engine, user_id, clock.now - timedelta(seconds=10))
    tick = run_once(runtime)
    assert not tick.full
    assert 1 <= tick.entities_read["user"] < 120
    assert "credit" in [e.name for e in emulator.audience.member(email).events]


def test_events_without_properties_are_sent_without_the_engine(bb):
    """BlouseBrothers' events carry no properties: a tick and a full pass
    send them from the occurrences in the window and the compiled row, and
    read no entity for the Python engine (before, each entity with an
    unsent event was read back and evaluated: a quarter of a 1 % tick)."""
    make, clock, engine, emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    read = []
    real_read = runtime.reader.read_entities

    def read_entities(*args, **kwargs):
        read.append(kwargs.get("ids"))
        return real_read(*args, **kwargs)

    runtime.reader.read_entities = read_entities
    with engine.connect() as conn:
        users = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id LIMIT 2")).all()
    clock.now = NOW + timedelta(minutes=1)
    _credit(engine, users[0][0], clock.now - timedelta(seconds=10))
    tick = run_once(runtime)
    assert not tick.full
    assert tick.push.events_sent == 1
    clock.now = NOW + timedelta(minutes=2)
    _credit(engine, users[1][0], clock.now - timedelta(seconds=10))
    full = run_once(runtime, full=True)
    assert full.push.events_sent == 1
    assert read == []
    for _, email in users:
        (event,) = emulator.audience.member(email).events
        assert (event.name, event.properties) == ("credit", {})


def test_going_live_sends_no_past_event_unless_asked(bb):
    """Wrong before: the first cycle sent every event of the last seven days."""
    make, _clock, _engine, emulator = bb
    runtime, _, _ = make()
    summary = run_once(runtime)
    assert summary.push.events_sent == 0
    assert summary.events_skipped > 0
    assert any("past events not sent" in line for line in summary.lines())
    assert all(not m.events for m in emulator.audience.members())


def test_going_live_with_a_backfill_sends_the_window(bb):
    make, _clock, _engine, emulator = bb
    runtime, _, _ = make(backfill_events=timedelta(days=7))
    summary = run_once(runtime)
    assert summary.push.events_sent > 0
    assert summary.events_skipped == 0
    sent = [e for m in emulator.audience.members() for e in m.events]
    assert all(e.occurred_at is None or e.occurred_at >= "2026-02-22" for e in sent)


def test_a_state_entry_event_honours_events_max_age(tmp_path):
    """Wrong before: status-entry events ignored ``events_max_age`` (reminders
    dated months back were sent on going live)."""
    from sync.evaluate.engine import Baseline
    from sync.records import ActionOccurrence

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\n"
        "entities:\n"
        "  user:\n"
        "    actions:\n"
        "      signup: {enters: registered}\n"
        "    statuses:\n"
        "      registered:\n"
        "        event: {name: registered_entry, once: entry}\n"
    )
    entity = load_rules(rules).entity("user")
    entered = NOW - timedelta(days=90)
    signup = [ActionOccurrence(entered, "signup")]
    old = evaluate(entity, {}, signup, NOW, events_since=NOW - timedelta(days=7))
    assert [e.name for e in old.events] == []
    recent = evaluate(entity, {}, signup, NOW, events_since=entered)
    assert [e.name for e in recent.events] == ["registered_entry"]
    # A re-initialisation entry is an entry too.
    baseline = Baseline("registered", NOW - timedelta(days=1))
    fresh = evaluate(entity, {}, [], NOW, baseline, events_since=NOW - timedelta(days=7))
    assert [e.name for e in fresh.events] == ["registered_entry"]


def test_an_address_change_moves_the_member_and_its_history(bb):
    """Wrong before: a second member was created, `welcome` sent again to the
    new address, and the old member left subscribed with a stale status."""
    make, clock, engine, emulator = bb
    runtime, _, _ = make(backfill_events=timedelta(days=30))
    run_once(runtime)
    with engine.connect() as conn:
        user_id, old = conn.execute(
            sa.text("SELECT id, email FROM users ORDER BY date_joined DESC")
        ).first()
    before = emulator.audience.member(old)
    events_before = [e.name for e in before.events]
    members_before = len(emulator.audience.members())
    new = "moved-" + old
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET email = :e WHERE id = :i"), {"e": new, "i": user_id})
    clock.now = NOW + timedelta(minutes=5)
    summary = run_once(runtime, full=True)
    assert summary.address_changes == [(normalise_email(old), normalise_email(new))]
    assert emulator.audience.member(old) is None
    moved = emulator.audience.member(new)
    assert moved is not None
    assert [e.name for e in moved.events] == events_before
    assert len(emulator.audience.members()) == members_before
    # Nothing is sent again on later passes either.
    clock.now = NOW + timedelta(minutes=10)
    again = run_once(runtime, full=True)
    assert again.push.events_sent == 0
    assert [e.name for e in emulator.audience.member(new).events] == events_before


def test_an_address_already_in_the_audience_is_not_merged(bb):
    make, clock, engine, emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id LIMIT 2")).all()
    (first_id, first), (_, second) = rows
    taken = "taken-" + first
    emulator.audience.seed_member(taken, status="subscribed")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE users SET email = :e WHERE id = :i"), {"e": taken, "i": first_id}
        )
    clock.now = NOW + timedelta(minutes=5)
    run_once(runtime, full=True)
    # Mailchimp refused the change: the old member stays, the new address
    # gets the user's values, nothing is lost.
    assert emulator.audience.member(first) is not None
    assert (
        emulator.audience.member(taken).merge_fields
        == expected_members(runtime, "user", clock.now)[taken]
    )
    assert second


def test_a_deleted_entity_is_forgotten_by_the_next_full_pass(bb):
    make, clock, engine, emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    counts = runtime.state.status_counts("user")
    with engine.begin() as conn:
        user_id, email = conn.execute(
            sa.text("SELECT id, email FROM users ORDER BY id DESC")
        ).first()
        for table, column in (
            ("evaluations", None),
            ("purchases", "buyer_id"),
            ("conferences", "owner_id"),
            ("credits", "user_id"),
            ("subscriptions", "user_id"),
            ("transfers", "user_id"),
            ("balance_notices", "user_id"),
            ("wallets", "user_id"),
        ):
            if column is None:
                conn.execute(
                    sa.text(
                        "DELETE FROM evaluations WHERE purchase_id IN (SELECT id FROM purchases"
                        " WHERE buyer_id = :i OR conference_id IN"
                        " (SELECT id FROM conferences WHERE owner_id = :i))"
                    ),
                    {"i": user_id},
                )
                conn.execute(
                    sa.text(
                        "DELETE FROM purchases WHERE conference_id IN"
                        " (SELECT id FROM conferences WHERE owner_id = :i)"
                    ),
                    {"i": user_id},
                )
                continue
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = :i"), {"i": user_id})
        conn.execute(sa.text("DELETE FROM users WHERE id = :i"), {"i": user_id})
    clock.now = NOW + timedelta(minutes=5)
    summary = run_once(runtime, full=True)
    assert summary.deleted["user"] == 1
    assert sum(runtime.state.status_counts("user").values()) == sum(counts.values()) - 1
    # on_delete: keep (the default) leaves the member in Mailchimp.
    assert emulator.audience.member(email) is not None


def test_calls_are_proportional_to_change_across_chunks(bb):
    """Wrong before: a /batches job and a batch subscribe per chunk of
    entities, whatever the number of members changed in it."""
    make, _clock, _engine, _emulator = bb
    runtime, caller, _ = make(batch_size=20)  # six chunks of 20 users
    summary = run_once(runtime)
    new = summary.push.pushed
    creates = caller.calls.get("success", 0)
    assert new == 120
    # One batch subscribe of 120 members, plus tags: a handful of calls, not
    # one or more per chunk.
    assert creates <= math.ceil(new / 500) + 3


def test_a_rules_reload_forces_a_full_pass(bb, tmp_path):
    """Wrong before: "using it from this cycle", then nothing moved until the
    daily re-scan. The leader's loop (``_lead``) runs a full pass right after
    a valid reload."""
    import os
    import threading
    import time

    from sync.daemon.lock import leader_lock
    from sync.daemon.metrics import Metrics
    from sync.daemon.reload import RulesWatcher
    from sync.daemon.serve import _lead

    make, clock, _engine, emulator = bb
    rules = tmp_path / "rules.yaml"
    rules.write_text((ROOT / "rules.yaml").read_text())
    runtime, _, _ = make(full_rescan=timedelta(days=30))
    runtime.config = replace(runtime.config, rules=rules)
    runtime.ruleset = load_rules(rules)
    watcher = RulesWatcher(runtime)
    lock = leader_lock(runtime.state, "reload-test")
    assert lock.try_acquire()
    leader = threading.Thread(
        target=_lead,
        args=(runtime, lock, Metrics(1.0), watcher, 1.0, 0.05),
        daemon=True,
    )
    leader.start()
    try:
        deadline = time.monotonic() + 30

        def finished() -> int:
            return sum(1 for c in runtime.state.cycles(5) if c.finished_at is not None)

        while finished() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The marketer shortens the first rung: every registered user moves.
        rules.write_text(
            rules.read_text().replace("nurture:\n    _H24: 24h", "nurture:\n    _H24: 12h", 1)
        )
        os.utime(rules, (time.time() + 5, time.time() + 5))
        clock.now = NOW + timedelta(minutes=1)
        while finished() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runtime.stop.set()
        leader.join(30)
        lock.release()
    cycles = sorted(runtime.state.cycles(10), key=lambda c: c.id)
    # full_rescan is 30 days and nothing was re-initialised: the only reason
    # for a full pass after the first is the reload.
    reloads = [c for c in cycles[1:] if c.counts.get("full")]
    assert reloads, [c.counts for c in cycles]
    assert reloads[0].counts["entities_read"] == {"user": 120}
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)


def test_on_delete_unsubscribe_unsubscribes_the_member_of_a_deleted_entity(bb):
    make, clock, engine, emulator = bb
    runtime, _, _ = make(on_delete="unsubscribe")
    run_once(runtime)
    with engine.begin() as conn:
        # The newest user has no other row than its own (ordered by sign-up).
        user_id, email = conn.execute(
            sa.text(
                "SELECT id, email FROM users u WHERE NOT EXISTS"
                " (SELECT 1 FROM wallets w WHERE w.user_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM conferences c WHERE c.owner_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM purchases p WHERE p.buyer_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.user_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.user_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM balance_notices b WHERE b.user_id = u.id)"
                " ORDER BY id"
            )
        ).first()
        conn.execute(sa.text("DELETE FROM users WHERE id = :i"), {"i": user_id})
    clock.now = NOW + timedelta(minutes=5)
    summary = run_once(runtime, full=True)
    assert summary.deleted["user"] == 1
    assert summary.removed == {"unsubscribe": 1}
    assert emulator.audience.member(email).status == "unsubscribed"


def test_a_type_the_sql_cannot_compile_falls_back_to_the_engine(tmp_path, mailchimp_emulator):
    """SQLite has no time-zone database: naive instants in another zone than
    UTC cannot be compiled, so that type is evaluated by the engine (and the
    cycle still pushes exactly what the engine says)."""
    database = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(database, "blousebrothers", users=30, seed=2, now=NOW)
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        (ROOT / "sources.yaml")
        .read_text()
        .replace("naive_timezone: UTC", "naive_timezone: Europe/Paris")
    )
    config = Config(
        rules=ROOT / "rules.yaml",
        sources=sources,
        database=database,
        state=f"sqlite:///{tmp_path}/state.sqlite",
        mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=mailchimp_emulator.url),
    )
    client = make_client(
        MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=mailchimp_emulator.url)
    )
    clock = Clock(NOW)
    runtime = build_runtime(
        config,
        clock=clock,
        sink_factory=lambda store: MailchimpSink(
            Caller(client, DEFAULT_LIST_ID), store, SinkConfig(polling=BRISK_POLLING), clock=clock
        ),
    )
    try:
        wanted = wanted_merge_fields(runtime.ruleset.entities.values())
        fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
        summary = run_once(runtime)
        assert summary.evaluated_by == {"user": "engine"}
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", NOW)
        again = run_once(runtime, full=True)
        assert again.push.considered == 0
        assert again.evaluations_written == 0
    finally:
        runtime.close()


def test_a_replaced_state_store_does_not_send_past_events_again(bb, tmp_path):
    """Issue 13, row 2: the state file deleted (or replaced after corruption)
    and the daemon restarted sent every event of the window again. A new
    state store goes live: nothing that happened before it is sent."""
    make, clock, _engine, emulator = bb
    runtime, _, _ = make(backfill_events=timedelta(days=7))
    first = run_once(runtime)
    assert first.push.events_sent > 0
    sent = sorted((m, e.name, e.occurred_at) for m, e in emulator.audience.received_events())
    # A new, empty state store (another file on SQLite; on PostgreSQL the
    # application database under another schema), the same audience.
    state = runtime.config.state
    if state.startswith("sqlite"):
        replaced, _, _ = make(state_url=f"sqlite:///{tmp_path}/replaced.sqlite")
    else:
        schema = f"replaced_{uuid.uuid4().hex[:8]}"
        replaced, _, _ = make(state_schema=schema)
    clock.now = NOW + timedelta(hours=1)
    again = run_once(replaced, full=True)
    assert again.push.events_sent == 0
    assert again.events_skipped > 0
    received = sorted((m, e.name, e.occurred_at) for m, e in emulator.audience.received_events())
    assert received == sent
    if not state.startswith("sqlite"):
        with replaced.state.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def test_a_dry_run_says_how_many_entities_it_would_forget(bb):
    make, clock, engine, _emulator = bb
    runtime, _, _ = make()
    run_once(runtime)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE id = (SELECT MAX(id) FROM users)"))
    dry, _, _ = make(dry_run=True)
    clock.now = NOW + timedelta(minutes=5)
    summary = run_once(dry, full=True)
    assert summary.deleted == {"user": 1}
    assert sum(runtime.state.status_counts("user").values()) == 120  # nothing forgotten


def test_an_audience_deleted_mid_run_is_one_error_and_everyone_comes_back(bb, caplog):
    """Issue 13, row 8: the audience deleted mid-run gave a warning per member
    and no error; once it was restored, members stayed stale for days."""
    import logging

    from sync.exceptions import AudienceMissing

    make, clock, _engine, emulator = bb
    runtime, client_caller, _ = make()
    run_once(runtime)
    emulator.store.remove_audience()
    clock.now = NOW + timedelta(days=2)  # statuses move: members to update
    with caplog.at_level(logging.WARNING), pytest.raises(AudienceMissing, match="not found"):
        run_once(runtime, full=True)
    per_member = [r for r in caplog.records if "push to" in r.getMessage()]
    assert per_member == []
    # Restored (a new, empty audience with the fields): the next pass pushes
    # everyone again, as the engine says.
    emulator.store.add_audience(DEFAULT_LIST_ID)
    wanted = wanted_merge_fields(runtime.ruleset.entities.values())
    fix_merge_fields(client_caller.client, DEFAULT_LIST_ID, wanted)
    clock.now = NOW + timedelta(days=2, minutes=5)
    again = run_once(runtime)
    assert again.full
    assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)


def test_the_contribution_digest_keeps_its_formula() -> None:
    """The digest of what an entity asks of its member is stored
    (``pushed_fp``) and compared in every later cycle: a new formula would
    make a whole audience look changed and pushed again after an upgrade.
    It stays BLAKE2 (12 bytes) of ``repr((values, sorted tags, field
    types))``, however it is computed."""
    import hashlib
    from types import SimpleNamespace

    from sync.daemon.diff import contribution_fingerprint
    from sync.rules.schema import load_rules

    entity = load_rules(ROOT / "rules.yaml").entity("user")
    tags = [f.tag for f in entity.merge_fields]
    for values, active in (
        ({}, frozenset()),
        (dict(zip(tags, ["it's", 2.5, None, True, NOW], strict=False)), frozenset({"b", "a"})),
    ):
        derived = SimpleNamespace(merge_fields=values, tags=active)
        text = repr(
            (
                [values.get(t) for t in tags],
                sorted(active) if active else (),
                tuple((f.tag, f.type) for f in entity.merge_fields),
            )
        )
        expected = hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
        assert contribution_fingerprint(entity, derived) == expected
