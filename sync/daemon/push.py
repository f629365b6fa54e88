"""The cycle's push buffer: changed members accumulated, then pushed together.

Changed members accumulate across chunks and entity types and are pushed
``flush_size`` at a time, so that API calls are proportional to the change,
not to the number of chunks. Once Mailchimp accepted a member, the digests
of the entities feeding it are recorded (and the evaluations held back
until the push are stored); a member refused or held back keeps its
entities due, so the next pass tries again. ``Sink`` is what the buffer
pushes to: Mailchimp, a dry run, or ``mailsync plan``'s counting sink.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sync.addresses import normalise_email
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.type_run import Derived
from sync.evaluate.members import MemberBuilder
from sync.mailchimp.summary import PushSummary
from sync.records import DesiredMember, EventDue
from sync.rules.model import Entity
from sync.state.entities import EntityEvaluation
from sync.state.store import StateStore

#: The cycle's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.cycle")
#: How far a long cycle got (``sync.daemon.logs.PROGRESS_LOGGER``).
progress = logging.getLogger("sync.daemon.progress")

#: Changed members accumulated before a push: a multiple of the batch
#: subscribe (500) and ``/batches`` job (5000) sizes, so that pushing in
#: several rounds costs no more calls than pushing once; memory stays bounded
#: (the members, their plans and ledger states) on a first cycle that creates
#: a million members.
FLUSH_SIZE = 20_000


class Sink(Protocol):
    def push(self, members: Iterable[DesiredMember]) -> PushSummary: ...

    def change_address(self, old: str, new: str) -> bool: ...

    def remove_member(self, email: str, how: str) -> bool: ...


@dataclass
class Pending:
    """Members accumulated for the next push, and the entities behind them."""

    members: dict[str, MemberBuilder] = field(default_factory=dict)
    #: email -> (entity type, id, contribution digest, row digest) of the
    #: entities feeding it
    contributors: dict[str, list[tuple[str, str, str, str | None]]] = field(default_factory=dict)
    #: Evaluations of those entities, stored once the push is done.
    evaluations: list[EntityEvaluation] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.members)


class PushBuffer:
    """Members to push, flushed when ``flush_size`` accumulated and at the
    end of the cycle; with ``record=False`` (a dry run) nothing is written
    to the state store."""

    def __init__(
        self,
        sink: Sink,
        state: StateStore,
        summary: CycleSummary,
        *,
        now: datetime,
        record: bool,
        flush_size: int = FLUSH_SIZE,
    ) -> None:
        self.sink = sink
        self.state = state
        self.summary = summary
        self.now = now
        self.record = record
        self.flush_size = flush_size
        self._pending = Pending()

    def add(
        self,
        entity: Entity,
        entity_id: str,
        email: str,
        derived: Derived,
        events: Sequence[EventDue],
        fingerprint: str,
        row_fp: str | None = None,
    ) -> None:
        """Queue one entity's contribution to the member at ``email``
        (``fingerprint`` its digest, ``row_fp`` the digest of the compiled
        SQL's row it came from: both recorded once the push is accepted)."""
        pending = self._pending
        builder = pending.members.get(email)
        if builder is None:
            builder = pending.members[email] = MemberBuilder(email)
        elif entity.merge_fields:
            contributors = pending.contributors.get(email, ())
            same_type = [i for t, i, _, _ in contributors if t == entity.name]
            if same_type:
                # Entities that only send events (a player's matches) share a
                # member by design; merge fields from two entities conflict.
                log.warning(
                    "%s is the address of several %s entities (%s, %s): one member, "
                    "the last one read sets its merge fields",
                    email,
                    entity.name,
                    same_type[0],
                    entity_id,
                )
        builder.add_values(entity, entity_id, derived.merge_fields, derived.tags, events)
        pending.contributors.setdefault(email, []).append(
            (entity.name, entity_id, fingerprint, row_fp)
        )

    def store_once_pushed(self, evaluation: EntityEvaluation) -> None:
        """Store ``evaluation`` only once its member is pushed: a cycle killed
        mid-push leaves the entity due, so the next tick (not only the next
        full pass) pushes it again."""
        self._pending.evaluations.append(evaluation)

    def flush_if_full(self) -> None:
        if len(self._pending) >= self.flush_size:
            self.flush()
            # A cycle that pushes this much (going live at a million users
            # takes minutes) says how far it got.
            done = self.summary.push
            progress.info(
                "pushing: %d members pushed so far this cycle, %d failed, %d API calls",
                done.pushed,
                done.failed,
                sum(done.calls.values()),
            )

    def flush(self) -> None:
        pending, self._pending = self._pending, Pending()
        if not pending.members:
            return
        push = self.sink.push(b.build() for b in pending.members.values())
        self.summary.absorb(push)
        if not self.record or push.dry_run:
            return
        failed = {normalise_email(f.email) for f in push.failures}
        # Values of a merge tag the audience lacks were not kept: push again.
        failed |= set(push.not_kept)
        failed |= self.state.failed_emails(pending.members)
        settled: dict[tuple[str, str], tuple[str, str | None]] = {}
        for email, contributors in pending.contributors.items():
            if email in failed:
                continue  # refused or held back: the next pass tries again
            for entity_type, ident, fp, row_fp in contributors:
                settled[entity_type, ident] = (fp, row_fp)
        if pending.evaluations:
            # Their digests are written with them; the others' below.
            self.state.upsert_evaluations(pending.evaluations, at=self.now, settled=settled)
            self.summary.evaluations_written += len(pending.evaluations)
            for e in pending.evaluations:
                settled.pop((e.entity_type, e.entity_id), None)
        accepted: dict[str, dict[str, str]] = {}
        rows: dict[str, dict[str, str | None]] = {}
        for (entity_type, ident), (fp, row_fp) in settled.items():
            accepted.setdefault(entity_type, {})[ident] = fp
            rows.setdefault(entity_type, {})[ident] = row_fp
        for entity_type, fingerprints in accepted.items():
            self.state.set_pushed_fingerprints(entity_type, fingerprints, rows[entity_type])
