"""The cycle's derivation: each entity's status now, in SQL or by the engine.

The compiled SQL (``sync.sql.evaluator``) evaluates the whole population (a
*full* pass) or only the candidates of a *tick*. A type whose rules or
sources cannot be compiled, or whose compiled evaluation fails on bad data,
is evaluated by the Python engine instead (``sync.evaluate.engine``), for
that type only; so are the entities that must reach the sink, and those with
an event not sent yet when the rules give events properties (the engine
gives them; otherwise the events come from the occurrences in the window).
Each chunk derived goes to the ``Differ``.

On PostgreSQL each result row carries a digest computed by the database
(``CompiledEntity.with_fingerprint``). An entity whose digest is the one
recorded when it was last settled (evaluation stored, contribution accepted
by Mailchimp), with no change due, no retry and no event in the window, is
counted and left alone: its row is not even decoded, and in a full pass it
does not even leave the database (``sync.daemon.settled`` says where the
test is made). The others are decoded and diffed in full, and the differ
records their new digest once settled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import islice
from typing import TypeVar

import psycopg
import sqlalchemy as sa

from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.diff import Differ
from sync.daemon.events import properties_needed, row_events, unsent_events
from sync.daemon.settled import Row, Settled, joined, without_gone
from sync.daemon.type_run import Derived, TypeRun
from sync.evaluate.engine import Baseline, Evaluation, evaluate, position_at
from sync.evaluate.related import related_statuses
from sync.records import EventDue
from sync.rules.model import STATUS, Entity, Mode
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceReader
from sync.sources.sessions import SourceQueryError, SourceUnavailableError
from sync.sql.compiled import SqlEvaluation
from sync.sql.evaluator import SqlEvaluator
from sync.sql.keys import key_instant
from sync.state.baselines import Baseline as StoredBaseline
from sync.state.store import StateStore

T = TypeVar("T")

#: How often a daemon checks the action rows the compiled SQL leaves out.
UNUSABLE_EVERY = timedelta(hours=1)

#: The cycle's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.cycle")


class Deriver:
    """Derives the entities of one cycle, type by type, chunk by chunk."""

    def __init__(
        self,
        sources: SourcesConfig,
        reader: SourceReader,
        state: StateStore,
        differ: Differ,
        summary: CycleSummary,
        *,
        now: datetime,
        evaluator: SqlEvaluator | None,
        batch_size: int,
        stop: threading.Event,
        unusable_checked: dict[str, datetime] | None = None,
        preview: bool = False,
    ) -> None:
        self.sources = sources
        self.reader = reader
        self.state = state
        self.differ = differ
        self.summary = summary
        self.now = now
        self.evaluator = evaluator
        self.batch_size = batch_size
        self.stop = stop
        self.settled = Settled(state, evaluator, summary, now=now, preview=preview)
        self.unusable_checked = {} if unusable_checked is None else unusable_checked

    def uses_sql(self, entity_type: str) -> bool:
        """Whether the compiled SQL can evaluate this type (else the engine)."""
        return self.evaluator is not None and self.evaluator.supports(entity_type) is None

    def derive(self, run: TypeRun, ids: list[str] | None, *, sql: bool) -> str | None:
        """Derive ``ids`` (None: every entity) of ``run``'s type, in SQL when
        ``sql``, falling back to the engine on bad data: "sql" or "engine",
        how it was derived; None when stopped by our own cancel."""
        entity_type = run.entity.name
        use_sql = sql
        if use_sql:
            try:
                self._run_sql(run, ids)
            except (sa.exc.DBAPIError, psycopg.Error, ValueError, OverflowError, TypeError) as exc:
                if self.stop.is_set():
                    # Our own cancel of the running query, on SIGTERM.
                    return None
                if not _bad_data(exc):
                    raise _source_error(entity_type, exc) from exc
                # One bad row makes the whole statement fail; the engine reads
                # record by record and sets bad ones aside. Everything derived
                # so far is derived again: pushes and writes are diffs.
                log.error(
                    "%s: the compiled SQL failed on the data (%s: %s); evaluating with the "
                    "Python engine in this cycle",
                    entity_type,
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                )
                use_sql = False
                self.summary.entities_read[entity_type] = 0
                self.summary.entities_settled[entity_type] = 0
                run.seen = set()
                run.stored_seen = 0
                run.gone = None
                run.stored_returned = 0
                run.digest_basis = None
        if not use_sql:
            self._run_engine(run, ids)
        return "sql" if use_sql else "engine"

    def _run_sql(self, run: TypeRun, ids: list[str] | None) -> None:
        assert self.evaluator is not None
        full = ids is None
        # A full pass with the state store joined leaves the settled
        # entities' rows in the database: only the others come here, with
        # the stored entities the list query no longer gives.
        in_sql = full and self.evaluator.stored is not None
        if in_sql:
            run.gone = []
        elif full and self.evaluator.dialect == "postgresql":
            # What this pass's digests follow (recorded once it is over).
            run.digest_basis = self.evaluator.digest_basis(run.entity.name)
        if full and not in_sql and self.settled.merges(run):
            # Apart from it, the digests alone are merged with the stored
            # ones first; only the entities that differ are evaluated.
            ids = self.settled.merge(run)
            if ids is not None and not ids:
                self._report_unusable_actions(run.entity.name)
                return
        rows = self.evaluator.rows(
            run.entity.name,
            now=self.now,
            ids=ids,
            fingerprint=True,
            unsettled=run.forced | run.occurrences.keys() if in_sql else None,
        )
        try:
            for chunk in _chunks(rows, self.batch_size):
                self._derive_sql_chunk(run, chunk)
                if self.stop.is_set():
                    return
        finally:
            # Left early (stopped, or an error: a push's, say), the query's
            # transaction ends now, not whenever the garbage is collected.
            rows.close()
        if in_sql:
            # Every stored entity the rows did not carry was settled.
            self.settled.count(run, (run.stored_before or 0) - run.stored_returned)
        if full:
            self._report_unusable_actions(run.entity.name)

    def _report_unusable_actions(self, entity_type: str) -> None:
        """After the whole population: say which action rows the SQL left out
        (a null id, an instant that is no date), as the reader would. Only a
        report: a check that fails (a slow action query stopped by
        ``statement_timeout``) is logged, and the cycle goes on. It reads
        every action row (1.5 s at 1M users), so a daemon makes it with its
        first full pass and then at most every ``UNUSABLE_EVERY``."""
        if self.settled.preview:
            # A preview (``mailsync plan``) reports what would change, not
            # the data: the daemon's next full pass does.
            return
        last = self.unusable_checked.get(entity_type)
        if last is not None and last <= self.now < last + UNUSABLE_EVERY:
            return
        self.unusable_checked[entity_type] = self.now
        try:
            self.reader.unusable_actions(entity_type, now=self.now).log()
        except (SourceQueryError, SourceUnavailableError) as exc:
            if self.stop.is_set():
                return
            log.warning("%s: the action rows the SQL leaves out were not checked: %s",
                        entity_type, exc)  # fmt: skip

    def _derive_sql_chunk(self, run: TypeRun, rows: list[Row]) -> None:
        entity = run.entity
        if rows and rows[0][0].skips_settled:
            rows = without_gone(run, rows)
        row_ids = [str(row[0]) for _, row in rows]
        stored = joined(rows, row_ids)
        if stored is None:
            # Nothing stored of this type when the full pass began (going
            # live): no look-up can find anything (5 s at 1M users).
            nothing = run.stored_before == 0
            stored = {} if nothing else self.state.stored_rows(entity.name, row_ids)
        chunk = self.settled.decode_unsettled(run, rows, row_ids, stored)
        if not chunk:
            return
        ids = [r.id for r in chunk]
        baselines = (
            self.state.baselines(entity.name, ids)
            if entity.reinit and entity.mode is Mode.ACTIONS
            else {}
        )
        derived: dict[str, tuple[str | None, Derived]] = {}
        fingerprints: dict[str, str | None] = {}
        for r in chunk:
            baseline = baselines.get(r.id)
            if baseline:
                r = self._with_baseline(entity, r, baseline)
            derived[r.id] = (r.email, r)
            fingerprints[r.id] = r.fp
        # Entities with an event not sent yet get their events from the
        # occurrences, or from the engine when events carry properties. The
        # engine also gives those that must reach the sink (a retry, an
        # event of unknown outcome): a tick's occurrences are only its new rows.
        engine_ids = set(run.forced.intersection(derived))
        unsent = unsent_events(self.state, run, derived, self.now)
        events: dict[str, tuple[EventDue, ...]] = {}
        if properties_needed(entity):
            engine_ids |= unsent
        else:
            for ident in sorted(unsent - engine_ids):
                found = run.occurrences.get(ident, ())
                row = derived[ident][1]
                events[ident] = tuple(row_events(entity, row, found, run.events_since, self.now))
        if engine_ids:
            for record_id, email, evaluation in self._engine_results(run, sorted(engine_ids)):
                derived[record_id] = (email, evaluation)
                events[record_id] = evaluation.events
        self.differ.settle(run, derived, stored, events, fingerprints)

    def _with_baseline(
        self, entity: Entity, r: SqlEvaluation, baseline: StoredBaseline
    ) -> SqlEvaluation:
        """A re-initialisation baseline supersedes actions at or before it
        (``engine._entry_by_actions``); the compiled SQL evaluated without
        baselines (the state store may live in another database), so the
        timeline is recomputed here for the entities that have one."""
        if baseline.entered_at > self.now:
            # It takes over once its instant is reached, which no row digest
            # sees: compared in full until then.
            return r._replace(fp=None)
        if baseline.status not in entity.states:
            return r
        action_key = r.keys[0]
        if action_key is not None and key_instant(entity, action_key) > baseline.entered_at:
            return r
        at = position_at(entity, baseline.status, baseline.entered_at, self.now)
        merge = dict(r.merge_fields)
        for f in entity.merge_fields:
            if f.source == STATUS:
                merge[f.tag] = at.status
        return r._replace(
            status=at.status,
            status_since=at.status_since,
            state=at.state,
            state_entered_at=at.state_entered_at,
            merge_fields=merge,
            tags=at.tags,
            next_change_at=at.next_at,
        )

    def _engine_results(
        self, run: TypeRun, ids: list[str] | None
    ) -> Iterator[tuple[str, str | None, Evaluation]]:
        """Records read by the reader and evaluated by the Python engine, with
        events; a record that cannot be evaluated is logged and counted."""
        entity = run.entity
        related = related_statuses(self.sources, self.state, entity.name)
        records = self.reader.read_entities(
            entity.name, now=self.now, ids=ids, related_statuses=related
        )
        with_baselines = bool(entity.reinit) and entity.mode is Mode.ACTIONS
        while batch := list(islice(records, self.batch_size)):
            stored = (
                self.state.baselines(entity.name, [r.id for r in batch]) if with_baselines else {}
            )
            for record in batch:
                found = stored.get(record.id)
                baseline = Baseline(found.status, found.entered_at) if found else None
                try:
                    result = evaluate(
                        entity,
                        record.facts,
                        record.actions,
                        self.now,
                        baseline,
                        events_since=run.events_since,
                    )
                except (TypeError, ValueError, KeyError, OverflowError) as exc:
                    # Bad data in one record (a value of the wrong type, a
                    # sentinel date like 0001-01-01 that date arithmetic cannot
                    # shift) must not stop the others; it stays visible in the
                    # log and the summary.
                    self.summary.entities_failed[entity.name] += 1
                    log.error(
                        "cannot evaluate %s %s: %s: %s",
                        entity.name,
                        record.id,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                yield record.id, record.email, result

    def _run_engine(self, run: TypeRun, ids: list[str] | None) -> None:
        chunk: dict[str, tuple[str | None, Derived]] = {}
        events: dict[str, tuple[EventDue, ...]] = {}

        def settle() -> None:
            stored = self.state.stored_rows(run.entity.name, list(chunk))
            self.differ.settle(run, chunk, stored, events)
            chunk.clear()
            events.clear()

        for record_id, email, evaluation in self._engine_results(run, ids):
            chunk[record_id] = (email, evaluation)
            events[record_id] = evaluation.events
            if len(chunk) >= self.batch_size:
                settle()
                if self.stop.is_set():
                    return
        if chunk:
            settle()


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _bad_data(exc: BaseException) -> bool:
    """A value the compiled SQL (or its decoding) cannot handle: an instant
    out of range, text where a date was expected, a wrong type."""
    if isinstance(exc, ValueError | OverflowError | TypeError):
        return True
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return isinstance(exc, sa.exc.DataError) or isinstance(orig, psycopg.errors.DataError)


def _source_error(entity_type: str, exc: BaseException) -> Exception:
    """A failure of the compiled query that is not about one row: the
    database went away (retried next cycle) or refused the query (the
    sources need fixing; a statement timeout says so)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(orig, psycopg.errors.QueryCanceled):
        # As the reader classifies it: retried at the next cycle.
        return SourceUnavailableError(
            f"sources.yaml: the compiled query of {entity_type} was cancelled "
            f"(daemon.evaluation_timeout): {text}"
        )
    if isinstance(orig, psycopg.OperationalError) or (
        isinstance(exc, sa.exc.OperationalError) and exc.connection_invalidated
    ):
        return SourceUnavailableError(f"{entity_type}: the application database: {text}")
    return SourceQueryError(
        f"sources.yaml: the database refused the compiled query of {entity_type}: {text}"
    )
