"""The push ledger's storage: what Mailchimp ACCEPTED, per member.

Per member (lower-cased address): the merge values and active managed tags
Mailchimp last accepted, the pushes it refused or that wait for a retry, and,
per entity, the digest of the contribution it accepted. An address change
moves all of it. The sink reads and writes it through
``sync.mailchimp.ledger.PushLedger``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.mailchimp.ledger import AcceptedPush, MemberPushState, PushFailure
from sync.records import MergeValue
from sync.state.base import StoreBase, chunks
from sync.state.entities import update_each
from sync.state.tables import (
    entity_state,
    event_pending,
    event_sent,
    member,
    member_tag,
    push,
    watermark,
)

#: The ledger's tables keyed by member address: an address change moves them.
_LEDGER_TABLES = (member, member_tag, push)

#: A push's accepted values merged over the member's (``member.fields_json``,
#: one JSON object per member): fields it did not send keep their value.
_MERGE_FIELDS = {
    "sqlite": 'json_patch("member"."fields_json", excluded."fields_json")',
    "postgresql": '("member"."fields_json"::jsonb || excluded."fields_json"::jsonb)::text',
}


#: One encoder for every member's values: ``json.dumps`` with options builds
#: a new encoder per call, which took half the time of encoding going live.
_FIELDS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(fields: Mapping[str, MergeValue]) -> str:
    # JSON keeps 0, "0", False and "" apart; the type matters for the diff.
    return _FIELDS_ENCODER.encode(fields)


def _decode(text: str) -> dict[str, MergeValue]:
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError(f"stored merge values are not an object: {text!r}")
    for value in fields.values():
        if not isinstance(value, str | int | float):
            raise ValueError(f"stored merge value is not a scalar: {text!r}")
    return fields


def move_ledger(conn: sa.Connection, old: str, new: str) -> None:
    """What was accepted, failed, sent or attempted for ``old`` is now
    ``new``'s (unless ``new`` has a ledger of its own); events sent stay
    sent under either address's keys, never twice."""
    taken = conn.execute(sa.select(member.c.email).where(member.c.email == new)).first()
    for table in _LEDGER_TABLES:
        if taken is None:
            conn.execute(table.update().where(table.c.email == old).values(email=new))
        else:
            conn.execute(table.delete().where(table.c.email == old))
    for table in (event_sent, event_pending):
        theirs = sa.select(table.c.event_key).where(table.c.email == new).scalar_subquery()
        conn.execute(
            table.update()
            .where(table.c.email == old, table.c.event_key.not_in(theirs))
            .values(email=new)
        )
        conn.execute(table.delete().where(table.c.email == old))


class LedgerStore(StoreBase):
    """Accepted values and tags, failures, pushed digests, address moves."""

    # -- PushLedger -------------------------------------------------------------

    def member_states(self, emails: Iterable[str]) -> dict[str, MemberPushState]:
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        pushed_at: dict[str, datetime] = {}
        fields: dict[str, dict[str, MergeValue]] = {}
        tags: dict[str, set[str]] = {}
        failures: dict[str, PushFailure] = {}
        # Rows are fetched a statement at a time (``all``), not one by one:
        # a full pass after a rules change plans tens of thousands of members.
        with self.engine.connect() as conn:
            # Going live, no member has tags or a failure yet: those
            # look-ups would find nothing, chunk after chunk.
            any_tags, any_failures = self._has_rows(conn, member_tag), self._has_rows(conn, push)
            for chunk in chunks(wanted, self.ids_per_statement):
                members = sa.select(member.c.email, member.c.pushed_at, member.c.fields_json)
                for email, at, fields_json in conn.execute(
                    members.where(self._among(member.c.email, chunk))
                ).all():
                    pushed_at[email] = at
                    fields[email] = _decode(fields_json)
                active = sa.select(member_tag.c.email, member_tag.c.tag)
                for email, tag in (
                    conn.execute(active.where(self._among(member_tag.c.email, chunk))).all()
                    if any_tags
                    else ()
                ):
                    tags.setdefault(email, set()).add(tag)
                for row in (
                    conn.execute(
                        sa.select(push).where(
                            self._among(push.c.email, chunk), push.c.state == "failed"
                        )
                    ).all()
                    if any_failures
                    else ()
                ):
                    failures[row.email] = self._failure(row)
        return {
            email: MemberPushState(
                email=email,
                fields=fields.get(email, {}),
                tags=frozenset(tags.get(email, ())),
                pushed_at=pushed_at.get(email),
                failure=failures.get(email),
            )
            for email in wanted
            if email in pushed_at or email in failures
        }

    @staticmethod
    def _failure(row: sa.Row[Any]) -> PushFailure:
        return PushFailure(
            email=row.email,
            reason=row.reason,
            permanent=bool(row.permanent),
            failed_at=row.failed_at,
            fingerprint=row.fingerprint,
            attempts=int(row.attempts),
            next_retry_at=row.next_retry_at,
        )

    def record_accepted(
        self,
        email: str,
        fields: Mapping[str, MergeValue],
        tags: frozenset[str] | None,
        at: datetime,
    ) -> None:
        self.record_accepted_many([AcceptedPush(email=email, fields=fields, tags=tags, at=at)])

    def record_accepted_many(self, pushes: Sequence[AcceptedPush]) -> None:
        if not pushes:
            return
        merged: dict[str, AcceptedPush] = {}
        for p in pushes:
            email = normalise_email(p.email)
            before = merged.get(email)
            if before is None:
                merged[email] = p  # keyed by the normalised address: its own is not read
            else:
                merged[email] = AcceptedPush(
                    email,
                    {**before.fields, **p.fields},
                    max(before.at, p.at),
                    p.tags if p.tags is not None else before.tags,
                )
        members = [
            {"email": e, "pushed_at": p.at, "fields_json": _encode(p.fields)}
            for e, p in merged.items()
        ]
        retagged = [e for e, p in merged.items() if p.tags is not None]
        tag_rows = [
            {"email": e, "tag": tag, "pushed_at": merged[e].at}
            for e in retagged
            for tag in sorted(merged[e].tags or ())
        ]
        emails = list(merged)
        with self.engine.begin() as conn:
            merge = {"fields_json": _MERGE_FIELDS[self.dialect]}
            self._upsert(conn, member, members, ("email",), merge=merge)
            for chunk in chunks(retagged):
                conn.execute(member_tag.delete().where(self._among(member_tag.c.email, chunk)))
            if tag_rows:
                conn.execute(member_tag.insert(), tag_rows)
            # Accepted: their failures are cleared (going live there are
            # none, and 2,000 deletes of 500 ids each are skipped).
            if self._has_rows(conn, push):
                for chunk in chunks(emails):
                    conn.execute(push.delete().where(self._among(push.c.email, chunk)))

    def record_failure(self, failure: PushFailure) -> None:
        self.record_failures([failure])

    def record_failures(self, failures: Sequence[PushFailure]) -> None:
        if not failures:
            return
        latest = {normalise_email(f.email): f for f in failures}
        with self.engine.begin() as conn:
            previous: dict[str, tuple[str, int]] = {}
            for chunk in chunks(list(latest)):
                for row in conn.execute(
                    sa.select(push.c.email, push.c.fingerprint, push.c.attempts).where(
                        self._among(push.c.email, chunk), push.c.state == "failed"
                    )
                ):
                    previous[row.email] = (row.fingerprint, int(row.attempts))
            rows = []
            for email, f in latest.items():
                attempts = f.attempts
                if email in previous and previous[email][0] == f.fingerprint:
                    attempts = max(attempts, previous[email][1] + 1)
                rows.append(
                    {
                        "email": email,
                        "state": "failed",
                        "reason": f.reason,
                        "permanent": f.permanent,
                        "fingerprint": f.fingerprint,
                        "attempts": attempts,
                        "failed_at": f.failed_at,
                        "next_retry_at": f.next_retry_at,
                    }
                )
            self._upsert(conn, push, rows, ("email",))

    def failures(self, *, permanent: bool | None = None) -> list[PushFailure]:
        query = sa.select(push).where(push.c.state == "failed").order_by(push.c.email)
        if permanent is not None:
            query = query.where(push.c.permanent == permanent)
        with self.engine.connect() as conn:
            return [self._failure(row) for row in conn.execute(query)]

    # -- pushed digests, the audience gone, address moves ----------------------

    def set_pushed_fingerprints(
        self,
        entity_type: str,
        fingerprints: Mapping[str, str],
        rows: Mapping[str, str | None] | None = None,
    ) -> None:
        """Record what Mailchimp accepted from these entities (after the
        push), and with it the digest of the compiled SQL's row each came
        from (``rows``; None when unknown): the entity is settled."""
        rows = rows or {}
        update_each(
            self.engine,
            entity_type,
            [
                {"k_id": k, "k_pushed_fp": v, "k_row_fp": rows.get(k)}
                for k, v in fingerprints.items()
            ],
        )

    def forget_audience(self) -> None:
        """The audience is gone (deleted in Mailchimp): nothing it accepted is
        there any more, so the ledger of accepted values, tags and failures is
        emptied and every entity's pushed digest cleared; the next cycle is a
        full pass that pushes everyone again (as new members) once an audience
        exists. Events recorded sent stay sent."""
        with self.engine.begin() as conn:
            for table in (member_tag, push, member):
                conn.execute(table.delete())
            conn.execute(entity_state.update().values(pushed_fp=None, row_fp=None))
            conn.execute(watermark.delete().where(watermark.c.name == "last_full_cycle"))

    def failed_emails(self, emails: Iterable[str]) -> set[str]:
        """Which of these members have a failed push on record (refused, or
        held back waiting for a retry)."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in chunks(wanted, 900) if self._has_rows(conn, push) else ():
                found.update(
                    conn.execute(
                        sa.select(push.c.email).where(
                            push.c.state == "failed", self._among(push.c.email, chunk)
                        )
                    ).scalars()
                )
        return found

    def move_member(self, old: str, new: str) -> None:
        """The application changed the address and Mailchimp the member's:
        the ledger and the entities follow, so nothing is sent twice to the
        new address."""
        old, new = normalise_email(old), normalise_email(new)
        if old == new:
            return
        with self.engine.begin() as conn:
            move_ledger(conn, old, new)
            conn.execute(entity_state.update().where(entity_state.c.email == old).values(email=new))
