"""The cycle's diff: each derived chunk against what the state store holds.

Each chunk of results is compared with the stored evaluations (status,
entry, next change: written only when they differ) and with a digest of the
member contribution (merge fields, tags) Mailchimp last accepted from the
entity: only the differences go further, to the push buffer. An entity
whose address changed has its member's address changed first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sync.addresses import normalise_email
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.identities import IdentityChanges
from sync.daemon.push import PushBuffer
from sync.daemon.type_run import Derived, TypeRun
from sync.records import EventDue
from sync.rules.model import Entity
from sync.state.entities import EntityEvaluation, StoredRow, evaluation_digest
from sync.state.store import StateStore

#: The cycle's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.cycle")


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
    formatting every value of a million entities.

    The text hashed is ``repr((values, tags, field types))``, written out
    piece by piece so that the constant part (the field types) is rendered
    once per entity type, not once per entity: the digests stored in the
    state store stay the same."""
    values = derived.merge_fields
    tags = sorted(derived.tags) if derived.tags else ()
    tags_and_types = f"{tags!r}, {_field_types_text(entity)})"
    text = f"({[values.get(tag) for tag in _tags(entity)]!r}, {tags_and_types}"
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


_FIELD_TYPES: dict[int, tuple[Entity, tuple[str, ...], str]] = {}


def _cached(entity: Entity) -> tuple[Entity, tuple[str, ...], str]:
    # Keyed by identity (a rule model holds dicts, so it is not hashable); the
    # entity is kept alongside, so its id cannot be reused while cached.
    cached = _FIELD_TYPES.get(id(entity))
    if cached is None or cached[0] is not entity:
        types = tuple((f.tag, f.type) for f in entity.merge_fields)
        cached = _FIELD_TYPES[id(entity)] = (
            entity,
            tuple(f.tag for f in entity.merge_fields),
            repr(types),
        )
    return cached


def _tags(entity: Entity) -> tuple[str, ...]:
    return _cached(entity)[1]


def _field_types_text(entity: Entity) -> str:
    return _cached(entity)[2]


class Differ:
    """Settles each derived chunk of one cycle against the state store."""

    def __init__(
        self,
        state: StateStore,
        summary: CycleSummary,
        buffer: PushBuffer,
        identities: IdentityChanges,
        *,
        now: datetime,
        record: bool,
    ) -> None:
        self.state = state
        self.summary = summary
        self.buffer = buffer
        self.identities = identities
        self.now = now
        self.record = record

    def settle(
        self,
        run: TypeRun,
        derived: Mapping[str, tuple[str | None, Derived]],
        stored: Mapping[str, StoredRow],
        events: Mapping[str, tuple[EventDue, ...]],
        fingerprints: Mapping[str, str | None] | None = None,
    ) -> None:
        """Compare one chunk with the state store: store the evaluations that
        changed, queue the members whose contribution or events changed.

        ``fingerprints``: each entity's row digest (``SqlEvaluation.fp``),
        recorded once it is settled: with its evaluation when nothing is
        pushed, with the accepted contribution after a push."""
        name = run.entity.name
        fingerprints = fingerprints or {}
        writes: list[EntityEvaluation] = []
        settled: dict[str, str] = {}
        summary = self.summary
        for ident, (email, r) in derived.items():
            summary.entities_read[name] += 1
            if run.seen is not None:
                run.seen.add(ident)
            key = normalise_email(email) if email else None
            before = stored.get(ident)
            if before is not None:
                run.stored_seen += 1
            if self._moves_while_running(run, ident, before, key):
                continue
            if before is None or before.status != r.status:
                summary.note_change(name, ident, before.status if before else None, r.status)
            row_fp = fingerprints.get(ident)
            queued = self._queue(run, ident, key, before, r, events.get(ident, ()), row_fp)
            if not self.record:
                # A dry run (or a preview) writes nothing: what would be
                # stored need not even be compared.
                continue
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
            if queued:
                if changed is not None:
                    # Stored once pushed: a cycle killed mid-push leaves the
                    # entity due, so the next tick (not only the next full
                    # pass) pushes it again. Its row digest is recorded with
                    # the contribution, once accepted.
                    self.buffer.store_once_pushed(changed)
            elif changed is not None:
                writes.append(replace(changed, row_fp=row_fp))
            elif row_fp is not None and before is not None and before.row_fp != row_fp:
                settled[ident] = row_fp
        if self.record:
            if writes:
                self.state.upsert_evaluations(writes, at=self.now)
                summary.evaluations_written += len(writes)
            self.state.set_row_fingerprints(name, settled)
        self.buffer.flush_if_full()

    def _moves_while_running(
        self, run: TypeRun, ident: str, before: StoredRow | None, key: str | None
    ) -> bool:
        """Whether the entity's address changed while a ``/batches`` job left
        running still has operations for its member: moving the member now
        would let that job's update create a new member at the old address.
        The entity is then left as stored (nothing written, nothing queued)
        and moved by a pass after the job is collected."""
        if not self.record or before is None or before.email is None or key is None:
            return False
        if before.email == key or not self.state.running_emails([before.email, key]):
            return False
        log.info(
            "%s %s: address change %s -> %s waits for a /batches job left running",
            run.entity.name,
            ident,
            before.email,
            key,
        )
        return True

    def _queue(
        self,
        run: TypeRun,
        ident: str,
        key: str | None,
        before: StoredRow | None,
        r: Derived,
        due_events: Sequence[EventDue],
        row_fp: str | None,
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
            # Never while a push in flight may be sending to either address.
            self.buffer.drain()
            self.identities.change_address(before.email, key)
        fp = contribution_fingerprint(entity, r)
        if (
            not moved
            and before is not None
            and before.pushed_fp == fp
            and not due_events
            and ident not in run.forced
        ):
            return False
        self.buffer.add(entity, ident, key, r, due_events, fp, row_fp)
        return True
