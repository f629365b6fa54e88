"""New rows arriving in the BlouseBrothers demo database between two cycles.

The chaos runs (Mailchimp side and database side) insert credits,
transfers, low-balance notices and sign-ups stamped between the previous
cycle's instant and the next one's, and count them in their report.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

import sqlalchemy as sa


class FeedReport(Protocol):
    """What the feed reads and counts in a run's report."""

    users: int
    rows_inserted: Counter[str]


class DataFeed:
    """New rows between cycles, at instants after the previous cycle's."""

    TABLES: ClassVar[dict[str, str]] = {
        "credits": "INSERT INTO credits (id, user_id, amount_cents, credited_at) "
        "VALUES (:id, :u, 1500, :at)",
        "transfers": "INSERT INTO transfers (id, user_id, amount_cents, received_at) "
        "VALUES (:id, :u, 2500, :at)",
        "balance_notices": "INSERT INTO balance_notices (id, user_id, sent_at) "
        "VALUES (:id, :u, :at)",
    }

    def __init__(self, url: str, rng: random.Random, report: FeedReport) -> None:
        self.engine = sa.create_engine(url)
        self.rng = rng
        self.report = report
        with self.engine.connect() as conn:
            self.users = int(conn.execute(sa.text("SELECT max(id) FROM users")).scalar_one())
            self.next_id = {
                table: int(
                    conn.execute(sa.text(f"SELECT COALESCE(max(id), 0) FROM {table}")).scalar_one()
                )
                + 1
                for table in self.TABLES
            }

    def close(self) -> None:
        self.engine.dispose()

    def between(self, after: datetime, until: datetime) -> None:
        span = (until - after).total_seconds()

        def instant() -> datetime:
            return after + timedelta(seconds=self.rng.uniform(1, span))

        with self.engine.begin() as conn:
            for table, sql in self.TABLES.items():
                for _ in range(max(1, self.report.users // 400)):
                    conn.execute(
                        sa.text(sql),
                        {
                            "id": self.next_id[table],
                            "u": self.rng.randint(1, self.users),
                            "at": instant(),
                        },
                    )
                    self.next_id[table] += 1
                    self.report.rows_inserted[table] += 1
            for _ in range(max(1, self.report.users // 1000)):
                self.users += 1
                conn.execute(
                    sa.text(
                        "INSERT INTO users "
                        "(id, email, first_name, last_name, username, date_joined) "
                        "VALUES (:id, :email, 'New', 'Comer', :name, :at)"
                    ),
                    {
                        "id": self.users,
                        "email": f"new.comer.{self.users}@example.net",
                        "name": f"newcomer{self.users}",
                        "at": instant(),
                    },
                )
                self.report.rows_inserted["users"] += 1
