"""Events sent to Mailchimp, exactly once.

An event is recorded as an intent (``event_pending``) BEFORE it is POSTed and
moved to ``event_sent`` when Mailchimp accepts it; a pending row left behind
means the outcome is unknown and the sink reconciles it by its signature.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.mailchimp.ledger import EventIntent, SentEvent
from sync.state.base import StoreBase, chunks, placeholder, stage
from sync.state.tables import event_pending, event_sent


class EventStore(StoreBase):
    """The ``event_sent`` keys and the ``event_pending`` intents."""

    def sent_event_keys(self, email: str, keys: Iterable[str]) -> set[str]:
        wanted = set(keys)
        return self.sent_events([email]).get(normalise_email(email), set()) & wanted

    def sent_events(self, emails: Iterable[str]) -> dict[str, set[str]]:
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            if not self._has_rows(conn, event_sent):
                return found
            for chunk in chunks(wanted):
                for row in conn.execute(
                    sa.select(event_sent.c.email, event_sent.c.event_key).where(
                        self._among(event_sent.c.email, chunk)
                    )
                ):
                    found.setdefault(row.email, set()).add(row.event_key)
        return found

    def record_event_sent(self, email: str, key: str, name: str, at: datetime) -> None:
        self.record_events_sent([SentEvent(email=email, key=key, name=name, at=at)])

    def record_events_sent(self, events: Sequence[SentEvent]) -> None:
        rows = [
            {
                "email": normalise_email(e.email),
                "event_key": e.key,
                "name": e.name,
                "sent_at": e.at,
                "signature": e.signature,
            }
            for e in events
        ]
        if not rows:
            return
        # First write wins: the unique (email, key) constraint makes a re-record a no-op.
        unique = list({(r["email"], r["event_key"]): r for r in reversed(rows)}.values())
        with self.engine.begin() as conn:
            self._upsert(conn, event_sent, unique, ("email", "event_key"), keep=True)
            self._delete_intents(conn, [(str(r["email"]), str(r["event_key"])) for r in unique])

    def sent_event_signatures(self, emails: Iterable[str]) -> dict[str, list[str]]:
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    sa.select(event_sent.c.email, event_sent.c.signature).where(
                        self._among(event_sent.c.email, chunk), event_sent.c.signature.is_not(None)
                    )
                ):
                    found.setdefault(row.email, []).append(row.signature)
        return found

    def record_event_intents(self, intents: Sequence[EventIntent]) -> None:
        latest = {(normalise_email(i.email), i.key): i for i in intents}
        if not latest:
            return
        with self.engine.begin() as conn:
            before: dict[tuple[str, str], int] = {}
            for chunk in chunks(list(latest)):
                # Row values IN (...) is not portable; select by email, filter here.
                emails = list({email for email, _ in chunk})
                for row in conn.execute(
                    sa.select(
                        event_pending.c.email, event_pending.c.event_key, event_pending.c.attempts
                    ).where(self._among(event_pending.c.email, emails))
                ):
                    before[(row.email, row.event_key)] = int(row.attempts)
            rows = [
                {
                    "email": email,
                    "event_key": key,
                    "name": i.name,
                    "occurred_at": i.occurred_at,
                    "properties_json": json.dumps(dict(i.properties), sort_keys=True),
                    "signature": i.signature,
                    "attempted_at": i.attempted_at,
                    "attempts": max(i.attempts, before.get((email, key), 0) + 1),
                }
                for (email, key), i in latest.items()
            ]
            self._upsert(conn, event_pending, rows, ("email", "event_key"))

    def pending_events(self, emails: Iterable[str]) -> dict[str, list[EventIntent]]:
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: dict[str, list[EventIntent]] = {}
        with self.engine.connect() as conn:
            if not self._has_rows(conn, event_pending):
                return found
            for chunk in chunks(wanted):
                rows = conn.execute(
                    sa.select(event_pending)
                    .where(self._among(event_pending.c.email, chunk))
                    .order_by(event_pending.c.attempted_at, event_pending.c.event_key)
                )
                for row in rows:
                    found.setdefault(row.email, []).append(
                        EventIntent(
                            email=row.email,
                            key=row.event_key,
                            name=row.name,
                            occurred_at=row.occurred_at,
                            attempted_at=row.attempted_at,
                            properties=json.loads(row.properties_json),
                            attempts=int(row.attempts),
                        )
                    )
        return found

    def clear_event_intents(self, events: Iterable[tuple[str, str]]) -> None:
        pairs = list(dict.fromkeys((normalise_email(e), k) for e, k in events))
        if pairs:
            with self.engine.begin() as conn:
                self._delete_intents(conn, pairs)

    @staticmethod
    def _delete_intents(conn: sa.Connection, pairs: Sequence[tuple[str, str]]) -> None:
        """Forget the intents of these (email, key) pairs; the driver's own
        ``executemany`` on SQLite, ``COPY`` on PostgreSQL, as ``_upsert``
        (no per-row parameter processing)."""
        if pairs and conn.dialect.name == "postgresql":
            staged = stage(conn, event_pending, ["email", "event_key"], pairs)
            conn.exec_driver_sql(
                f'DELETE FROM "{event_pending.name}" AS t USING "{staged}" AS s'
                ' WHERE t."email" = s."email" AND t."event_key" = s."event_key"'
            )
        elif pairs:
            mark = placeholder(conn.dialect.name)
            sql = (
                f'DELETE FROM "{event_pending.name}"'
                f' WHERE "email" = {mark} AND "event_key" = {mark}'
            )
            for chunk in chunks(list(pairs), 5000):
                conn.exec_driver_sql(sql, list(chunk))

    def emails_with_pending_events(self) -> set[str]:
        """Members with events whose outcome is unknown (to reconcile)."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(event_pending.c.email).distinct()).scalars())
