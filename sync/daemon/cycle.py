"""One cycle of the daemon: derive the desired state, diff it, push the difference.

Statuses are derived from the application's data and the clock, never
stored by the application, so a cycle does not track what changed: it
*derives* what every entity should look like in Mailchimp now and compares
that with what the state store says Mailchimp accepted. For each entity
type, in dependency order (a Little World match before the users whose facts
count matches):

1. **derive**: the compiled SQL (``sync.sql.evaluator``) evaluates the whole
   population (a *full* pass) or, in a *tick* between full passes, only the
   entities with new rows since the previous cycle, a timed change due, a
   failed push to retry or events of unknown outcome. A type whose rules or
   sources cannot be compiled, or whose compiled evaluation fails on bad data,
   is evaluated by the Python engine instead (``sync.evaluate.engine``), for that type
   only (``sync.daemon.derive``);
2. **diff**: each chunk of results is compared with the stored evaluations
   (status, entry, next change: written only when they differ) and with a
   digest of the member contribution (merge fields, tags) Mailchimp last
   accepted from the entity: only the differences go further
   (``sync.daemon.diff``);
3. **events**: the occurrences of event-bearing actions inside the event
   window (``events_since``: ``events_max_age`` back, never before the state
   store went live nor before a re-initialisation) and the status-entry
   events are keyed as the engine keys them and looked up among the events
   already sent (an anti-join). An entity with an event not sent yet is
   evaluated by the engine, which gives the events with their properties
   (``sync.daemon.events``);
4. **push**: changed members accumulate across chunks and types and are
   pushed together (``flush_size`` at a time), so API calls are proportional
   to the change, not to the number of chunks. Once Mailchimp accepted a
   member, the digests of its entities are recorded (``sync.daemon.push``).

A full pass also finds the entities the sources no longer list and forgets
them (``status`` stops counting them; their members stay in Mailchimp). An
entity whose address changed gets its member's address changed in Mailchimp,
and keeps its history (``sync.daemon.identities``). This module chooses the
entities (the whole population in a full pass, the candidates in a tick) and
runs the types in order; ``CycleSummary`` (``sync.daemon.cycle_summary``)
says what the cycle did. With ``record=False`` (a dry run) nothing at all is
written to the state store; with ``preview`` too (``mailsync plan``), an
entity whose member would get nothing new is left alone even when its
evaluation moved (``sync.daemon.settled``). The clock is not read here: ``now`` is a
parameter, so the demo and the tests can move time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.derive import Deriver
from sync.daemon.diff import Differ
from sync.daemon.events import window_occurrences
from sync.daemon.identities import IdentityChanges
from sync.daemon.push import FLUSH_SIZE, PushBuffer, Sink
from sync.daemon.settled import basis_key
from sync.daemon.type_run import TypeRun
from sync.exceptions import ConfigurationError
from sync.records import ActionOccurrence
from sync.rules.model import Ruleset
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceReader
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import StateStore

log = logging.getLogger(__name__)

#: How many due entities one tick takes at most; the rest are the backlog of
#: the next cycle (the next full pass takes them all).
MAX_DUE = 100_000

_ONE_TICK = timedelta(microseconds=1)


def dependency_order(ruleset: Ruleset, sources: SourcesConfig) -> list[str]:
    """Entity types with the ones whose statuses others count first."""
    types = [name for name in ruleset.entities if name in sources.entities]
    deps = {
        name: {rel.name for rel in sources.entity(name).relations if rel.name in types}
        for name in types
    }
    ordered: list[str] = []
    while len(ordered) < len(types):
        ready = [t for t in types if t not in ordered and deps[t] <= set(ordered)]
        if not ready:
            raise ConfigurationError(f"sources: entity relations form a cycle: {deps}")
        ordered.extend(ready)
    return ordered


class Cycle:
    """One pass over the entities; create one per cycle."""

    def __init__(
        self,
        ruleset: Ruleset,
        sources: SourcesConfig,
        reader: SourceReader,
        state: StateStore,
        sink: Sink,
        *,
        now: datetime,
        full: bool,
        evaluator: SqlEvaluator | None = None,
        batch_size: int = 5000,
        events_since: datetime | None = None,
        count_skipped_since: datetime | None = None,
        tick_since: Mapping[str, datetime] | None = None,
        record: bool = True,
        on_delete: str = "keep",
        flush_size: int = FLUSH_SIZE,
        stop: threading.Event | None = None,
        unusable_checked: dict[str, datetime] | None = None,
        preview: bool = False,
    ) -> None:
        self.ruleset = ruleset
        self.sources = sources
        self.reader = reader
        self.state = state
        self.now = now
        self.full = full
        self.events_since = events_since or now - timedelta(days=7)
        #: Going live: occurrences from here to ``events_since`` are counted
        #: as skipped (the first cycle only).
        self.count_skipped_since = count_skipped_since
        self.tick_since = dict(tick_since or {})
        self.stop = stop or threading.Event()
        self.record = record
        self.summary = CycleSummary(now=now, full=full, dry_run=not record)
        self.summary.events_since = self.events_since
        # The parts of a cycle, each in its own module: the push buffer, the
        # address changes and deletions, the diff, the derivation.
        self.buffer = PushBuffer(
            sink, state, self.summary, now=now, record=record, flush_size=flush_size
        )
        self.identities = IdentityChanges(
            sink, state, self.summary, record=record, on_delete=on_delete
        )
        differ = Differ(state, self.summary, self.buffer, self.identities, now=now, record=record)
        self.deriver = Deriver(
            sources,
            reader,
            state,
            differ,
            self.summary,
            now=now,
            evaluator=evaluator,
            batch_size=batch_size,
            stop=self.stop,
            unusable_checked=unusable_checked,
            preview=preview and not record,
        )

    def run(self) -> CycleSummary:
        started = time.monotonic()
        self.buffer.collect_running()
        forced = self._forced_ids()
        try:
            for entity_type in dependency_order(self.ruleset, self.sources):
                if self.stop.is_set():
                    self.summary.stopped = True
                    break
                self._run_type(entity_type, forced.get(entity_type, set()))
            if not self.summary.stopped:
                self.buffer.flush()
        except BaseException:
            # A push in flight is finished (and recorded) before the error goes up.
            self.buffer.close(failing=True)
            raise
        self.buffer.close()
        if self.record:
            self.summary.members_in_running_jobs = len(self.state.running_emails())
        self.summary.duration_s = time.monotonic() - started
        return self.summary

    def _forced_ids(self) -> dict[str, set[str]]:
        """Entities whose members must be looked at by the sink this cycle: a
        failed push due for a retry, events whose outcome is unknown."""
        emails = {
            f.email
            for f in self.state.failures()
            if f.next_retry_at is None or f.next_retry_at <= self.now
        }
        emails |= self.state.emails_with_pending_events()
        # Those in a /batches job still running wait for it to be collected.
        emails -= self.state.running_emails(emails)
        return self.state.entity_ids_by_email(emails) if emails else {}

    def _window(self, entity_type: str) -> datetime:
        """Events at or after this instant may be sent for this type: never
        one superseded by a re-initialisation (at or before its instant)."""
        since = self.events_since
        reinit_at = self.state.reinit_at(entity_type)
        if reinit_at is not None and reinit_at + _ONE_TICK > since:
            since = reinit_at + _ONE_TICK
        return since

    def _candidates(self, entity_type: str, forced: set[str]) -> list[str] | None:
        """Ids a tick evaluates, or None for the whole population."""
        since = self.tick_since.get(entity_type)
        if self.full or since is None or self.sources.entity(entity_type).relations:
            # Rollups count related entities' statuses: evaluated whole, in SQL.
            return None
        ids = set(forced)
        ids.update(self.reader.changed_ids(entity_type, since=since, now=self.now))
        due = self.state.due(self.now, MAX_DUE + 1, entity_type=entity_type)
        if len(due) > MAX_DUE:
            self.summary.backlog += len(due) - MAX_DUE
            due = due[:MAX_DUE]
        ids.update(e.entity_id for e in due)
        return sorted(ids)

    def _run_type(self, entity_type: str, forced: set[str]) -> None:
        # What the push in flight records (evaluations of the types before,
        # digests of this one) is read from here on.
        self.buffer.drain()
        entity = self.ruleset.entity(entity_type)
        ids = self._candidates(entity_type, forced)
        run = TypeRun(entity, self._window(entity_type), forced)
        if ids == []:
            return
        run.seen = set()
        if ids is None:
            run.stored_before = self.state.count_entities(entity_type)
        use_sql = self.deriver.uses_sql(entity_type)
        if use_sql:
            run.occurrences = self._occurrences(run)
        how = self.deriver.derive(run, ids, sql=use_sql)
        if how is None:
            # Our own cancel of the running query, on SIGTERM.
            self.summary.stopped = True
            return
        self.summary.evaluated_by[entity_type] = how
        if self.stop.is_set():
            self.summary.stopped = True
            return
        # Deletions change members: never while one is being pushed.
        self.buffer.drain()
        if run.gone is not None:
            # The SQL's join, or the merge of digests, found the deleted ones.
            if run.gone:
                self.identities.forget(entity_type, sorted(run.gone))
        elif run.seen is not None and run.stored_seen != run.stored_before:
            self.identities.forget_missing(entity_type, run.seen, ids)
        if run.digest_basis is not None and self.record:
            # The stored digests now follow this basis: no sample next time.
            self.state.set_watermark(basis_key(entity_type), run.digest_basis)

    def _occurrences(self, run: TypeRun) -> dict[str, list[ActionOccurrence]]:
        """The event-bearing occurrences in the window (SQL path)."""
        tick_since = None if self.full else self.tick_since.get(run.entity.name)
        return window_occurrences(
            self.reader,
            run,
            now=self.now,
            tick_since=tick_since,
            count_skipped_since=self.count_skipped_since,
            summary=self.summary,
        )
