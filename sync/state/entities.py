"""Entity evaluations: what the engine last said of each entity.

Per entity, the last evaluation (status, the base state and when it was
entered, ``next_change_at`` so the daemon only re-evaluates entities whose
status can have moved), the digest the cycle diffs against, and the lookups
by schedule, status and member address.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from sync.addresses import normalise_email
from sync.state.base import StoreBase, chunks, placeholder, stage, utc_now
from sync.state.tables import entity_link, entity_state


@dataclass(frozen=True)
class EntityEvaluation:
    """The engine's verdict on one entity, as the store keeps it."""

    entity_type: str
    entity_id: str
    email: str | None
    status: str | None
    base_status: str | None = None
    base_entered_at: datetime | None = None
    status_since: datetime | None = None
    next_change_at: datetime | None = None
    #: Digest of the compiled SQL's row behind this evaluation, stored with
    #: it (None: none, or not settled yet; see ``StoredRow.row_fp``).
    row_fp: str | None = None


class StoredRow(NamedTuple):
    """One stored evaluation as the cycle compares it (``stored_rows``)."""

    email: str | None
    #: ``evaluation_digest`` of the stored evaluation (None before version 5).
    eval_fp: str | None
    pushed_fp: str | None
    #: Digest of the compiled SQL's row when the entity was last settled
    #: (evaluation stored, contribution accepted); None before version 10.
    row_fp: str | None = None

    @property
    def status(self) -> str | None:
        """The stored status (the digest's first field)."""
        if self.eval_fp is None:
            return None
        status = self.eval_fp.split(DIGEST_SEPARATOR, 1)[0]
        return status or None

    def due(self, now_micros: int) -> bool:
        """Whether the stored evaluation's next change (the digest's fifth
        field) is at or before ``now_micros``: then it must be derived again."""
        if self.eval_fp is None:
            return True
        fields = self.eval_fp.split(DIGEST_SEPARATOR, 5)
        return len(fields) < 6 or (fields[4] != "" and int(fields[4]) <= now_micros)


#: Separates the fields of ``evaluation_digest`` (never in a status name).
DIGEST_SEPARATOR = "|"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(instant: datetime | None) -> str:
    return "" if instant is None else str((instant - _EPOCH) // _MICROSECOND)


def evaluation_digest(
    status: str | None,
    state: str | None,
    state_entered_at: datetime | None,
    status_since: datetime | None,
    next_change_at: datetime | None,
    email: str | None,
) -> str:
    """The fields of an evaluation the cycle compares, as one text: status
    first (``StoredRow.status`` reads it back), then the state, its entry, the
    status's start and the next change in epoch microseconds, and the
    (normalised) address."""
    return DIGEST_SEPARATOR.join(
        (
            status or "",
            state or "",
            _micros(state_entered_at),
            _micros(status_since),
            _micros(next_change_at),
            email or "",
        )
    )


@dataclass(frozen=True)
class EntityState(EntityEvaluation):
    """A stored evaluation, with the instant it was stored."""

    updated_at: datetime | None = None


def update_each(engine: sa.Engine, entity_type: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Set text columns of stored entities, in one transaction: each row names
    the id (``k_id``) and the columns it sets (``k_<column>``; every row sets
    the same ones).

    The values go to the driver as plain tuples: through SQLAlchemy's per-row
    parameter processing, settling the 7,817 entities of a 1 % tick at 1M
    users held the interpreter about 0.2 s (benchmarks/README.md, "The
    tick's per-row writes"). On SQLite, one ``UPDATE`` per row by the
    driver's ``executemany``; on PostgreSQL, the rows by ``COPY`` and one
    ``UPDATE .. FROM`` them (``stage``)."""
    if not rows:
        return
    columns = [key.removeprefix("k_") for key in rows[0] if key != "k_id"]
    keys = [f"k_{column}" for column in columns]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            staged = stage(
                conn,
                entity_state,
                ["entity_id", *columns],
                [(row["k_id"], *(row[k] for k in keys)) for row in rows],
            )
            sets = ", ".join(f'"{column}" = s."{column}"' for column in columns)
            conn.exec_driver_sql(
                f'UPDATE "{entity_state.name}" AS t SET {sets} FROM "{staged}" AS s'
                ' WHERE t."entity_type" = %s AND t."entity_id" = s."entity_id"',
                (entity_type,),
            )
            return
        mark = placeholder(conn.dialect.name)
        sets = ", ".join(f'"{column}" = {mark}' for column in columns)
        sql = (
            f'UPDATE "{entity_state.name}" SET {sets}'
            f' WHERE "entity_type" = {mark} AND "entity_id" = {mark}'
        )
        values = [(*(row[k] for k in keys), entity_type, row["k_id"]) for row in rows]
        for chunk in chunks(values, 5000):
            conn.exec_driver_sql(sql, list(chunk))


class EntityStore(StoreBase):
    """The ``entity_state`` table: evaluations stored, read, scheduled, forgotten."""

    def upsert_evaluations(
        self,
        evaluations: Iterable[EntityEvaluation],
        *,
        at: datetime | None = None,
        settled: Mapping[tuple[str, str], tuple[str, str | None]] | None = None,
    ) -> int:
        """Store evaluations (insert or replace), all in one transaction.
        ``settled``: (type, id) -> (pushed digest, row digest) of the
        entities whose contribution Mailchimp accepted, recorded in the same
        write (``LedgerStore.set_pushed_fingerprints`` otherwise): going
        live, each entity's row is written once, not twice."""
        stamp = at or utc_now()
        rows = [
            {
                "entity_type": e.entity_type,
                "entity_id": e.entity_id,
                # Stored lower-cased, as the ledger keys members, so lookups use the index.
                "email": normalise_email(e.email) if e.email else None,
                "status": e.status,
                "base_status": e.base_status,
                "base_entered_at": e.base_entered_at,
                "status_since": e.status_since,
                "next_change_at": e.next_change_at,
                "updated_at": stamp,
                "row_fp": e.row_fp,
                "eval_fp": evaluation_digest(
                    e.status,
                    e.base_status,
                    e.base_entered_at,
                    e.status_since,
                    e.next_change_at,
                    normalise_email(e.email) if e.email else None,
                ),
            }
            for e in evaluations
        ]
        settled = settled or {}
        pending, pushed = [], []
        for row in rows:
            done = settled.get((str(row["entity_type"]), str(row["entity_id"])))
            if done is None:
                pending.append(row)
            else:
                row["pushed_fp"], row["row_fp"] = done
                pushed.append(row)
        keys = ("entity_type", "entity_id")
        with self.engine.begin() as conn:
            self._upsert(conn, entity_state, pending, keys)
            self._upsert(conn, entity_state, pushed, keys)
        return len(rows)

    def stored_rows(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, StoredRow]:
        """What the cycle diffs against, by id: three short texts per entity,
        read without type conversion (a full pass reads one per entity of
        the population, so per-row costs count): through the driver's own
        cursor, a chunk of rows at a time (at 1M users on SQLite, 2.5 s
        against 5.2 s row by row through SQLAlchemy's result)."""
        found: dict[str, StoredRow] = {}
        size = self.ids_per_statement
        mark = placeholder(self.dialect)
        make = StoredRow._make
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                for chunk in chunks(entity_ids, size):
                    # One array parameter on PostgreSQL, as ``_among``.
                    values: list[Any]
                    if self.dialect == "postgresql":
                        among, values = "= ANY(%s)", [list(chunk)]
                    else:
                        among, values = f"IN ({', '.join([mark] * len(chunk))})", list(chunk)
                    cursor.execute(
                        "SELECT entity_id, email, eval_fp, pushed_fp, row_fp FROM entity_state"
                        f" WHERE entity_type = {mark} AND entity_id {among}",
                        (entity_type, *values),
                    )
                    for row in cursor.fetchall():
                        found[row[0]] = make(row[1:])
            finally:
                cursor.close()
        return found

    def stored_digests(
        self, entity_type: str, now: datetime
    ) -> Generator[tuple[str, str | None, bool]]:
        """``(entity_id, row_fp, due)`` of every stored entity of a type,
        streamed in the byte order of the ids (the primary key's order on
        SQLite; ``COLLATE "C"`` on PostgreSQL): a full pass merges them with
        the compiled SQL's digests, in the same order. ``due``: no stored
        evaluation, or its next change at or before ``now``."""
        due = sa.or_(
            entity_state.c.eval_fp.is_(None),
            sa.and_(
                entity_state.c.next_change_at.is_not(None), entity_state.c.next_change_at <= now
            ),
        )
        ident = entity_state.c.entity_id
        query = (
            sa.select(ident, entity_state.c.row_fp, sa.case((due, 1), else_=0))
            .where(entity_state.c.entity_type == entity_type)
            .order_by(ident if self.dialect == "sqlite" else ident.collate("C"))
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
            try:
                for row in result:
                    yield row[0], row[1], row[2] == 1
            finally:
                # Left early (most digests differ): the server cursor too.
                result.close()

    def set_row_fingerprints(self, entity_type: str, fingerprints: Mapping[str, str]) -> None:
        """Record the compiled SQL's row digest of settled entities whose
        evaluation and contribution did not change (see ``StoredRow.row_fp``)."""
        update_each(
            self.engine, entity_type, [{"k_id": k, "k_row_fp": v} for k, v in fingerprints.items()]
        )

    def joinable_from(self, engine: sa.Engine) -> sa.TableClause | None:
        """This store's ``entity_state`` as ``engine`` (the application's
        database) can read it, when both are the same PostgreSQL database and
        ``engine`` may read the table; else None. The compiled SQL then joins
        it, and the cycle's diff needs no look-up of its own."""
        mine, theirs = self.engine.url, engine.url
        if self.dialect != "postgresql" or engine.dialect.name != "postgresql":
            return None
        same = (mine.host, mine.port, mine.database) == (theirs.host, theirs.port, theirs.database)
        # Without a schema of its own, the store's tables are where its
        # search_path puts them: the same for the application only with
        # the same connection options.
        if not same or (self.schema is None and mine.query != theirs.query):
            return None
        names = (
            "entity_type",
            "entity_id",
            "email",
            "eval_fp",
            "pushed_fp",
            "row_fp",
            "next_change_at",
        )
        table = sa.table("entity_state", *(sa.column(n) for n in names), schema=self.schema)
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)).select_from(table).where(sa.false()))
        except sa.exc.DBAPIError:
            # Not migrated yet, or not readable by the application's role.
            return None
        return table

    def entity_ids(self, entity_type: str) -> set[str]:
        """Every stored id of a type (a full pass finds the deleted ones)."""
        query = sa.select(entity_state.c.entity_id).where(entity_state.c.entity_type == entity_type)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def forget_entities(self, entity_type: str, entity_ids: Iterable[str]) -> int:
        """Entities the sources no longer list: their evaluations and links go
        (``status`` stops counting them); members and events sent stay."""
        ids = list(dict.fromkeys(entity_ids))
        with self.engine.begin() as conn:
            for chunk in chunks(ids):
                conn.execute(
                    entity_state.delete().where(
                        entity_state.c.entity_type == entity_type,
                        self._among(entity_state.c.entity_id, chunk),
                    )
                )
                conn.execute(
                    entity_link.delete().where(
                        entity_link.c.dependent_type == entity_type,
                        self._among(entity_link.c.dependent_id, chunk),
                    )
                )
        return len(ids)

    @staticmethod
    def _entity(row: sa.Row[Any]) -> EntityState:
        return EntityState(
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            email=row.email,
            status=row.status,
            base_status=row.base_status,
            base_entered_at=row.base_entered_at,
            status_since=row.status_since,
            next_change_at=row.next_change_at,
            updated_at=row.updated_at,
        )

    def entity_states(self, entity_type: str, entity_ids: Iterable[str]) -> dict[str, EntityState]:
        ids = list(dict.fromkeys(entity_ids))
        found: dict[str, EntityState] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    sa.select(entity_state).where(
                        entity_state.c.entity_type == entity_type,
                        self._among(entity_state.c.entity_id, chunk),
                    )
                )
                for row in rows:
                    found[row.entity_id] = self._entity(row)
        return found

    def entity_state_of(self, entity_type: str, entity_id: str) -> EntityState | None:
        return self.entity_states(entity_type, [entity_id]).get(entity_id)

    def due(
        self, now: datetime, limit: int = 1000, *, entity_type: str | None = None
    ) -> list[EntityState]:
        """Entities whose ``next_change_at`` is at or before ``now``, soonest first."""
        query = sa.select(entity_state).where(entity_state.c.next_change_at <= now)
        if entity_type is not None:
            query = query.where(entity_state.c.entity_type == entity_type)
        query = query.order_by(
            entity_state.c.next_change_at, entity_state.c.entity_type, entity_state.c.entity_id
        ).limit(limit)
        with self.engine.connect() as conn:
            return [self._entity(row) for row in conn.execute(query)]

    def count_entities(self, entity_type: str) -> int:
        """How many entities of this type are stored."""
        query = sa.select(sa.func.count()).where(entity_state.c.entity_type == entity_type)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_due(self, now: datetime) -> int:
        """How many entities (of any type) have a ``next_change_at`` at or before ``now``."""
        query = sa.select(sa.func.count()).where(entity_state.c.next_change_at <= now)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def status_counts(self, entity_type: str) -> dict[str | None, int]:
        """How many entities of this type are in each status (None: no status)."""
        query = (
            sa.select(entity_state.c.status, sa.func.count())
            .where(entity_state.c.entity_type == entity_type)
            .group_by(entity_state.c.status)
        )
        with self.engine.connect() as conn:
            return {status: int(count) for status, count in conn.execute(query)}

    def entity_ids_by_email(self, emails: Iterable[str]) -> dict[str, set[str]]:
        """entity type -> ids of the entities feeding these (lower-cased) members."""
        found: dict[str, set[str]] = {}
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        with self.engine.connect() as conn:
            for chunk in chunks(wanted):
                rows = conn.execute(
                    sa.select(entity_state.c.entity_type, entity_state.c.entity_id).where(
                        self._among(entity_state.c.email, chunk)
                    )
                )
                for entity_type, entity_id in rows:
                    found.setdefault(entity_type, set()).add(entity_id)
        return found

    def entities_by_email(self, emails: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """(entity type, id) of the entities feeding each (lower-cased) member."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        found: dict[str, list[tuple[str, str]]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted):
                rows = conn.execute(
                    sa.select(
                        entity_state.c.email, entity_state.c.entity_type, entity_state.c.entity_id
                    )
                    .where(self._among(entity_state.c.email, chunk))
                    .order_by(entity_state.c.entity_type, entity_state.c.entity_id)
                )
                for email, entity_type, entity_id in rows:
                    found.setdefault(email, []).append((entity_type, entity_id))
        return found
