"""A compiled entity type: its ``SELECT``, the values to bind, its rows decoded.

``sync.sql.compiler`` builds a ``CompiledEntity``; each row of its statement
decodes to a ``SqlEvaluation``, the fields of ``engine.Evaluation`` that do not
need action occurrences. Everything that depends only on the rules (state and
status names, tags, how each merge field decodes) is looked up in tables
built once per compiled entity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.base import PGDialect

from sync.records import FactValue
from sync.rules.expressions import Type
from sync.rules.model import ACTION_CODE, STATUS, Entity
from sync.sources.model import EntitySource
from sync.sources.values import bind_instant, convert
from sync.sql.expr import EPOCH, from_micros, to_micros
from sync.sql.inputs import NOW_AT, NOW_US, REINIT_US, UNSETTLED

#: An entity's latest status-giving and code-bearing actions, each as
#: ``at_µs * K + declaration order`` (None: no such action yet). Opaque to
#: callers: what ``SqlEvaluation.keys`` gives and ``evaluate(keys=...)`` takes.
ActionKeys = tuple[int | None, int | None]

_NO_TAGS: frozenset[str] = frozenset()


class SqlEvaluation(NamedTuple):
    """What the compiled SQL says about one entity at ``now`` (the fields of
    ``engine.Evaluation`` that do not need action occurrences).

    A named tuple rather than a frozen dataclass: the evaluator builds one per
    entity, a million per full evaluation, and a tuple is built in one C call
    (a frozen dataclass sets each field through ``object.__setattr__``)."""

    id: str
    email: str | None
    status: str | None
    status_since: datetime | None
    state: str | None
    state_entered_at: datetime | None
    action_code: str | None
    merge_fields: Mapping[str, FactValue] = {}
    tags: frozenset[str] = frozenset()
    next_change_at: datetime | None = None
    #: The latest actions' keys, to evaluate this entity again later from
    #: them and the occurrences since (``SqlEvaluator.keys_since``).
    keys: ActionKeys = (None, None)
    #: Digest of the result row this came from, computed by the database
    #: (``CompiledEntity.with_fingerprint``); None when not asked for.
    fp: str | None = None


#: Bumped when what a row digest covers changes: every entity is compared in
#: full once more, and its digest recorded again.
ROW_FP_VERSION = 2

#: Ends the contribution part of a row digest (``CompiledEntity._digest``).
CONTRIBUTION_END = ":"

#: Positions, in a result row (``CompiledEntity.decode`` reads the same
#: first nine), of what is not the member's contribution: the id, the
#: state's entry, the status's start, the next change, the latest action's key.
_ID, _STATE_AT, _SINCE, _CHANGE, _STATUS_KEY = 0, 4, 5, 6, 8


def contribution(row_fp: str | None) -> str | None:
    """The contribution part of a row digest (None: none, or a digest
    recorded before digests had parts)."""
    if row_fp is None:
        return None
    part, found, _ = row_fp.partition(CONTRIBUTION_END)
    return part if found else None


_tuple_new = tuple.__new__


@dataclass(frozen=True, eq=False)
class CompiledEntity:
    """One entity type compiled for one dialect: a ``SELECT`` and its decoder."""

    entity: Entity
    source: EntitySource
    dialect: str
    select: sa.Select[Any]
    identity: tuple[str, ...]
    #: merge tag → (how to decode, result column)
    _merge: tuple[tuple[str, str, str | None], ...]
    _codes: Mapping[int, str]
    _code_base: int
    #: Position of the row's digest among the result columns, when there is
    #: one (``with_fingerprint``).
    fp_column: int | None = None
    #: Position of the stored columns joined from the state store (entity_id,
    #: null when none is stored, then email, eval_fp, pushed_fp, row_fp),
    #: when joined (``with_fingerprint``).
    stored_column: int | None = None
    #: Whether the rows of settled entities are left out, and stored entities
    #: the list query no longer gives come back with null columns but the
    #: stored ones (``with_fingerprint(skip_settled=True)``).
    skips_settled: bool = False

    def params(self, now: datetime, *, reinit_at: datetime | None = None) -> dict[str, Any]:
        """The bound values for evaluating at ``now`` (``ids`` aside)."""
        tz = ZoneInfo(self.source.naive_timezone)
        params: dict[str, Any] = {
            "now": bind_instant(now, self.dialect, tz),
            NOW_US: to_micros(now),
        }
        if reinit_at is not None:
            params[REINIT_US] = to_micros(reinit_at)
        if self.skips_settled:
            params[NOW_AT] = now
            params[UNSETTLED] = []
        return params

    def decode(self, row: Sequence[Any]) -> SqlEvaluation:
        """A result row as an evaluation; ids become text as the reader's do.

        Columns are read by position (the ``select``'s order) and everything
        that depends only on the rules (state, status name, tags, how each
        merge field decodes) is looked up in tables built once: at a million
        rows, per-row attribute and name lookups cost as much as the query."""
        ident, email, cur, step, state_at, since, change, code_key, status_key = row[:9]
        code = None if code_key is None else self._codes.get(code_key % self._code_base)
        if cur is None:
            state_name = status = None
            tags: frozenset[str] = _NO_TAGS
            entered = started = None
        else:
            state_name, status, tags = self._statuses[cur][step]
            entered = None if state_at is None else EPOCH + timedelta(0, 0, state_at)
            started = None if since is None else EPOCH + timedelta(0, 0, since)
        merge: dict[str, FactValue] = {}
        for tag, kind, position, decoder in self._plan:
            if kind == 2:
                value = row[position]
                merge[tag] = value if value is None or value.__class__ is str else decoder(value)
            elif kind == 0:
                merge[tag] = status
            elif kind == 1:
                merge[tag] = code
            elif kind == 3:
                value = row[position]
                merge[tag] = None if value is None else decoder(value)
            else:
                merge[tag] = None
        return _tuple_new(
            SqlEvaluation,
            (
                str(ident),
                email.strip() or None if email.__class__ is str else None,
                status,
                started,
                state_name,
                entered,
                code,
                merge,
                tags,
                None if change is None else EPOCH + timedelta(0, 0, change),
                (status_key, code_key),
                None if self.fp_column is None else row[self.fp_column],
            ),
        )

    def with_fingerprint(
        self,
        *,
        ordered: bool,
        stored: sa.TableClause | None = None,
        md5: bool = False,
        skip_settled: bool = False,
    ) -> CompiledEntity:
        """The same evaluation with one more column, ``row_fp``: a digest of
        the whole result row and of what decoding it depends on in the rules
        (``salt``), computed by PostgreSQL. Two equal digests decode to the
        same evaluation, merge fields, tags and events configuration, so the
        daemon can leave an entity whose digest did not change without
        decoding its row (``sync.daemon.derive``).

        The digest is PostgreSQL's 64-bit ``hash_record_extended`` of the
        row, seeded with the salt: it hashes each value as stored, without
        writing the row as text (at 1M users 0.7 s against 4 s for an MD5 of
        the row's text). A column type without a hash function (``json``)
        makes it fail on the first row; ``md5`` then writes the row as text
        and digests that instead (``SqlEvaluator`` retries so).

        ``stored``: the state store's ``entity_state`` table when it lives in
        the same database; its row for each entity is joined to the result
        (``stored_column``), so the diff needs no look-up of its own.

        ``skip_settled`` (with ``stored``, for the whole population): the rows
        of settled entities stay in the database (``_settled_filter``), so
        only what may have changed reaches the daemon; and the stored
        entities the list query no longer gives come back as rows whose
        columns are null but the stored ones (a full join), so deletions
        need no read of their own."""
        inner = self.select.subquery("q")
        digest = self._digest(inner, md5)
        columns: list[Any] = [*inner.c, digest.label("row_fp")]
        source: sa.FromClause = inner
        where: sa.ColumnElement[bool] | None = None
        if skip_settled and stored is None:
            raise ValueError("skip_settled needs the state store joined")
        if stored is not None:
            # This type's stored rows, joined by id (ids are text there).
            s = (
                sa.select(*stored.c)
                .where(stored.c.entity_type == sa.literal(self.entity.name, sa.Text))
                .subquery("s")
            )
            ident = sa.cast(inner.c[0], sa.Text)
            on = s.c.entity_id == ident
            source = inner.join(s, on, full=True) if skip_settled else inner.outerjoin(s, on)
            columns += [
                s.c[name].label(f"stored_{name}")
                for name in ("entity_id", "email", "eval_fp", "pushed_fp", "row_fp")
            ]
            if skip_settled:
                where = _settled_filter(s, digest, ident)
        select = sa.select(*columns).select_from(source)
        if where is not None:
            select = select.where(where)
        if ordered:
            select = select.order_by(inner.c[0])
        fp_column = len(inner.c)
        return replace(
            self,
            select=select,
            fp_column=fp_column,
            stored_column=fp_column + 1 if stored is not None else None,
            skips_settled=skip_settled,
        )

    def digests(self, *, md5: bool = False) -> CompiledEntity:
        """Only each entity's id (as text) and its row's digest, in the byte
        order of the ids (``COLLATE "C"``, SQLite's order too): what a full
        pass merges with the stored digests when the state store is not
        joined (``sync.daemon.derive``), without bringing the rows over."""
        inner = self.select.subquery("q")
        ident = sa.cast(inner.c[0], sa.Text)
        select = (
            sa.select(ident.label("id"), self._digest(inner, md5).label("row_fp"))
            .select_from(inner)
            .order_by(ident.collate("C"))
        )
        return replace(self, select=select, fp_column=1, stored_column=None)

    def _digest(self, inner: sa.Subquery, md5: bool) -> sa.ColumnElement[Any]:
        """The digest of the subquery ``inner``'s whole row (see
        ``with_fingerprint``), in two parts: ``CONTRIBUTION:TIMING``. The
        first covers what the member gets (address, status, action code,
        merge values, and the entry instants when statuses send events),
        the second the rest (id, entry instants, next change, latest action
        key). A rules change that only moves instants (a delay) keeps the
        first part of most rows: ``mailsync plan`` then leaves alone the
        entities whose member would get nothing new (``contribution``)."""
        if self.dialect != "postgresql":
            raise NotImplementedError("row digests are computed by PostgreSQL only")
        columns = list(inner.c)
        timing = {_ID, _CHANGE, _STATUS_KEY}
        if not self._status_events:
            # Status events are keyed, and kept inside the event window, by
            # the instant their status was entered: then those instants are
            # part of the contribution.
            timing |= {_STATE_AT, _SINCE}
        parts = (
            [c for i, c in enumerate(columns) if i not in timing],
            [c for i, c in enumerate(columns) if i in timing],
        )
        seed = int.from_bytes(bytes.fromhex(self.salt), "big", signed=True)
        digests: list[sa.ColumnElement[Any]] = []
        for part in parts:
            # One record of the part's columns.
            row = sa.func.row(*part)
            if md5:
                digests.append(sa.func.md5(sa.cast(row, sa.Text) + sa.literal(self.salt, sa.Text)))
            else:
                hashed = sa.func.hash_record_extended(row, sa.literal(seed, sa.BigInteger))
                digests.append(sa.cast(hashed, sa.Text))
        return digests[0] + sa.literal(CONTRIBUTION_END, sa.Text) + digests[1]

    @property
    def _status_events(self) -> bool:
        """Whether entering a status sends an event (keyed by its instant)."""
        return any(state.event for state in self.entity.states.values())

    @cached_property
    def basis(self) -> str:
        """A digest of the statement itself: its SQL, the values bound into
        it when it was built (the salt is one) and the salt. Row digests
        computed under another basis (other rules, another version of
        mailsync) may all differ."""
        statement = self.select.compile(dialect=PGDialect())  # type: ignore[no-untyped-call]
        bound = sorted((name, repr(value)) for name, value in statement.params.items())
        text = f"{statement}\n{bound}\n{self.salt}"
        return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()

    @cached_property
    def salt(self) -> str:
        """What a row means besides its values: the status and tag tables,
        action codes, merge fields and their types, events, the time zone of
        naive instants. A rules change that alters none of these (a delay, a
        condition) keeps the digest of every row it does not change."""
        entity = self.entity
        statuses = [[(a, b, sorted(tags)) for a, b, tags in rungs] for rungs in self._statuses]
        events = (
            [(a.name, repr(a.event)) for a in entity.actions.values()],
            [(name, repr(state.event)) for name, state in entity.states.items()],
        )
        described = (
            ROW_FP_VERSION,
            statuses,
            sorted(self._codes.items()),
            self._code_base,
            self._merge,
            [(f.tag, f.type) for f in entity.merge_fields],
            events,
            self.source.naive_timezone,
        )
        return hashlib.blake2b(repr(described).encode("utf-8"), digest_size=8).hexdigest()

    @cached_property
    def _statuses(self) -> list[list[tuple[str, str, frozenset[str]]]]:
        """State index → rung → (state name, status name, tags)."""
        return [
            [(state.name, state.status_name(step), state.tags) for step in range(len(state.steps))]
            for state in self.entity.states.values()
        ]

    @cached_property
    def _plan(self) -> tuple[tuple[str, int, int, Any], ...]:
        """Per merge field: (tag, kind, column position, decoder). Kinds: 0
        status, 1 action code, 2 text (kept as is when already a str), 3
        decoded, 4 missing (always null)."""
        tz = ZoneInfo(self.source.naive_timezone)
        names = [c.name for c in self.select.selected_columns]
        plan: list[tuple[str, int, int, Any]] = []
        for tag, how, column in self._merge:
            if how == STATUS:
                plan.append((tag, 0, -1, None))
            elif how == ACTION_CODE:
                plan.append((tag, 1, -1, None))
            elif column is None:
                plan.append((tag, 4, -1, None))
            else:
                position = names.index(column)
                decoder = partial(_decode_value, how, tz=tz)
                textual = how in ("identity", "string", f"derived:{Type.STRING.value}")
                plan.append((tag, 2 if textual else 3, position, decoder))
        return tuple(plan)


def _settled_filter(
    stored: sa.Subquery, digest: sa.ColumnElement[Any], ident: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """The rows a full pass must see: all but those of settled entities, the
    test ``Deriver._unsettled`` makes in Python. Settled: the row's digest is
    the one stored, the stored evaluation's next change is after ``now``
    (or none) and the entity is not among the ids bound to ``UNSETTLED`` (a
    retry, an event in the window). A null (nothing stored, an entity gone)
    means not settled."""
    now = sa.bindparam(NOW_AT, type_=sa.DateTime(timezone=True))
    settled = sa.and_(
        stored.c.row_fp == digest,
        sa.or_(stored.c.next_change_at.is_(None), stored.c.next_change_at > now),
        sa.not_(ident == sa.func.any(sa.bindparam(UNSETTLED, type_=postgresql.ARRAY(sa.Text)))),
    )
    return sa.not_(sa.func.coalesce(settled, sa.false()))


def _decode_value(how: str, value: Any, tz: ZoneInfo) -> FactValue:
    """Raw column value → fact value, the way ``SourceReader`` converts it."""
    if value is None:
        return None
    if how == "identity":
        return str(value)
    if how == "rollup":
        return int(value)
    if how.startswith("derived:"):
        kind = how.removeprefix("derived:")
        if kind == Type.INSTANT.value:
            return from_micros(value)
        if kind == Type.BOOL.value:
            return bool(value)
        return convert(value, "number" if kind == Type.NUMBER.value else "string", tz)
    return convert(value, how, tz)  # type: ignore[arg-type]
