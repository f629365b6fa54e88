"""BlouseBrothers, the demo: a marketplace of medical-school case files ("conférences").

Users sign up, open a wallet, credit it or subscribe, buy conferences written
by other users, consume them to 100 %, evaluate them; some write, finish and
publish their own, which others buy (``conf_sold``) and evaluate
(``eval_received``). The schema below is what such a Django application
would have, trimmed to what the lifecycle of ``rules.yaml`` reads; the
repository's ``sources.yaml`` maps it to the actions and facts of the
contract (docs/sources.md).

The funnel drops off at every step, as real ones do: everyone signs up,
about two in three open a wallet, fewer put money in, fewer buy, a few
create. On average a user has about six action rows.
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
    Batch,
    Ids,
    chunk_rng,
    instant,
    later,
    person,
    signup_time,
)

NAME = "blousebrothers"

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("first_name", sa.String(150), nullable=False),
    sa.Column("last_name", sa.String(150), nullable=False),
    sa.Column("username", sa.String(150), nullable=False),
    sa.Column("date_joined", _ts, nullable=False),
)
wallets = sa.Table(
    "wallets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, unique=True),
    sa.Column("created_at", _ts, nullable=False),
)
credits = sa.Table(
    "credits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("credited_at", _ts, nullable=False),
)
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("plan", sa.String(20), nullable=False),
    sa.Column("bought_at", _ts, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
)
conferences = sa.Table(
    "conferences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("title", sa.String(200), nullable=False),
    # Writing progress in percent; finished_at is set when it reaches 100.
    sa.Column("progress", sa.Integer, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("finished_at", _ts),
    sa.Column("published_at", _ts),
)
purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("buyer_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column(
        "conference_id", sa.Integer, sa.ForeignKey("conferences.id"), nullable=False, index=True
    ),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("bought_at", _ts, nullable=False),
    # Set when the buyer has consumed the conference to 100 %.
    sa.Column("finished_at", _ts),
)
evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column(
        "purchase_id", sa.Integer, sa.ForeignKey("purchases.id"), nullable=False, unique=True
    ),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("evaluated_at", _ts, nullable=False),
)
transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("received_at", _ts, nullable=False),
)
balance_notices = sa.Table(
    "balance_notices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("sent_at", _ts, nullable=False),
)

_TOPICS = (
    "Cardiologie",
    "Pneumologie",
    "Néphrologie",
    "Pédiatrie",
    "Neurologie",
    "Gastro-entérologie",
    "Infectiologie",
    "Urgences",
    "Rhumatologie",
    "Dermatologie",
)

#: Published conferences others can buy: a bounded pool, so memory stays flat.
_POOL = 20_000


def generate(n_users: int, seed: int, now: int) -> Iterator[Batch]:
    """Batches for ``n_users`` users, chunk by chunk, parents before children."""
    ids = Ids()
    pool: list[tuple[int, int]] = []  # (conference id, published at)
    for chunk, first in enumerate(range(1, n_users + 1, CHUNK_USERS)):
        last = min(first + CHUNK_USERS - 1, n_users)
        rng = chunk_rng(seed, NAME, "users", chunk)
        yield from _chunk(rng, ids, pool, range(first, last + 1), now)


def _chunk(
    rng: random.Random, ids: Ids, pool: list[tuple[int, int]], user_ids: range, now: int
) -> Iterator[Batch]:
    rows: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in metadata.sorted_tables}
    money_users: list[tuple[int, int]] = []  # (user id, when they first had money)
    for uid in user_ids:
        email, first, last_name, username = person(rng, uid)
        joined = signup_time(rng, now)
        rows["users"].append((uid, email, first, last_name, username, instant(joined)))
        if rng.random() >= 0.68:
            continue
        wallet_at = later(rng, joined, 2 * DAY, now)
        if wallet_at is None:
            continue
        rows["wallets"].append((ids(wallets), uid, instant(wallet_at)))
        money_at: int | None = None
        if rng.random() < 0.65:
            at: int | None = wallet_at
            for _ in range(rng.choice((1, 2, 2, 3, 3, 4, 6))):
                at = later(rng, at, 12 * DAY, now) if at is not None else None
                if at is None:
                    break
                money_at = money_at or at
                rows["credits"].append(
                    (ids(credits), uid, rng.choice((1000, 2000, 2500, 5000)), instant(at))
                )
        if rng.random() < 0.15:
            sub_at = later(rng, wallet_at, 5 * DAY, now)
            if sub_at is not None:
                money_at = min(money_at or sub_at, sub_at)
                plan = rng.choice(("monthly", "monthly", "yearly"))
                length = 30 * DAY if plan == "monthly" else 365 * DAY
                rows["subscriptions"].append(
                    (ids(subscriptions), uid, plan, instant(sub_at), instant(sub_at + length))
                )
        if money_at is not None:
            money_users.append((uid, money_at))
            if rng.random() < 0.12:
                for _ in range(rng.choice((1, 1, 2))):
                    at = later(rng, money_at, 20 * DAY, now)
                    if at is not None:
                        rows["transfers"].append(
                            (ids(transfers), uid, rng.choice((500, 1500, 3000)), instant(at))
                        )
        if rng.random() < 0.09:
            _create(rng, ids, pool, rows, uid, wallet_at, now)
    for uid, money_at in money_users:
        if rng.random() < 0.25:
            at = later(rng, money_at, 25 * DAY, now)
            if at is not None:
                rows["balance_notices"].append((ids(balance_notices), uid, instant(at)))
        if rng.random() < 0.85 and pool:
            _buy(rng, ids, pool, rows, uid, money_at, now)
    for table in metadata.sorted_tables:
        yield Batch(table, rows[table.name])


def _create(
    rng: random.Random,
    ids: Ids,
    pool: list[tuple[int, int]],
    rows: dict[str, list[tuple[Any, ...]]],
    uid: int,
    since: int,
    now: int,
) -> None:
    """A user writes one to three conferences; some get finished, fewer published."""
    at: int | None = since
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        at = later(rng, at, 10 * DAY, now) if at is not None else None
        if at is None:
            return
        cid = ids(conferences)
        title = f"{rng.choice(_TOPICS)} — dossier {cid}"
        finished = later(rng, at, 9 * DAY, now) if rng.random() < 0.65 else None
        published = (
            later(rng, finished, 3 * DAY, now)
            if finished is not None and rng.random() < 0.7
            else None
        )
        progress = 100 if finished is not None else rng.randrange(5, 100)
        rows["conferences"].append(
            (
                cid,
                uid,
                title,
                progress,
                instant(at),
                instant(finished) if finished else None,
                instant(published) if published else None,
            )
        )
        if published is not None:
            if len(pool) >= _POOL:
                pool[rng.randrange(_POOL)] = (cid, published)
            else:
                pool.append((cid, published))


def _buy(
    rng: random.Random,
    ids: Ids,
    pool: list[tuple[int, int]],
    rows: dict[str, list[tuple[Any, ...]]],
    uid: int,
    money_at: int,
    now: int,
) -> None:
    """A funded user buys a few published conferences, consumes and evaluates some."""
    at: int | None = money_at
    for _ in range(rng.choice((1, 2, 2, 3, 4, 5))):
        at = later(rng, at, 8 * DAY, now) if at is not None else None
        if at is None:
            return
        cid, published = pool[rng.randrange(len(pool))]
        bought = max(at, published + HOUR)
        if bought > now:
            continue
        finished = later(rng, bought, 4 * DAY, now) if rng.random() < 0.65 else None
        pid = ids(purchases)
        rows["purchases"].append(
            (
                pid,
                uid,
                cid,
                rng.choice((900, 1200, 1500)),
                instant(bought),
                instant(finished) if finished else None,
            )
        )
        if finished is not None and rng.random() < 0.55:
            evaluated = later(rng, finished, 2 * DAY, now)
            if evaluated is not None:
                rows["evaluations"].append(
                    (ids(evaluations), pid, rng.randrange(1, 6), instant(evaluated))
                )
