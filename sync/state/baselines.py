"""Re-initialisation baselines: the status each entity entered at the
re-initialisation in force, replaced atomically by generation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync.records import require_aware
from sync.state.base import CHUNK, StoreBase, chunks, utc_now
from sync.state.tables import entity_baseline, entity_state, reinit_generation


@dataclass(frozen=True)
class Baseline:
    """The status an entity entered at a re-initialisation."""

    entity_id: str
    status: str
    entered_at: datetime


class BaselineStore(StoreBase):
    """The ``entity_baseline`` rows and the ``reinit_generation`` pointer."""

    def replace_baselines(
        self, entity_type: str, reinit_at: datetime, baselines: Iterable[Baseline]
    ) -> int:
        """Replace every baseline of ``entity_type`` by ``baselines``, atomically.

        Rows are written under a new generation, chunk by chunk (bounded memory
        for millions of entities); the generation pointer is flipped in the last
        transaction only. If the iterable raises or the process dies before,
        readers keep seeing the previous baseline; the orphan rows are removed
        by the next replacement.
        """
        require_aware(reinit_at, "re-initialisation instant")
        with self.engine.begin() as conn:
            current = self._generation(conn, entity_type)
            # Leftovers of an interrupted replacement.
            conn.execute(
                entity_baseline.delete().where(
                    entity_baseline.c.entity_type == entity_type,
                    entity_baseline.c.generation > (current or 0),
                )
            )
        generation = (current or 0) + 1
        written = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            with self.engine.begin() as conn:
                self._upsert(
                    conn, entity_baseline, batch, ("entity_type", "generation", "entity_id")
                )
            batch.clear()

        for baseline in baselines:
            batch.append(
                {
                    "entity_type": entity_type,
                    "generation": generation,
                    "entity_id": baseline.entity_id,
                    "status": baseline.status,
                    "entered_at": require_aware(baseline.entered_at, "baseline instant"),
                }
            )
            written += 1
            if len(batch) >= CHUNK * 4:
                flush()
        if batch:
            flush()
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                reinit_generation,
                [
                    {
                        "entity_type": entity_type,
                        "generation": generation,
                        "reinit_at": reinit_at,
                        "committed_at": utc_now(),
                    }
                ],
                ("entity_type",),
            )
            # The row digests were taken without these baselines: every
            # entity of the type is compared in full again at the next pass.
            conn.execute(
                entity_state.update()
                .where(entity_state.c.entity_type == entity_type)
                .values(row_fp=None)
            )
            conn.execute(
                entity_baseline.delete().where(
                    entity_baseline.c.entity_type == entity_type,
                    entity_baseline.c.generation < generation,
                )
            )
        return written

    @staticmethod
    def _generation(conn: sa.Connection, entity_type: str) -> int | None:
        value = conn.execute(
            sa.select(reinit_generation.c.generation).where(
                reinit_generation.c.entity_type == entity_type
            )
        ).scalar()
        return None if value is None else int(value)

    def reinit_at(self, entity_type: str) -> datetime | None:
        """The instant of the re-initialisation in force, if any."""
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                sa.select(reinit_generation.c.reinit_at).where(
                    reinit_generation.c.entity_type == entity_type
                )
            ).scalar()
            return value

    def baselines(
        self, entity_type: str, entity_ids: Iterable[str] | None = None
    ) -> dict[str, Baseline]:
        """Baselines in force, for the given entities (or all of the type)."""
        found: dict[str, Baseline] = {}
        with self.engine.connect() as conn:
            generation = self._generation(conn, entity_type)
            if generation is None:
                return found
            base = sa.select(entity_baseline).where(
                entity_baseline.c.entity_type == entity_type,
                entity_baseline.c.generation == generation,
            )
            queries = (
                [base]
                if entity_ids is None
                else [
                    base.where(self._among(entity_baseline.c.entity_id, chunk))
                    for chunk in chunks(list(dict.fromkeys(entity_ids)))
                ]
            )
            for query in queries:
                for row in conn.execute(query):
                    found[row.entity_id] = Baseline(row.entity_id, row.status, row.entered_at)
        return found

    def baseline(self, entity_type: str, entity_id: str) -> Baseline | None:
        return self.baselines(entity_type, [entity_id]).get(entity_id)
