"""A cycle does not wait for a slow ``/batches`` job: it leaves it running,
and the next cycle (a tick will do) collects it; on SQLite and PostgreSQL.

Before, a cycle waited up to 30 minutes for each job Mailchimp had not
finished, then counted its members as failed and looked up their events in
Mailchimp one member at a time.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from sync.daemon.metrics import Metrics
from sync.daemon.once import run_once
from sync.daemon.reports import explain, status_report
from sync.demo import load_demo
from sync.evaluate.explain import render_text
from sync.mailchimp.batches import BatchPolling
from tests.support.clock import Clock
from tests.support.cycle import NOW, audience_fields, expected_members, make_runtime

START = "POST /batches"
CREDITED = 12


def _credit(engine: sa.Engine, user_ids: list[int], at) -> None:
    if engine.dialect.name == "sqlite":
        at = at.replace(tzinfo=None)  # naive UTC text, as the demo writes it
    with engine.begin() as conn:
        top = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM credits")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO credits (id, user_id, amount_cents, credited_at)"
                " VALUES (:id, :u, 1000, :at)"
            ),
            [{"id": top + 1 + n, "u": u, "at": at} for n, u in enumerate(user_ids)],
        )


def test_a_slow_job_is_left_running_and_the_next_cycle_collects_it(
    db_url, tmp_path, mailchimp_emulator
):
    emulator = mailchimp_emulator
    load_demo(db_url, "blousebrothers", users=60, seed=5, now=NOW)
    clock = Clock(NOW)
    polling = BatchPolling(first_wait=0.01, max_wait=0.05, deadline=0.3)
    runtime, _ = make_runtime(
        "blousebrothers", db_url, tmp_path, emulator, clock, polling=polling, bulk_threshold=2
    )
    engine = sa.create_engine(db_url)
    try:
        run_once(runtime)  # going live: every member created, synchronously
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")).all()
        credited = rows[:CREDITED]
        emails = {str(email).lower() for _, email in credited}
        _credit(engine, [int(i) for i, _ in credited], NOW + timedelta(minutes=1))

        emulator.hold_batches = True
        clock.now = NOW + timedelta(minutes=2)
        left = run_once(runtime, full=True)
        assert emails <= set(left.push.running_members)
        assert left.push.failed == 0
        assert runtime.state.running_emails() >= emails
        # Not a failure: the daemon stays healthy, and its metrics say who waits.
        assert left.members_in_running_jobs == len(runtime.state.running_emails())
        metrics = Metrics(interval_s=60)
        metrics.leader = True
        metrics.observe(left, ok=True)
        assert metrics.health() == (True, "ok")
        gauge = f"mailsync_members_in_running_batches {left.members_in_running_jobs}"
        assert gauge in metrics.render().splitlines()
        assert all(not emulator.audience.member(e).events for e in emails)

        # Still running: the next cycle does not push those members again.
        started = emulator.calls.count(START)
        clock.now = NOW + timedelta(minutes=3)
        held = run_once(runtime, full=True)
        assert held.push.held_running >= CREDITED
        assert held.push.collected == 0
        assert all(not emulator.audience.member(e).events for e in emails)
        assert emulator.calls.count(START) == started
        # `mailsync status` says so.
        report = status_report(runtime.config, now=clock.now)
        ((operations, members),) = [(ops, n) for _, ops, n in report.running.values()]
        assert members >= CREDITED
        assert operations >= CREDITED
        assert any("left running since" in line for line in report.lines())
        assert report.as_json()["jobs_left_running"][0]["members"] == members
        # ... and so does `mailsync explain` of one of them.
        (story,) = explain(runtime.config, next(iter(emails)), now=clock.now)
        assert story.as_json()["mailchimp"]["in_running_batch"] is True
        assert any("waiting for a /batches job" in line for line in render_text(story))

        emulator.hold_batches = False
        for job in emulator.batches.batches():
            emulator.batches.wait_finished(job.id)
        clock.now = NOW + timedelta(minutes=4)
        tick = run_once(runtime)  # a tick: the credits are older than its rows
        assert not tick.full
        assert tick.push.collected >= CREDITED
        assert runtime.state.running_emails() == set()
        assert tick.members_in_running_jobs == 0
        (story,) = explain(runtime.config, next(iter(emails)), now=clock.now)
        assert story.as_json()["mailchimp"]["in_running_batch"] is False
        for email in emails:
            assert [e.name for e in emulator.audience.member(email).events] == ["credit"]
        assert audience_fields(emulator) == expected_members(runtime, "user", clock.now)

        # Everything was recorded: a full pass sends nothing more, events once.
        clock.now = NOW + timedelta(minutes=5)
        calls = emulator.calls.count()
        after = run_once(runtime, full=True)
        assert (after.push.pushed, after.push.events_sent) == (0, 0)
        assert emulator.calls.count() == calls
        for email in emails:
            assert len(emulator.audience.member(email).events) == 1
    finally:
        engine.dispose()
        runtime.close()


def test_an_address_change_waits_for_a_job_left_running(db_url, tmp_path, mailchimp_emulator):
    """Moving the member while its update job runs would let that job's PUT
    create a new member at the old address; the move waits for the job."""
    emulator = mailchimp_emulator
    load_demo(db_url, "blousebrothers", users=60, seed=5, now=NOW)
    clock = Clock(NOW)
    polling = BatchPolling(first_wait=0.01, max_wait=0.05, deadline=0.3)
    runtime, _ = make_runtime(
        "blousebrothers", db_url, tmp_path, emulator, clock, polling=polling, bulk_threshold=2
    )
    engine = sa.create_engine(db_url)
    try:
        run_once(runtime)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")).all()
        credited = rows[:CREDITED]
        _credit(engine, [int(i) for i, _ in credited], NOW + timedelta(minutes=1))
        emulator.hold_batches = True
        clock.now = NOW + timedelta(minutes=2)
        run_once(runtime, full=True)
        user_id, old = credited[0]
        old, new = str(old).lower(), f"moved.{str(old).lower()}"
        assert old in runtime.state.running_emails()
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE users SET email = :e WHERE id = :i"), {"e": new, "i": user_id}
            )

        clock.now = NOW + timedelta(minutes=3)
        waiting = run_once(runtime, full=True)
        assert waiting.address_changes == []
        assert emulator.audience.member(old) is not None
        assert emulator.audience.member(new) is None

        emulator.hold_batches = False
        for job in emulator.batches.batches():
            emulator.batches.wait_finished(job.id)
        clock.now = NOW + timedelta(minutes=4)
        run_once(runtime)  # collects the job
        clock.now = NOW + timedelta(minutes=5)
        moved = run_once(runtime, full=True)
        assert moved.address_changes == [(old, new)]
        for job in emulator.batches.batches():
            emulator.batches.wait_finished(job.id)
        # One member, at the new address, with its history; none left at the old one.
        assert emulator.audience.member(old) is None
        member = emulator.audience.member(new)
        assert member is not None
        assert [e.name for e in member.events] == ["credit"]
    finally:
        engine.dispose()
        runtime.close()
