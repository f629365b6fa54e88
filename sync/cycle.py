"""One cycle of the daemon: read, evaluate, record, push.

A cycle walks the entity types in dependency order (a Little World match
before the users whose facts count matches), and for each type:

1. decides which entities to look at. A *full* cycle reads them all; an
   *incremental* one reads only entities with new data since the type's
   watermark, entities whose ``next_change_at`` has passed, entities feeding a
   member whose failed push is due for a retry, and entities depending on
   entities re-evaluated in this cycle. Work is proportional to change;
2. streams their records from the sources (read-only), in chunks;
3. evaluates each with the engine at the cycle's ``now`` (one bad record is
   logged and counted, never fatal to the cycle);
4. hands the members to the sink, which pushes only what changed and records
   only what Mailchimp accepted;
5. stores the evaluations (status, ``next_change_at``…) in the state store,
   only now: a cycle killed before this point finds the same entities due,
   changed or retried next time, and pushes them again.

The watermark of a type moves only after the whole type was processed, so a
crash re-reads rather than skips. The clock is not read here: ``now`` is a
parameter, so the demo and the tests can move time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Protocol

from sync.engine import Baseline, evaluate
from sync.exceptions import ConfigurationError
from sync.members import MemberBuilder, normalise_email
from sync.records import DesiredMember, EntityRecord
from sync.rules import Entity, Ruleset
from sync.sink import PushSummary
from sync.source_reader import SourceReader
from sync.sources import SourcesConfig
from sync.state import EntityEvaluation, StateStore

log = logging.getLogger(__name__)

#: How many due entities one incremental cycle takes at most; the rest are the
#: backlog of the next cycle.
MAX_DUE = 100_000

#: How many individual status changes a cycle summary keeps as examples.
MAX_CHANGED_KEPT = 10_000


class Sink(Protocol):
    def push(self, members: Iterable[DesiredMember]) -> PushSummary: ...


@dataclass
class CycleSummary:
    """What a cycle did, for the log line, ``mailsync once`` and the metrics."""

    now: datetime
    full: bool
    entities_read: Counter[str] = field(default_factory=Counter)
    entities_failed: Counter[str] = field(default_factory=Counter)
    status_changes: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    #: (entity type, id, status before, status after) of the first
    #: ``MAX_CHANGED_KEPT`` changes: enough to show examples, bounded whatever
    #: the population (``status_changes`` has the counts).
    changed: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    push: PushSummary = field(default_factory=PushSummary)
    backlog: int = 0
    duration_s: float = 0.0
    stopped: bool = False

    def absorb(self, push: PushSummary) -> None:
        total = self.push
        total.dry_run = push.dry_run
        total.considered += push.considered
        total.pushed += push.pushed
        total.unchanged += push.unchanged
        total.held_back += push.held_back
        total.failed += push.failed
        total.events_sent += push.events_sent
        total.events_confirmed += push.events_confirmed
        total.events_resent += push.events_resent
        total.events_unconfirmed += push.events_unconfirmed
        for kind, count in push.calls.items():
            total.calls[kind] = total.calls.get(kind, 0) + count
        total.failures.extend(push.failures)
        for tag, count in push.missing_merge_tags.items():
            total.missing_merge_tags[tag] = total.missing_merge_tags.get(tag, 0) + count
        total.invalid_values += push.invalid_values

    def counts(self) -> dict[str, object]:
        """A JSON-able record of the cycle (stored with it in the state store)."""
        return {
            "full": self.full,
            "now": self.now.isoformat(),
            "entities_read": dict(self.entities_read),
            "entities_failed": dict(self.entities_failed),
            "status_changes": {
                f"{entity}:{status}": n for (entity, status), n in self.status_changes.items()
            },
            "members_considered": self.push.considered,
            "members_pushed": self.push.pushed,
            "members_failed": self.push.failed,
            "events_sent": self.push.events_sent,
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


def _chunks(records: Iterator[EntityRecord], size: int) -> Iterator[list[EntityRecord]]:
    while chunk := list(islice(records, size)):
        yield chunk


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
        batch_size: int = 5000,
        events_max_age: timedelta = timedelta(days=7),
        stop: threading.Event | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.sources = sources
        self.reader = reader
        self.state = state
        self.sink = sink
        self.now = now
        self.full = full
        self.batch_size = batch_size
        self.events_since = now - events_max_age
        self.stop = stop or threading.Event()
        self.summary = CycleSummary(now=now, full=full)
        # Statuses evaluated in this cycle, for the rollups of dependent types.
        self._evaluated: dict[str, dict[str, str | None]] = {}

    # -- the work set ----------------------------------------------------------

    def _retry_ids(self) -> dict[str, set[str]]:
        due = [
            f.email
            for f in self.state.failures()
            if f.next_retry_at is None or f.next_retry_at <= self.now
        ]
        return self.state.entity_ids_by_email(due) if due else {}

    def _work_set(self, entity_type: str, retries: Mapping[str, set[str]]) -> list[str] | None:
        """Ids to read, or None for all of them."""
        if self.full:
            return None
        ids: set[str] = set(retries.get(entity_type, ()))
        watermark = self.state.get_watermark(f"watermark:{entity_type}")
        if watermark is None:
            return None  # never read this type: read it all once
        ids.update(
            self.reader.changed_ids(
                entity_type, since=datetime.fromisoformat(watermark), now=self.now
            )
        )
        due = self.state.due(self.now, MAX_DUE + 1, entity_type=entity_type)
        if len(due) > MAX_DUE:
            self.summary.backlog += len(due) - MAX_DUE
            due = due[:MAX_DUE]
        ids.update(e.entity_id for e in due)
        for dependency, statuses in self._evaluated.items():
            ids.update(self.state.dependents(entity_type, dependency, statuses))
        return sorted(ids)

    # -- evaluation --------------------------------------------------------------

    def _lookup(self, entity_type: str) -> Callable[[str], str | None]:
        known = self._evaluated.get(entity_type, {})

        def status_of(entity_id: str) -> str | None:
            if entity_id in known:
                return known[entity_id]
            stored = self.state.entity_state_of(entity_type, entity_id)
            return stored.status if stored else None

        return status_of

    def run(self) -> CycleSummary:
        started = time.monotonic()
        retries = {} if self.full else self._retry_ids()
        for entity_type in dependency_order(self.ruleset, self.sources):
            if self.stop.is_set():
                self.summary.stopped = True
                break
            self._run_type(entity_type, retries)
        self.summary.duration_s = time.monotonic() - started
        return self.summary

    def _run_type(self, entity_type: str, retries: Mapping[str, set[str]]) -> None:
        entity = self.ruleset.entity(entity_type)
        source = self.sources.entity(entity_type)
        # Read before the records, so rows written meanwhile are seen next time.
        watermark = self.reader.watermark(entity_type, now=self.now)
        ids = self._work_set(entity_type, retries)
        if ids == []:
            self._evaluated.setdefault(entity_type, {})
            return
        related = {rel.name: self._lookup(rel.name) for rel in source.relations}
        links_needed = bool(source.relations)
        records = self.reader.read_entities(
            entity_type,
            now=self.now,
            ids=ids,
            related_statuses=related or None,
        )
        seen: set[str] = set()
        for chunk in _chunks(records, self.batch_size):
            self._process(entity, chunk)
            seen.update(r.id for r in chunk)
            if links_needed:
                self.state.replace_links(entity_type, {r.id: r.related for r in chunk})
            if self.stop.is_set():
                self.summary.stopped = True
                return
        if ids is not None:
            gone = set(ids) - seen
            if gone:
                self.state.forget_schedule(entity_type, gone)
        # Never past ``now``: a row stamped later than this cycle's instant (the
        # application's clock ahead of ours) was read as a future action and
        # ignored; it must still count as new data for the cycles after.
        mark = self.now if watermark is None else min(watermark, self.now)
        self.state.set_watermark(f"watermark:{entity_type}", mark.isoformat())

    def _process(self, entity: Entity, chunk: list[EntityRecord]) -> None:
        ids = [r.id for r in chunk]
        baselines = self.state.baselines(entity.name, ids) if entity.reinit else {}
        previous = self.state.entity_states(entity.name, ids)
        evaluations: list[EntityEvaluation] = []
        members: dict[str, MemberBuilder] = {}
        feeders: dict[str, str] = {}  # member -> the first entity of this chunk feeding it
        statuses = self._evaluated.setdefault(entity.name, {})
        pushes = pushes_anything(entity)
        for record in chunk:
            self.summary.entities_read[entity.name] += 1
            stored = baselines.get(record.id)
            baseline = Baseline(stored.status, stored.entered_at) if stored else None
            try:
                result = evaluate(
                    entity,
                    record.facts,
                    record.actions,
                    self.now,
                    baseline,
                    events_since=self.events_since,
                )
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                # Bad data in one record (a value of the wrong type, a sentinel
                # date like 0001-01-01 that date arithmetic cannot shift) must not
                # stop the others; it stays visible in the log and the summary.
                self.summary.entities_failed[entity.name] += 1
                log.error(
                    "cannot evaluate %s %s: %s: %s",
                    entity.name,
                    record.id,
                    type(exc).__name__,
                    exc,
                )
                continue
            statuses[record.id] = result.status
            before = previous.get(record.id)
            if before is None or before.status != result.status:
                self.summary.status_changes[(entity.name, result.status)] += 1
                if len(self.summary.changed) < MAX_CHANGED_KEPT:
                    self.summary.changed.append(
                        (entity.name, record.id, before.status if before else None, result.status)
                    )
            evaluations.append(
                EntityEvaluation(
                    entity_type=entity.name,
                    entity_id=record.id,
                    email=record.email,
                    status=result.status,
                    base_status=result.state,
                    base_entered_at=result.state_entered_at,
                    status_since=result.status_since,
                    next_change_at=result.next_change_at,
                )
            )
            if not pushes:
                continue
            if not record.email:
                # Kept in the state store like any entity; there is just no member.
                log.warning(
                    "%s %s has no email address: evaluated, nothing pushed", entity.name, record.id
                )
                continue
            email = normalise_email(record.email)
            builder = members.get(email)
            if builder is None:
                builder = members[email] = MemberBuilder(email)
                feeders[email] = record.id
            elif entity.merge_fields:
                # Entities that only send events (a player's matches) share a
                # member by design; merge fields from two entities conflict.
                log.warning(
                    "%s is the address of several %s entities (%s, %s): one member, "
                    "the last one read sets its merge fields",
                    email,
                    entity.name,
                    feeders[email],
                    record.id,
                )
            builder.add(entity, record.id, result)
        # Push first, store after: the stored evaluation moves ``next_change_at``
        # on, so storing it before the push would let a crash mid-push leave
        # Mailchimp behind with nothing due to bring it up to date.
        if members:
            self.summary.absorb(self.sink.push(b.build() for b in members.values()))
        self.state.upsert_evaluations(evaluations, at=self.now)
