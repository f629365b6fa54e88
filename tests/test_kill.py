"""Killed at any instant, mailsync loses nothing and sends nothing twice.

First, in-process: a cycle that dies in the middle of its push (what a
SIGKILL does to it) must be redone by the next cycle. Then the real thing:
``mailsync run`` as a subprocess, killed with SIGKILL at random instants
(mid-cycle, mid-push) over many restarts, with data changing and the
simulated clock advancing; a clean final run; then the audience must equal
what the engine computes, and every event due must have arrived exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import sqlalchemy as sa

from sync.daemon import run_once
from sync.demo import load_demo
from sync.records import DesiredMember
from sync.sink import PushSummary
from tests.test_cycle import NOW, Clock, audience_fields, expected_members, make_runtime


class Killed(BaseException):
    """What SIGKILL does to a cycle, as far as the state store can tell."""


class DiesMidPush:
    """A sink that sends half the members, then dies."""

    def __init__(self, real: object) -> None:
        self.real = real

    def push(self, members: Iterable[DesiredMember]) -> PushSummary:
        chosen = list(members)
        self.real.push(chosen[: len(chosen) // 2])  # type: ignore[attr-defined]
        raise Killed


def test_a_cycle_killed_mid_push_is_redone(sqlite_url, tmp_path, mailchimp_emulator):
    load_demo(sqlite_url, "blousebrothers", users=80, seed=21, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", sqlite_url, tmp_path, mailchimp_emulator, clock)
    try:
        run_once(runtime)
        # Days later, statuses move along their ladders; the push dies half-way.
        clock.now = NOW + timedelta(days=3)
        real, runtime.sink = runtime.sink, DiesMidPush(runtime.sink)
        try:
            run_once(runtime)
        except Killed:
            pass
        runtime.sink = real
        clock.now += timedelta(minutes=10)
        run_once(runtime)
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", clock.now)
    finally:
        runtime.close()


def test_a_row_stamped_ahead_of_the_cycle_is_not_skipped(sqlite_url, tmp_path, mailchimp_emulator):
    """The application's clock runs ahead of the daemon's (or the daemon was
    restarted on an earlier clock): a row stamped after the cycle's instant is
    a future action for that cycle, and must be picked up by a later one."""
    load_demo(sqlite_url, "blousebrothers", users=30, seed=22, now=NOW)
    clock = Clock(NOW)
    runtime, _ = make_runtime("blousebrothers", sqlite_url, tmp_path, mailchimp_emulator, clock)
    engine = sa.create_engine(sqlite_url)
    try:
        run_once(runtime)
        with engine.begin() as conn:
            user_id, email = conn.execute(
                sa.text("SELECT id, email FROM users ORDER BY id LIMIT 1")
            ).one()
            ahead = NOW + timedelta(hours=2)
            conn.execute(
                sa.text(
                    "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
                    "VALUES (100000, :u, 1000, :at)"
                ),
                {"u": user_id, "at": ahead.replace(tzinfo=None)},
            )
        clock.now = NOW + timedelta(hours=1)
        run_once(runtime)  # the credit is in the future here
        clock.now = NOW + timedelta(hours=3)
        run_once(runtime)
        assert mailchimp_emulator.audience.member(email).merge_fields["MMERGE28"] == "credit"
        assert audience_fields(mailchimp_emulator) == expected_members(runtime, "user", clock.now)
    finally:
        engine.dispose()
        runtime.close()
