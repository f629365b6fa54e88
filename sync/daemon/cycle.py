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
   only;
2. **diff**: each chunk of results is compared with the stored evaluations
   (status, entry, next change: written only when they differ) and with a
   digest of the member contribution (merge fields, tags) Mailchimp last
   accepted from the entity: only the differences go further;
3. **events**: the occurrences of event-bearing actions inside the event
   window (``events_since``: ``events_max_age`` back, never before the state
   store went live nor before a re-initialisation) and the status-entry
   events are keyed as the engine keys them and looked up among the events
   already sent (an anti-join). An entity with an event not sent yet is
   evaluated by the engine, which gives the events with their properties;
4. **push**: changed members accumulate across chunks and types and are
   pushed together (``flush_size`` at a time), so API calls are proportional
   to the change, not to the number of chunks. Once Mailchimp accepted a
   member, the digests of its entities are recorded.

A full pass also finds the entities the sources no longer list and forgets
them (``status`` stops counting them; their members stay in Mailchimp). An
entity whose address changed gets its member's address changed in Mailchimp,
and keeps its history. With ``record=False`` (a dry run) nothing at all is
written to the state store. The clock is not read here: ``now`` is a
parameter, so the demo and the tests can move time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Protocol

import psycopg
import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.evaluate.engine import Baseline, Evaluation, evaluate, position_at
from sync.evaluate.members import MemberBuilder
from sync.exceptions import ConfigurationError
from sync.mailchimp.summary import PushSummary
from sync.records import ActionOccurrence, DesiredMember, EventDue, FactValue
from sync.rules.model import STATUS, Entity, Mode, Ruleset
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceQueryError, SourceReader, SourceUnavailableError
from sync.sql.compiler import SqlEvaluation, key_instant
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import Baseline as StoredBaseline
from sync.state.store import EntityEvaluation, StateStore, StoredRow, evaluation_digest

log = logging.getLogger(__name__)

#: How many due entities one tick takes at most; the rest are the backlog of
#: the next cycle (the next full pass takes them all).
MAX_DUE = 100_000

#: How many individual status changes a cycle summary keeps as examples.
MAX_CHANGED_KEPT = 10_000

#: Changed members accumulated before a push: a multiple of the batch
#: subscribe (500) and ``/batches`` job (5000) sizes, so that pushing in
#: several rounds costs no more calls than pushing once; memory stays bounded
#: (the members, their plans and ledger states) on a first cycle that creates
#: a million members.
FLUSH_SIZE = 20_000

_ONE_TICK = timedelta(microseconds=1)


class Sink(Protocol):
    def push(self, members: Iterable[DesiredMember]) -> PushSummary: ...

    def change_address(self, old: str, new: str) -> bool: ...

    def remove_member(self, email: str, how: str) -> bool: ...


class Derived(Protocol):
    """What a cycle reads of an evaluation, from the SQL or from the engine."""

    @property
    def status(self) -> str | None: ...
    @property
    def status_since(self) -> datetime | None: ...
    @property
    def state(self) -> str | None: ...
    @property
    def state_entered_at(self) -> datetime | None: ...
    @property
    def next_change_at(self) -> datetime | None: ...
    @property
    def merge_fields(self) -> Mapping[str, FactValue]: ...
    @property
    def tags(self) -> frozenset[str]: ...


@dataclass
class CycleSummary:
    """What a cycle did, for the log line, ``mailsync once`` and the metrics."""

    now: datetime
    full: bool
    dry_run: bool = False
    entities_read: Counter[str] = field(default_factory=Counter)
    entities_failed: Counter[str] = field(default_factory=Counter)
    status_changes: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    #: (entity type, status before, status after) -> how many entities moved
    #: so (before None: new to the state store).
    transitions: Counter[tuple[str, str | None, str | None]] = field(default_factory=Counter)
    #: (entity type, id, status before, status after) of the first
    #: ``MAX_CHANGED_KEPT`` changes: enough to show examples, bounded whatever
    #: the population (``status_changes`` has the counts); or, with
    #: ``examples_per_transition``, that many of each transition (a preview
    #: shows every transition's examples, not only the commonest).
    changed: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    examples_per_transition: int | None = None
    #: entity type -> "sql" or "engine": how the type was evaluated.
    evaluated_by: dict[str, str] = field(default_factory=dict)
    #: Evaluations written to the state store (proportional to change).
    evaluations_written: int = 0
    #: Entities no longer listed by the sources, forgotten in this cycle.
    deleted: Counter[str] = field(default_factory=Counter)
    #: Members unsubscribed or archived because their entity was deleted.
    removed: Counter[str] = field(default_factory=Counter)
    #: Member addresses changed in Mailchimp (old, new).
    address_changes: list[tuple[str, str]] = field(default_factory=list)
    #: Events that happened before the state store went live: not sent.
    events_skipped: int = 0
    events_since: datetime | None = None
    push: PushSummary = field(default_factory=PushSummary)
    backlog: int = 0
    duration_s: float = 0.0
    stopped: bool = False

    def note_change(
        self, entity_type: str, ident: str, before: str | None, after: str | None
    ) -> None:
        """An entity whose status changed (or is new: ``before`` None)."""
        self.status_changes[(entity_type, after)] += 1
        self.transitions[(entity_type, before, after)] += 1
        limit = self.examples_per_transition
        if limit is None:
            keep = len(self.changed) < MAX_CHANGED_KEPT
        else:
            keep = self.transitions[(entity_type, before, after)] <= limit
        if keep:
            self.changed.append((entity_type, ident, before, after))

    def absorb(self, push: PushSummary) -> None:
        total = self.push
        total.dry_run = push.dry_run
        total.considered += push.considered
        total.pushed += push.pushed
        total.unchanged += push.unchanged
        total.held_back += push.held_back
        total.archived += push.archived
        total.failed += push.failed
        total.events_sent += push.events_sent
        total.events_confirmed += push.events_confirmed
        total.events_resent += push.events_resent
        total.events_unconfirmed += push.events_unconfirmed
        total.events_planned += push.events_planned
        for kind, count in push.calls.items():
            total.calls[kind] = total.calls.get(kind, 0) + count
        total.failures.extend(push.failures)
        for tag, count in push.missing_merge_tags.items():
            total.missing_merge_tags[tag] = total.missing_merge_tags.get(tag, 0) + count
        total.invalid_values += push.invalid_values
        total.not_kept.extend(push.not_kept)

    def counts(self) -> dict[str, object]:
        """A JSON-able record of the cycle (stored with it in the state store)."""
        return {
            "full": self.full,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "entities_read": dict(self.entities_read),
            "entities_failed": dict(self.entities_failed),
            "evaluated_by": dict(self.evaluated_by),
            "status_changes": {
                f"{entity}:{status}": n for (entity, status), n in self.status_changes.items()
            },
            "evaluations_written": self.evaluations_written,
            "deleted": dict(self.deleted),
            "removed": dict(self.removed),
            "address_changes": len(self.address_changes),
            "members_considered": self.push.considered,
            "members_pushed": self.push.pushed,
            "members_failed": self.push.failed,
            "members_archived": self.push.archived,
            "events_sent": self.push.events_sent,
            "events_skipped": self.events_skipped,
            "events_confirmed": self.push.events_confirmed,
            "events_resent": self.push.events_resent,
            "events_unconfirmed": self.push.events_unconfirmed,
            "api_calls": dict(self.push.calls),
            "missing_merge_tags": dict(self.push.missing_merge_tags),
            "merge_values_not_json": self.push.invalid_values,
            "backlog": self.backlog,
            "duration_s": round(self.duration_s, 3),
            "stopped": self.stopped,
        }

    def lines(self) -> list[str]:
        kind = "full" if self.full else "incremental"
        read = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_read.items())) or "nothing"
        out = [f"{kind} cycle at {self.now.isoformat()}: read {read} in {self.duration_s:.2f}s"]
        if self.dry_run:
            out.append("DRY RUN: nothing was written to the state store")
        if self.entities_failed:
            failed = ", ".join(f"{n} {t}" for t, n in sorted(self.entities_failed.items()))
            out.append(f"records that could not be evaluated: {failed} (see the log)")
        if self.status_changes:
            out.append("statuses entered:")
            for (entity, status), n in sorted(
                self.status_changes.items(), key=lambda item: (item[0][0], str(item[0][1]))
            ):
                out.append(f"  {entity} {status or '(none)'}: {n}")
        else:
            out.append("no status changed")
        for entity_type, n in sorted(self.deleted.items()):
            out.append(f"{n} {entity_type} no longer listed by the sources: forgotten")
        for how, n in sorted(self.removed.items()):
            out.append(f"{n} members of deleted entities: {how}d in Mailchimp")
        for old, new in self.address_changes[:10]:
            out.append(f"address changed: {old} -> {new}")
        if self.events_skipped:
            since = self.events_since.isoformat() if self.events_since else "?"
            out.append(
                f"{self.events_skipped} past events not sent: they happened before mailsync "
                f"went live ({since}); `--backfill-events 7d` sends the last 7 days"
            )
        out.extend(self.push.lines())
        if self.backlog:
            out.append(f"backlog: {self.backlog} due entities left for the next cycle")
        if self.stopped:
            out.append("stopped early on request; the next cycle picks up the rest")
        return out


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


def pushes_anything(entity: Entity) -> bool:
    if entity.merge_fields or entity.managed_tags:
        return True
    return any(a.event for a in entity.actions.values()) or any(
        s.event for s in entity.states.values()
    )


def contribution_fingerprint(entity: Entity, derived: Derived) -> str:
    """A digest of what one entity asks of its member (merge fields, active
    tags): equal digests, nothing to push. Raw values plus each field's type
    (the formatting for Mailchimp is a function of both), cheaper than
    formatting every value of a million entities."""
    values = derived.merge_fields
    text = repr(
        (
            [values.get(f.tag) for f in entity.merge_fields],
            sorted(derived.tags) if derived.tags else (),
            _field_types(entity),
        )
    )
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


_FIELD_TYPES: dict[int, tuple[Entity, tuple[tuple[str, str], ...]]] = {}


def _field_types(entity: Entity) -> tuple[tuple[str, str], ...]:
    # Keyed by identity (a rule model holds dicts, so it is not hashable); the
    # entity is kept alongside, so its id cannot be reused while cached.
    cached = _FIELD_TYPES.get(id(entity))
    if cached is None or cached[0] is not entity:
        cached = _FIELD_TYPES[id(entity)] = (
            entity,
            tuple((f.tag, f.type) for f in entity.merge_fields),
        )
    return cached[1]


def event_keys(
    entity: Entity,
    ident: str,
    derived: Derived,
    occurrences: Iterable[ActionOccurrence],
    since: datetime,
    now: datetime,
) -> list[str]:
    """The idempotency keys of the events the engine would give this entity
    at ``now`` with ``events_since=since`` (as its member's keys: scoped to
    the entity), from a set-based evaluation and the event-bearing
    occurrences in the window: what the cycle looks up among the events sent.
    The parity suite checks them against ``engine.evaluate``."""
    keys = [
        f"{entity.name}:{ident}:action:{o.action}:{o.at.isoformat()}"
        for o in occurrences
        if since <= o.at <= now
        and (action := entity.actions.get(o.action)) is not None
        and action.event is not None
    ]
    state = entity.states.get(derived.state) if derived.state else None
    if state is not None and state.event is not None:
        entered = derived.state_entered_at
        if (entered or now) >= since:
            key = f"{entity.name}:{ident}:status:{state.name}:{state.event.name}"
            if state.event.once == "entry":
                key += f":{entered.isoformat() if entered else 'unknown'}"
            keys.append(key)
    return keys


def _chunks(items: Iterator[SqlEvaluation], size: int) -> Iterator[list[SqlEvaluation]]:
    while chunk := list(islice(items, size)):
        yield chunk


@dataclass
class _TypeRun:
    """One entity type within a cycle."""

    entity: Entity
    events_since: datetime
    #: Ids that must reach the sink whatever the diff says (retries, events
    #: of unknown outcome).
    forced: set[str]
    #: Event-bearing occurrences inside the window, by id (SQL path).
    occurrences: dict[str, list[ActionOccurrence]] = field(default_factory=dict)
    seen: set[str] | None = None


@dataclass
class _Pending:
    """Members accumulated for the next push, and the entities behind them."""

    members: dict[str, MemberBuilder] = field(default_factory=dict)
    #: email -> (entity type, id, digest) of the entities feeding it
    contributors: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    #: Evaluations of those entities, stored once the push is done.
    evaluations: list[EntityEvaluation] = field(default_factory=list)

    def add(
        self,
        entity: Entity,
        entity_id: str,
        email: str,
        derived: Derived,
        events: Sequence[EventDue],
        fingerprint: str,
    ) -> None:
        builder = self.members.get(email)
        if builder is None:
            builder = self.members[email] = MemberBuilder(email)
        elif entity.merge_fields:
            same_type = [i for t, i, _ in self.contributors.get(email, ()) if t == entity.name]
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
        self.contributors.setdefault(email, []).append((entity.name, entity_id, fingerprint))

    def __len__(self) -> int:
        return len(self.members)


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
    ) -> None:
        self.ruleset = ruleset
        self.sources = sources
        self.reader = reader
        self.state = state
        self.sink = sink
        self.evaluator = evaluator
        self.now = now
        self.full = full
        self.batch_size = batch_size
        self.events_since = events_since or now - timedelta(days=7)
        #: Going live: occurrences from here to ``events_since`` are counted
        #: as skipped (the first cycle only).
        self.count_skipped_since = count_skipped_since
        self.tick_since = dict(tick_since or {})
        self.record = record
        self.on_delete = on_delete
        self.flush_size = flush_size
        self.stop = stop or threading.Event()
        self.summary = CycleSummary(now=now, full=full, dry_run=not record)
        self.summary.events_since = self.events_since
        self._pending = _Pending()

    # -- the cycle -------------------------------------------------------------

    def run(self) -> CycleSummary:
        started = time.monotonic()
        forced = self._forced_ids()
        for entity_type in dependency_order(self.ruleset, self.sources):
            if self.stop.is_set():
                self.summary.stopped = True
                break
            self._run_type(entity_type, forced.get(entity_type, set()))
        if not self.summary.stopped:
            self._flush()
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
        entity = self.ruleset.entity(entity_type)
        ids = self._candidates(entity_type, forced)
        run = _TypeRun(entity, self._window(entity_type), forced)
        if ids == []:
            return
        run.seen = set()
        use_sql = self.evaluator is not None and self.evaluator.supports(entity_type) is None
        if use_sql:
            run.occurrences = self._occurrences(run)
            try:
                self._run_sql(run, ids)
            except (sa.exc.DBAPIError, psycopg.Error, ValueError, OverflowError, TypeError) as exc:
                if self.stop.is_set():
                    # Our own cancel of the running query, on SIGTERM.
                    self.summary.stopped = True
                    return
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
                run.seen = set()
        if not use_sql:
            self._run_engine(run, ids)
        self.summary.evaluated_by[entity_type] = "sql" if use_sql else "engine"
        if self.stop.is_set():
            self.summary.stopped = True
            return
        if run.seen is not None:
            self._forget_missing(entity_type, run.seen, ids)

    # -- deriving ---------------------------------------------------------------

    def _occurrences(self, run: _TypeRun) -> dict[str, list[ActionOccurrence]]:
        actions = [a.name for a in run.entity.actions.values() if a.event is not None]
        if not actions:
            return {}
        since = run.events_since
        tick_since = None if self.full else self.tick_since.get(run.entity.name)
        if tick_since is not None and tick_since > since:
            # A tick looks at new rows only; a candidate with an older event
            # not sent (a retry) is evaluated by the engine, and the full
            # pass finds late rows.
            since = tick_since
        if self.count_skipped_since is not None and self.count_skipped_since < since:
            since = self.count_skipped_since
        found = self.reader.occurrences(run.entity.name, actions, since=since, now=self.now)
        if since < run.events_since:
            kept: dict[str, list[ActionOccurrence]] = {}
            for ident, occurrences in found.items():
                inside = [o for o in occurrences if o.at >= run.events_since]
                self.summary.events_skipped += len(occurrences) - len(inside)
                if inside:
                    kept[ident] = inside
            found = kept
        return found

    def _run_sql(self, run: _TypeRun, ids: list[str] | None) -> None:
        assert self.evaluator is not None
        results = self.evaluator.evaluate(run.entity.name, now=self.now, ids=ids)
        for chunk in _chunks(results, self.batch_size):
            self._derive_sql_chunk(run, chunk)
            if self.stop.is_set():
                return

    def _derive_sql_chunk(self, run: _TypeRun, chunk: list[SqlEvaluation]) -> None:
        entity = run.entity
        ids = [r.id for r in chunk]
        stored = self.state.stored_rows(entity.name, ids)
        baselines = (
            self.state.baselines(entity.name, ids)
            if entity.reinit and entity.mode is Mode.ACTIONS
            else {}
        )
        derived: dict[str, tuple[str | None, Derived]] = {}
        for r in chunk:
            baseline = baselines.get(r.id)
            derived[r.id] = (r.email, self._with_baseline(entity, r, baseline) if baseline else r)
        # Entities with an event not sent yet: the engine gives their events.
        engine_ids = set(run.forced.intersection(derived))
        engine_ids |= self._unsent_events(run, derived)
        events: dict[str, tuple[EventDue, ...]] = {}
        if engine_ids:
            for record_id, email, evaluation in self._engine_results(run, sorted(engine_ids)):
                derived[record_id] = (email, evaluation)
                events[record_id] = evaluation.events
        self._settle(run, derived, stored, events)

    def _with_baseline(
        self, entity: Entity, r: SqlEvaluation, baseline: StoredBaseline
    ) -> SqlEvaluation:
        """A re-initialisation baseline supersedes actions at or before it
        (``engine._entry_by_actions``); the compiled SQL evaluated without
        baselines (the state store may live in another database), so the
        timeline is recomputed here for the entities that have one."""
        if baseline.entered_at > self.now or baseline.status not in entity.states:
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

    def _unsent_events(
        self, run: _TypeRun, derived: Mapping[str, tuple[str | None, Derived]]
    ) -> set[str]:
        """Ids with an event in the window whose key is not recorded sent."""
        expected: dict[str, tuple[str, list[str]]] = {}
        for ident, (email, r) in derived.items():
            if not email:
                continue
            keys = event_keys(
                run.entity, ident, r, run.occurrences.get(ident, ()), run.events_since, self.now
            )
            if keys:
                expected[ident] = (normalise_email(email), keys)
        if not expected:
            return set()
        sent = self.state.sent_events({email for email, _ in expected.values()})
        return {
            ident
            for ident, (email, keys) in expected.items()
            if not sent.get(email, set()).issuperset(keys)
        }

    def _engine_results(
        self, run: _TypeRun, ids: list[str] | None
    ) -> Iterator[tuple[str, str | None, Evaluation]]:
        """Records read by the reader and evaluated by the Python engine, with
        events; a record that cannot be evaluated is logged and counted."""
        entity = run.entity
        source = self.sources.entity(entity.name)
        related = {rel.name: self._status_lookup(rel.name) for rel in source.relations}
        records = self.reader.read_entities(
            entity.name, now=self.now, ids=ids, related_statuses=related or None
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

    def _status_lookup(self, entity_type: str) -> _StoredStatus:
        return _StoredStatus(self.state, entity_type)

    def _run_engine(self, run: _TypeRun, ids: list[str] | None) -> None:
        chunk: dict[str, tuple[str | None, Derived]] = {}
        events: dict[str, tuple[EventDue, ...]] = {}

        def settle() -> None:
            stored = self.state.stored_rows(run.entity.name, list(chunk))
            self._settle(run, chunk, stored, events)
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

    # -- diffing ----------------------------------------------------------------

    def _settle(
        self,
        run: _TypeRun,
        derived: Mapping[str, tuple[str | None, Derived]],
        stored: Mapping[str, StoredRow],
        events: Mapping[str, tuple[EventDue, ...]],
    ) -> None:
        """Compare one chunk with the state store: store the evaluations that
        changed, queue the members whose contribution or events changed."""
        name = run.entity.name
        writes: list[EntityEvaluation] = []
        summary = self.summary
        for ident, (email, r) in derived.items():
            summary.entities_read[name] += 1
            if run.seen is not None:
                run.seen.add(ident)
            key = normalise_email(email) if email else None
            before = stored.get(ident)
            if before is None or before.status != r.status:
                summary.note_change(name, ident, before.status if before else None, r.status)
            changed: EntityEvaluation | None = None
            digest = evaluation_digest(
                r.status, r.state, r.state_entered_at, r.status_since, r.next_change_at, key
            )
            if before is None or before.eval_fp != digest:
                changed = EntityEvaluation(
                    entity_type=name,
                    entity_id=ident,
                    email=email,
                    status=r.status,
                    base_status=r.state,
                    base_entered_at=r.state_entered_at,
                    status_since=r.status_since,
                    next_change_at=r.next_change_at,
                )
            if self._queue(run, ident, key, before, r, events.get(ident, ())):
                if changed is not None:
                    # Stored once pushed: a cycle killed mid-push leaves the
                    # entity due, so the next tick (not only the next full
                    # pass) pushes it again.
                    self._pending.evaluations.append(changed)
            elif changed is not None:
                writes.append(changed)
        if writes and self.record:
            self.state.upsert_evaluations(writes, at=self.now)
            summary.evaluations_written += len(writes)
        if len(self._pending) >= self.flush_size:
            self._flush()

    def _queue(
        self,
        run: _TypeRun,
        ident: str,
        key: str | None,
        before: StoredRow | None,
        r: Derived,
        due_events: Sequence[EventDue],
    ) -> bool:
        """Queue the entity's member contribution when it differs from what
        Mailchimp accepted, has events to send, or must be retried; True when
        queued."""
        entity = run.entity
        if not pushes_anything(entity):
            return False
        if key is None:
            if before is None or before.email is not None:
                # Said once, when first seen without one (not every full pass).
                log.warning(
                    "%s %s has no email address: evaluated, nothing pushed", entity.name, ident
                )
            return False
        moved = before is not None and before.email is not None and before.email != key
        if moved:
            assert before is not None and before.email is not None
            self._change_address(before.email, key)
        fp = contribution_fingerprint(entity, r)
        if (
            not moved
            and before is not None
            and before.pushed_fp == fp
            and not due_events
            and ident not in run.forced
        ):
            return False
        self._pending.add(entity, ident, key, r, due_events, fp)
        return True

    def _change_address(self, old: str, new: str) -> None:
        """The application changed an entity's address: change the member's,
        so that it keeps its history and no second member is created."""
        self.summary.address_changes.append((old, new))
        if not self.record:
            log.info("DRY RUN: would change the address %s to %s", old, new)
            return
        if self.sink.change_address(old, new):
            self.state.move_member(old, new)

    def _flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if not pending.members:
            return
        push = self.sink.push(b.build() for b in pending.members.values())
        self.summary.absorb(push)
        if not self.record or push.dry_run:
            return
        if pending.evaluations:
            self.state.upsert_evaluations(pending.evaluations, at=self.now)
            self.summary.evaluations_written += len(pending.evaluations)
        failed = {normalise_email(f.email) for f in push.failures}
        # Values of a merge tag the audience lacks were not kept: push again.
        failed |= set(push.not_kept)
        failed |= self.state.failed_emails(pending.members)
        accepted: dict[str, dict[str, str]] = {}
        for email, contributors in pending.contributors.items():
            if email in failed:
                continue  # refused or held back: the next pass tries again
            for entity_type, ident, fp in contributors:
                accepted.setdefault(entity_type, {})[ident] = fp
        for entity_type, fingerprints in accepted.items():
            self.state.set_pushed_fingerprints(entity_type, fingerprints)

    def _forget_missing(self, entity_type: str, seen: set[str], ids: list[str] | None) -> None:
        """Entities stored (or, in a tick, asked for) but not listed any more
        were deleted in the application. Their members stay in Mailchimp
        (``on_delete: keep``), or are unsubscribed or archived when no other
        entity feeds them."""
        asked = self.state.entity_ids(entity_type) if ids is None else set(ids)
        gone = sorted(asked - seen)
        if ids is not None and gone:
            gone = sorted(self.state.stored_rows(entity_type, gone))
        if not gone:
            return
        if not self.record:
            # A dry run (or a preview) says how many it would forget.
            self.summary.deleted[entity_type] += len(gone)
            return
        emails = {r.email for r in self.state.stored_rows(entity_type, gone).values() if r.email}
        self.summary.deleted[entity_type] += self.state.forget_entities(entity_type, gone)
        log.info("%s: %d entities no longer listed, forgotten", entity_type, len(gone))
        if self.on_delete == "keep" or not emails:
            return
        still_fed = {email for email in emails if self.state.entity_ids_by_email([email])}
        for email in sorted(emails - still_fed):
            if self.sink.remove_member(email, self.on_delete):
                self.summary.removed[self.on_delete] += 1


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


class _StoredStatus:
    """Status lookup for rollups on the engine path: the related entities'
    statuses as stored (evaluated earlier in this cycle, dependencies first)."""

    def __init__(self, state: StateStore, entity_type: str) -> None:
        self.state = state
        self.entity_type = entity_type

    def __call__(self, entity_id: str) -> str | None:
        stored = self.state.entity_state_of(self.entity_type, entity_id)
        return stored.status if stored else None
