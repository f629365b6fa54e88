"""The cycle's push buffer: changed members accumulated, then pushed together.

Changed members accumulate across chunks and entity types and are pushed
``flush_size`` at a time, so that API calls are proportional to the change,
not to the number of chunks. Once Mailchimp accepted a member, the digests
of the entities feeding it are recorded (and the evaluations held back
until the push are stored); a member refused or held back keeps its
entities due, so the next pass tries again. ``Sink`` is what the buffer
pushes to: Mailchimp, a dry run, or ``mailsync plan``'s counting sink.

Pushing overlaps deriving: a full buffer is pushed (and what Mailchimp
accepted recorded) on a thread of its own while the cycle derives the next
chunks. At most one push is in flight, and the next one starts only once it
is over, so no member is ever in two pushes at once and each push is planned
against everything the one before recorded: pushes and their writes come
in the same order as without the overlap.

Settling a push (storing the evaluations held back for it, recording the
digests of the entities whose members Mailchimp accepted) is the cycle's
own work, on its thread: it runs while the next push is already sending,
so that Mailchimp's connections do not stand idle meanwhile. It only reads
and writes the rows of the settled push's entities and members; when the
next push has a member in common with it, it is settled first. ``drain``
waits for the push in flight, settles it and raises its error; the cycle
drains before anything that reads or changes what a push writes (another
entity type, an address change, a deletion) and at its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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

    def collect_running(self) -> PushSummary: ...

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


@dataclass
class Pushed:
    """A push sent, and what settling it needs."""

    push: PushSummary
    pending: Pending
    #: Seconds the push took (settling it comes on top).
    took: float
    #: Whether it was a full buffer's (its end is logged as progress).
    was_full: bool


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
        #: Pushes overlap deriving only when they send and record: a dry run
        #: or a preview costs nothing to wait for, and an in-memory SQLite
        #: store is one database per thread.
        self.overlap = record and state.shared_across_threads
        self._pool: ThreadPoolExecutor | None = None
        #: The push in flight.
        self._in_flight: Future[Pushed] | None = None

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

    def collect_running(self) -> None:
        """Before the cycle derives anything: collect the ``/batches`` jobs
        earlier cycles left running, so that what Mailchimp accepted is known
        (a dry run or a preview collects nothing)."""
        if not self.record:
            return
        started = time.perf_counter()
        push = self.sink.collect_running()
        if push.dry_run:
            return
        self.summary.absorb(push)
        self.summary.push_s += time.perf_counter() - started

    def flush_if_full(self) -> None:
        if len(self._pending) >= self.flush_size:
            self._start(was_full=True)

    def flush(self) -> None:
        """Push what is pending and wait until everything pushed is recorded."""
        self._start(was_full=False)
        self.drain()

    def drain(self) -> None:
        """Wait for the push in flight, if any, and settle it; raises what
        it raised."""
        done = self._wait()
        if done is not None:
            self._settle(done)

    def close(self, *, failing: bool = False) -> None:
        """End of the cycle: wait for the push in flight, so that nothing
        runs after it. When the cycle is ``failing`` already, its own error
        goes up and a failure of that push is only logged."""
        try:
            self.drain()
        except Exception:
            if not failing:
                raise
            log.exception("the push in flight failed too")
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _start(self, *, was_full: bool) -> None:
        """Push the pending members: in the background when overlapping,
        once the push before is over; that one is settled meanwhile."""
        # Built while the push in flight still sends: the push's thread has
        # the calls to make.
        members = [b.build() for b in self._pending.members.values()]
        done = self._wait()
        pending, self._pending = self._pending, Pending()
        if done is not None and not done.pending.members.keys().isdisjoint(pending.members):
            # A member in both: the next push is planned against all this one records.
            self._settle(done)
            done = None
        if pending.members:
            if not self.overlap:
                pushed = self._push(members, pending, was_full)
                self.summary.push_wait_s += pushed.took
                self._settle(pushed)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="mailsync-flush"
                    )
                self._in_flight = self._pool.submit(self._push, members, pending, was_full)
        if done is not None:
            self._settle(done)

    def _wait(self) -> Pushed | None:
        """The push in flight, once it is over; raises what it raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return None
        waited = time.perf_counter()
        done = in_flight.result()
        # (Never more than the push took: the rest is the threads' hand-over.)
        self.summary.push_wait_s += min(time.perf_counter() - waited, done.took)
        return done

    def _push(self, members: list[DesiredMember], pending: Pending, was_full: bool) -> Pushed:
        """Push the ``members`` built from ``pending``; runs on the push's
        thread when overlapping, touching nothing of the cycle's own."""
        started = time.perf_counter()
        push = self.sink.push(members)
        return Pushed(push, pending, time.perf_counter() - started, was_full)

    def _settle(self, done: Pushed) -> None:
        """Record what the push ``done`` settled (the cycle's thread) and
        count it into the cycle's summary."""
        started = time.perf_counter()
        written = self._record_settled(done.push, done.pending)
        self.summary.absorb(done.push)
        self.summary.evaluations_written += written
        self.summary.push_s += done.took + time.perf_counter() - started
        if done.was_full:
            # A cycle that pushes this much (going live at a million users
            # takes minutes) says how far it got.
            so_far = self.summary.push
            progress.info(
                "pushing: %d members pushed so far this cycle, %d failed, %d API calls",
                so_far.pushed,
                so_far.failed,
                sum(so_far.calls.values()),
            )

    def _record_settled(self, push: PushSummary, pending: Pending) -> int:
        """Store the evaluations held back for ``pending`` and the digests of
        the entities whose members Mailchimp accepted; the number of
        evaluations stored."""
        if not self.record or push.dry_run:
            return 0
        failed = {normalise_email(f.email) for f in push.failures}
        # Values of a merge tag the audience lacks were not kept: push again.
        failed |= set(push.not_kept)
        failed |= self.state.failed_emails(pending.members)
        # In a /batches job left running: accepted only once it is collected.
        failed |= self.state.running_emails(pending.members)
        settled: dict[tuple[str, str], tuple[str, str | None]] = {}
        for email, contributors in pending.contributors.items():
            if email in failed:
                continue  # refused or held back: the next pass tries again
            for entity_type, ident, fp, row_fp in contributors:
                settled[entity_type, ident] = (fp, row_fp)
        if pending.evaluations:
            # Their digests are written with them; the others' below.
            self.state.upsert_evaluations(pending.evaluations, at=self.now, settled=settled)
            for e in pending.evaluations:
                settled.pop((e.entity_type, e.entity_id), None)
        accepted: dict[str, dict[str, str]] = {}
        rows: dict[str, dict[str, str | None]] = {}
        for (entity_type, ident), (fp, row_fp) in settled.items():
            accepted.setdefault(entity_type, {})[ident] = fp
            rows.setdefault(entity_type, {})[ident] = row_fp
        for entity_type, fingerprints in accepted.items():
            self.state.set_pushed_fingerprints(entity_type, fingerprints, rows[entity_type])
        return len(pending.evaluations)
