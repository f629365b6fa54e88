"""Little World, the demo: volunteers meet German learners for video calls.

Users sign up, verify their email, complete a form, book an onboarding call
(an appointment), have it (or do not show up), then search for a partner.
The matching team pairs a learner with a volunteer; the learner confirms,
both write messages, then meet in video calls, and after 12 weeks may say
they are still in contact. The ``match`` entity's facts come from matches,
messages and calls; the ``user`` entity's match counts come from the
evaluated match statuses through ``relations``/``rollups``
(examples/littleworld/sources.yaml).

Matches pair users of the same chunk, so a chunk is self-contained.
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
    later,
    person,
    signup_time,
)

NAME = "littleworld"

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("first_name", sa.String(150), nullable=False),
    sa.Column("last_name", sa.String(150), nullable=False),
    sa.Column("user_type", sa.String(20), nullable=False),  # learner | volunteer
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("email_verified_at", _ts),
    sa.Column("form_completed_at", _ts),
    sa.Column("searching", sa.Boolean, nullable=False),
    sa.Column("search_started_at", _ts),
    sa.Column("marked_inactive", sa.Boolean, nullable=False),
    sa.Column("too_low_german_level", sa.Boolean, nullable=False),
    sa.Column("had_onboarding_call", sa.Boolean, nullable=False),
    sa.Column("onboarding_no_show", sa.Boolean, nullable=False),
)
matches = sa.Table(
    "matches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("learner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("volunteer_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("confirmed_at", _ts),
    sa.Column("still_in_contact_after_12w", sa.Boolean, nullable=False),
)
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("match_id", sa.Integer, sa.ForeignKey("matches.id"), nullable=False, index=True),
    sa.Column("sender_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("sent_at", _ts, nullable=False),
)
video_calls = sa.Table(
    "video_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("match_id", sa.Integer, sa.ForeignKey("matches.id"), nullable=False, index=True),
    sa.Column("started_at", _ts, nullable=False),
    sa.Column("both_attended", sa.Boolean, nullable=False),
)
appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("starts_at", _ts, nullable=False),  # onboarding call
)


def generate(n_users: int, seed: int, now: int) -> Iterator[Batch]:
    """Batches for ``n_users`` users and their matches, chunk by chunk."""
    ids = Ids()
    for chunk, first in enumerate(range(1, n_users + 1, CHUNK_USERS)):
        last = min(first + CHUNK_USERS - 1, n_users)
        rng = chunk_rng(seed, NAME, "users", chunk)
        yield from _chunk(rng, ids, range(first, last + 1), now)


def _chunk(rng: random.Random, ids: Ids, user_ids: range, now: int) -> Iterator[Batch]:
    rows: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in metadata.sorted_tables}
    seekers: dict[str, list[tuple[int, int]]] = {"learner": [], "volunteer": []}
    user_rows: dict[int, list[Any]] = {}
    for uid in user_ids:
        email, first, last_name, _ = person(rng, uid)
        kind = "learner" if rng.random() < 0.55 else "volunteer"
        created = signup_time(rng, now, horizon_days=400)
        verified = later(rng, created, 8 * HOUR, now) if rng.random() < 0.85 else None
        form = later(rng, verified, 2 * DAY, now) if verified and rng.random() < 0.75 else None
        had_call = no_show = too_low = searching = False
        search_at: int | None = None
        if form is not None and rng.random() < 0.8:
            # Calls are booked a few days ahead: some are still in the future.
            starts = form + HOUR + int(rng.expovariate(1 / (4 * DAY)))
            rows["appointments"].append((ids(appointments), uid, instant(starts)))
            if starts + HOUR <= now:
                if rng.random() < 0.12:
                    no_show = True
                elif kind == "learner" and rng.random() < 0.07:
                    had_call = too_low = True
                else:
                    had_call = True
                    if rng.random() < 0.9:
                        searching = True
                        search_at = starts + HOUR + rng.randrange(DAY)
                        seekers[kind].append((uid, search_at))
        row: list[Any] = [
            uid,
            email,
            first,
            last_name,
            kind,
            instant(created),
            instant(verified) if verified else None,
            instant(form) if form else None,
            searching,
            instant(search_at) if search_at else None,
            rng.random() < 0.03,
            too_low,
            had_call,
            no_show,
        ]
        user_rows[uid] = row  # a list until the chunk is done: `searching` may still change
    volunteers = seekers["volunteer"]
    rng.shuffle(volunteers)
    for learner, learner_at in seekers["learner"]:
        if not volunteers or rng.random() < 0.25:
            continue  # still in first search
        volunteer, volunteer_at = volunteers.pop()
        created = max(learner_at, volunteer_at) + int(rng.expovariate(1 / (6 * DAY)))
        if created > now:
            continue
        happy = _match(rng, ids, rows, learner, volunteer, created, now)
        if happy:
            for uid in (learner, volunteer):
                if rng.random() < 0.6:
                    user_rows[uid][8] = False  # found what they came for: stopped searching
    rows["users"] = [tuple(user_rows[uid]) for uid in user_ids]
    for table in metadata.sorted_tables:
        yield Batch(table, rows[table.name])


def _match(
    rng: random.Random,
    ids: Ids,
    rows: dict[str, list[tuple[Any, ...]]],
    learner: int,
    volunteer: int,
    created: int,
    now: int,
) -> bool:
    """One match and its messages and calls; True when it went well for long."""
    mid = ids(matches)
    confirmed = None
    if rng.random() < 0.8:
        at = created + int(rng.expovariate(1 / (20 * HOUR)))
        # A learner who waits past the 5-day expiry never confirms.
        confirmed = at if at <= now and at < created + 5 * DAY else None
    still_in_contact = False
    if confirmed is not None:
        kind = rng.random()
        both = kind >= 0.3
        single = 0.15 <= kind < 0.3
        active = int(rng.expovariate(1 / (45 * DAY)))
        end = min(now, confirmed + active)
        senders: list[int] = []
        if both:
            senders = [learner, volunteer]
        elif single:
            senders = [rng.choice((learner, volunteer))]
        for sender in senders:
            for _ in range(1 + int(rng.expovariate(1 / 6))):
                sent = confirmed + MINUTE + rng.randrange(max(1, end - confirmed))
                rows["messages"].append((ids(messages), mid, sender, instant(sent)))
        if both and rng.random() < 0.75:
            calls = 1 + (end - confirmed) // (9 * DAY)
            for index in range(calls):
                at = confirmed + DAY + index * 7 * DAY + rng.randrange(DAY)
                if at > now:
                    break
                rows["video_calls"].append(
                    (ids(video_calls), mid, instant(at), rng.random() < 0.88)
                )
            still_in_contact = now - confirmed > 84 * DAY and rng.random() < 0.3
    rows["matches"].append(
        (
            mid,
            learner,
            volunteer,
            instant(created),
            instant(confirmed) if confirmed else None,
            still_in_contact,
        )
    )
    return still_in_contact
