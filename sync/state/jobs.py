"""``/batches`` jobs a push left running, until a later push collects them.

One row per operation (``batch_running``): the job, the member, the kind of
operation and the member's plan, so that the answer can be applied as the
push that sent it would have (``sync.mailchimp.running``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.mailchimp.ledger import RunningOperation
from sync.state.base import StoreBase, chunks
from sync.state.tables import batch_running


class JobStore(StoreBase):
    """The ``batch_running`` rows."""

    def record_running(self, operations: Sequence[RunningOperation]) -> None:
        rows = [
            {
                "batch_id": o.batch_id,
                "operation_id": o.operation_id,
                "email": normalise_email(o.email),
                "kind": o.kind,
                "plan_json": o.plan_json,
                "submitted_at": o.submitted_at,
            }
            for o in operations
        ]
        if not rows:
            return
        with self.engine.begin() as conn:
            self._upsert(conn, batch_running, rows, ("batch_id", "operation_id"))

    def running_operations(self) -> dict[str, list[RunningOperation]]:
        found: dict[str, list[RunningOperation]] = {}
        with self.engine.connect() as conn:
            if not self._has_rows(conn, batch_running):
                return found
            rows = conn.execute(
                sa.select(batch_running).order_by(
                    batch_running.c.submitted_at,
                    batch_running.c.batch_id,
                    batch_running.c.operation_id,
                )
            )
            for row in rows:
                found.setdefault(row.batch_id, []).append(
                    RunningOperation(
                        batch_id=row.batch_id,
                        operation_id=row.operation_id,
                        email=row.email,
                        kind=row.kind,
                        plan_json=row.plan_json,
                        submitted_at=row.submitted_at,
                    )
                )
        return found

    def running_emails(self, emails: Iterable[str] | None = None) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as conn:
            if not self._has_rows(conn, batch_running):
                return found
            query = sa.select(batch_running.c.email).distinct()
            if emails is None:
                return set(conn.execute(query).scalars())
            wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
            for chunk in chunks(wanted):
                found.update(
                    conn.execute(query.where(self._among(batch_running.c.email, chunk))).scalars()
                )
        return found

    def running_batches(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(batch_running.c.batch_id).distinct()).scalars())

    def forget_running(self, batch_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(batch_running.delete().where(batch_running.c.batch_id == batch_id))
