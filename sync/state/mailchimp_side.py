"""What Mailchimp's side says, whatever mailsync pushed.

Members' Mailchimp statuses and addresses changed there (from webhooks, the
reconciliation poll and push answers, ``sync.mailchimp.changes``), the
webhook history, and the audience's own problems (merge tags it lacks).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.mailchimp.changes import OPTED_OUT, MailchimpChange, apply_change
from sync.mailchimp.ledger import AudienceProblem, MailchimpMember
from sync.state.base import StoreBase, chunks, utc_now
from sync.state.ledger import move_ledger
from sync.state.tables import audience_problem, mailchimp_alias, mailchimp_change, mailchimp_member


class MailchimpSideStore(StoreBase):
    """Mailchimp-side member states, address moves, webhooks, audience problems."""

    # -- the audience -------------------------------------------------------------

    def record_audience_problems(self, problems: Sequence[AudienceProblem]) -> None:
        latest = {p.tag: p for p in problems}
        if not latest:
            return
        with self.engine.begin() as conn:
            first = dict(
                conn.execute(
                    sa.select(audience_problem.c.tag, audience_problem.c.first_seen_at).where(
                        self._among(audience_problem.c.tag, list(latest))
                    )
                ).all()
            )
            rows = [
                {
                    "tag": p.tag,
                    "reason": p.reason,
                    "members": p.members,
                    "first_seen_at": first.get(p.tag) or p.first_seen_at or p.seen_at,
                    "last_seen_at": p.seen_at,
                }
                for p in latest.values()
            ]
            self._upsert(conn, audience_problem, rows, ("tag",))

    def clear_audience_problems(self, tags: Iterable[str]) -> None:
        wanted = sorted(set(tags))
        if wanted:
            with self.engine.begin() as conn:
                for chunk in chunks(wanted):
                    conn.execute(
                        audience_problem.delete().where(self._among(audience_problem.c.tag, chunk))
                    )

    def audience_problems(self) -> list[AudienceProblem]:
        query = sa.select(audience_problem).order_by(audience_problem.c.tag)
        with self.engine.connect() as conn:
            return [
                AudienceProblem(
                    tag=row.tag,
                    reason=row.reason,
                    members=int(row.members),
                    seen_at=row.last_seen_at,
                    first_seen_at=row.first_seen_at,
                )
                for row in conn.execute(query)
            ]

    # -- Mailchimp's side (webhooks, reconciliation poll, push answers) -----------

    def mailchimp_members(self, emails: Iterable[str]) -> dict[str, MailchimpMember]:
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        moved: dict[str, str] = {}
        rows: dict[str, sa.Row[Any]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted) if self._has_rows(conn, mailchimp_alias) else ():
                for row in conn.execute(
                    sa.select(mailchimp_alias).where(
                        self._among(mailchimp_alias.c.old_email, chunk)
                    )
                ):
                    moved[row.old_email] = row.new_email
            addresses = list({moved.get(e, e) for e in wanted})
            for chunk in chunks(addresses) if self._has_rows(conn, mailchimp_member) else ():
                for row in conn.execute(
                    sa.select(mailchimp_member).where(self._among(mailchimp_member.c.email, chunk))
                ):
                    rows[row.email] = row
        found: dict[str, MailchimpMember] = {}
        for email in wanted:
            address = moved.get(email, email)
            known = rows.get(address)
            if known is None and address == email:
                continue
            found[email] = (
                MailchimpMember(email, address)
                if known is None
                else MailchimpMember(
                    email,
                    address,
                    known.status,
                    known.reason,
                    known.status_at,
                    known.source,
                    json.loads(known.merges_json) if known.merges_json else {},
                )
            )
        return found

    def record_mailchimp_changes(self, changes: Sequence[MailchimpChange]) -> int:
        ordered = sorted(changes, key=lambda c: c.at)
        if not ordered:
            return 0
        stamp = utc_now()
        emails = {c.email for c in ordered} | {c.old_email for c in ordered if c.old_email}
        applied = 0
        with self.engine.begin() as conn:
            current: dict[str, dict[str, Any]] = {}
            for chunk in chunks(sorted(emails)):
                for row in conn.execute(
                    sa.select(mailchimp_member).where(self._among(mailchimp_member.c.email, chunk))
                ):
                    current[row.email] = dict(row._mapping)
            known_keys: set[str] = set()
            keys = [c.key for c in ordered if c.key is not None]
            for chunk in chunks(keys):
                known_keys.update(
                    conn.execute(
                        sa.select(mailchimp_change.c.change_key).where(
                            self._among(mailchimp_change.c.change_key, chunk)
                        )
                    ).scalars()
                )
            changed: set[str] = set()
            gone: set[str] = set()
            for change in ordered:
                if change.key is not None:
                    if change.key in known_keys:
                        continue  # a delivery repeated: applied already
                    known_keys.add(change.key)
                    conn.execute(
                        mailchimp_change.insert().values(
                            change_key=change.key,
                            kind=change.kind,
                            email=change.email,
                            old_email=change.old_email,
                            status=change.status,
                            reason=change.reason,
                            source=change.source,
                            fired_at=change.at,
                            recorded_at=stamp,
                        )
                    )
                if change.kind == "upemail" and change.old_email:
                    self._move_member(conn, change.old_email, change.email, change.at)
                    if change.old_email in current and change.email not in current:
                        current[change.email] = {**current.pop(change.old_email)}
                        current[change.email]["email"] = change.email
                        changed.add(change.email)
                        gone.add(change.old_email)
                    applied += 1
                    continue
                after = apply_change(current.get(change.email), change, stamp)
                if after is not None:
                    current[change.email] = after
                    changed.add(change.email)
                    gone.discard(change.email)
                    applied += 1
            for chunk in chunks(sorted(gone)):
                conn.execute(
                    mailchimp_member.delete().where(self._among(mailchimp_member.c.email, chunk))
                )
            self._upsert(conn, mailchimp_member, [current[e] for e in sorted(changed)], ("email",))
        return applied

    def _move_member(self, conn: sa.Connection, old: str, new: str, at: datetime) -> None:
        """The address changed in Mailchimp: what the ledger knows of ``old``
        is now known of ``new`` (unless ``new`` has its own), and pushes for
        ``old`` go to ``new`` from now on."""
        old, new = normalise_email(old), normalise_email(new)
        if old == new:
            return
        move_ledger(conn, old, new)
        # Earlier moves to `old` now lead to `new`; a move back undoes one.
        conn.execute(
            mailchimp_alias.update().where(mailchimp_alias.c.new_email == old).values(new_email=new)
        )
        conn.execute(mailchimp_alias.delete().where(mailchimp_alias.c.old_email == new))
        self._upsert(
            conn,
            mailchimp_alias,
            [{"old_email": old, "new_email": new, "moved_at": at}],
            ("old_email",),
        )

    def mailchimp_opt_outs(self, since: datetime | None = None) -> list[MailchimpMember]:
        """Members now unsubscribed or cleaned in Mailchimp (since ``since``),
        oldest first: the people the application must not mail."""
        query = (
            sa.select(mailchimp_member)
            .where(mailchimp_member.c.status.in_(OPTED_OUT))
            .order_by(mailchimp_member.c.status_at, mailchimp_member.c.email)
        )
        if since is not None:
            query = query.where(mailchimp_member.c.status_at >= since)
        with self.engine.connect() as conn:
            return [
                MailchimpMember(
                    row.email, row.email, row.status, row.reason, row.status_at, row.source
                )
                for row in conn.execute(query)
            ]

    def mailchimp_previous_addresses(self, emails: Iterable[str]) -> dict[str, list[str]]:
        """Addresses these members had before changing them in Mailchimp."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    sa.select(mailchimp_alias)
                    .where(self._among(mailchimp_alias.c.new_email, chunk))
                    .order_by(mailchimp_alias.c.moved_at)
                ):
                    found.setdefault(row.new_email, []).append(row.old_email)
        return found

    def mailchimp_summary(self) -> dict[str, Any]:
        """Counts for ``mailsync status``: members per Mailchimp-side status,
        addresses moved, and the latest webhook received."""
        with self.engine.connect() as conn:
            statuses = {
                str(status): int(count)
                for status, count in conn.execute(
                    sa.select(mailchimp_member.c.status, sa.func.count())
                    .where(mailchimp_member.c.status.is_not(None))
                    .group_by(mailchimp_member.c.status)
                )
            }
            moved = int(
                conn.execute(sa.select(sa.func.count()).select_from(mailchimp_alias)).scalar_one()
            )
            last = conn.execute(sa.select(sa.func.max(mailchimp_change.c.recorded_at))).scalar()
        return {
            "statuses": dict(sorted(statuses.items())),
            "addresses_moved": moved,
            "last_webhook_at": last.isoformat() if isinstance(last, datetime) else None,
        }

    def mailchimp_history(self, email: str, limit: int = 20) -> list[MailchimpChange]:
        """Webhooks received about this address (or moving it), newest first."""
        key = normalise_email(email)
        query = (
            sa.select(mailchimp_change)
            .where(sa.or_(mailchimp_change.c.email == key, mailchimp_change.c.old_email == key))
            .order_by(mailchimp_change.c.fired_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                MailchimpChange(
                    row.kind,
                    row.email,
                    row.fired_at,
                    row.source,
                    row.status,
                    row.reason,
                    row.old_email,
                    key=row.change_key,
                )
                for row in conn.execute(query)
            ]
