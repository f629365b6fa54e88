"""Rallia, the demo: players create tennis/padel matches and others join them.

A match's state (scheduled, in progress, expired, ...) is derived from its
times, its cancellation and how many participants have joined; each
participant row carries one of the nine participant statuses. Matches sit
around ``now`` (a month back, two weeks ahead, a cluster in the next days)
so that reminders are due; most fill up, some do not, some are cancelled,
a few of them late (within 24 hours of the start).

Users come first (all chunks), then matches, whose creator and participants
are drawn from every user.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from sync.demo.synthetic import (
    CHUNK_USERS,
    DAY,
    HOUR,
    MINUTE,
    Batch,
    Ids,
    chunk_rng,
    instant,
    person,
    signup_time,
)

NAME = "rallia"

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("first_name", sa.String(150), nullable=False),
    sa.Column("last_name", sa.String(150), nullable=False),
    sa.Column("created_at", _ts, nullable=False),
)
matches = sa.Table(
    "matches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("creator_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("format", sa.String(10), nullable=False),  # singles | doubles
    sa.Column("join_mode", sa.String(10), nullable=False),  # direct | request
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("start_at", _ts, nullable=False),
    sa.Column("end_at", _ts, nullable=False),
    sa.Column("cancelled_at", _ts),
)
participants = sa.Table(
    "participants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("match_id", sa.Integer, sa.ForeignKey("matches.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.UniqueConstraint("match_id", "user_id"),
)

PARTICIPANT_STATUSES = (
    "pending",
    "requested",
    "joined",
    "waitlisted",
    "declined",
    "refused",
    "left",
    "kicked",
    "cancelled",
)
#: Statuses of participants who are not (or no longer) in, by rough frequency.
_OTHERS = (
    "pending",
    "pending",
    "requested",
    "declined",
    "declined",
    "left",
    "left",
    "refused",
    "kicked",
    "cancelled",
)


def generate(n_users: int, seed: int, now: int) -> Iterator[Batch]:
    """Users first, then about one match per three users with its participants."""
    for chunk, first in enumerate(range(1, n_users + 1, CHUNK_USERS)):
        last = min(first + CHUNK_USERS - 1, n_users)
        rng = chunk_rng(seed, NAME, "users", chunk)
        rows = []
        for uid in range(first, last + 1):
            email, first_name, last_name, _ = person(rng, uid)
            rows.append((uid, email, first_name, last_name, instant(signup_time(rng, now))))
        yield Batch(users, rows)
    if n_users == 0:
        return
    ids = Ids()
    n_matches = max(1, n_users // 3)
    for chunk, first in enumerate(range(0, n_matches, CHUNK_USERS)):
        rng = chunk_rng(seed, NAME, "matches", chunk)
        count = min(CHUNK_USERS, n_matches - first)
        match_rows: list[tuple[Any, ...]] = []
        participant_rows: list[tuple[Any, ...]] = []
        for _ in range(count):
            _match(rng, ids, n_users, now, match_rows, participant_rows)
        yield Batch(matches, match_rows)
        yield Batch(participants, participant_rows)


def _start(rng: random.Random, now: int) -> int:
    if rng.random() < 0.3:  # the next three days: reminders and check-ins are due
        return now + rng.randrange(-6 * HOUR, 3 * DAY) // (15 * MINUTE) * (15 * MINUTE)
    return now + rng.randrange(-30 * DAY, 14 * DAY) // (30 * MINUTE) * (30 * MINUTE)


def _match(
    rng: random.Random,
    ids: Ids,
    n_users: int,
    now: int,
    match_rows: list[tuple[Any, ...]],
    participant_rows: list[tuple[Any, ...]],
) -> None:
    mid = ids(matches)
    creator = rng.randrange(1, n_users + 1)
    doubles = rng.random() < 0.3
    capacity = 4 if doubles else 2
    start = _start(rng, now)
    end = start + rng.choice((60, 90, 90, 120)) * MINUTE
    created = start - 2 * HOUR - int(rng.expovariate(1 / (3 * DAY)))
    created = min(created, now - MINUTE)
    cancelled = None
    if rng.random() < 0.09:
        # Half of the cancellations come in the last 24 hours before the start.
        latest = min(start, now)
        if latest > created:
            if rng.random() < 0.5 and latest - created > DAY:
                cancelled = latest - rng.randrange(1, min(DAY, latest - created))
            else:
                cancelled = created + rng.randrange(1, latest - created + 1)
    match_rows.append(
        (
            mid,
            creator,
            "doubles" if doubles else "singles",
            rng.choice(("direct", "direct", "request")),
            instant(created),
            instant(start),
            instant(end),
            instant(cancelled) if cancelled else None,
        )
    )
    full = rng.random() < 0.7
    joined_others = capacity - 1 if full else rng.randrange(0, capacity - 1)
    others = rng.choice((0, 0, 1, 1, 2, 3))
    chosen = {creator}
    wanted = min(n_users, 1 + joined_others + others)
    while len(chosen) < wanted:
        chosen.add(rng.randrange(1, n_users + 1))
    people = sorted(chosen - {creator})
    rng.shuffle(people)
    horizon = max(created + MINUTE, min(start, now))
    statuses = ["joined"] * joined_others + [
        "waitlisted" if full and rng.random() < 0.4 else rng.choice(_OTHERS) for _ in people
    ]
    for uid, status in [(creator, "joined"), *zip(people, statuses, strict=False)]:
        updated = created + rng.randrange(0, horizon - created + 1)
        participant_rows.append((ids(participants), mid, uid, status, instant(updated)))
