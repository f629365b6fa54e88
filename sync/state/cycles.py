"""The daemon's cycles and watermarks (its leader lease is
``sync.daemon.lock``'s)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync.state.base import StoreBase, utc_now
from sync.state.tables import cycle, watermark


@dataclass(frozen=True)
class Cycle:
    id: int
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    counts: Mapping[str, Any]


class CycleStore(StoreBase):
    """The ``cycle`` rows (started, finished, counts) and named watermarks."""

    def start_cycle(self, at: datetime) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(cycle.insert().values(started_at=at))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def finish_cycle(
        self, cycle_id: int, at: datetime, *, ok: bool, counts: Mapping[str, Any]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                cycle.update()
                .where(cycle.c.id == cycle_id)
                .values(finished_at=at, ok=ok, counts_json=json.dumps(dict(counts), default=str))
            )

    def cycles(self, limit: int = 20) -> list[Cycle]:
        """The latest cycles, newest first."""
        query = sa.select(cycle).order_by(cycle.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [
                Cycle(
                    id=int(row.id),
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    ok=None if row.ok is None else bool(row.ok),
                    counts=json.loads(row.counts_json) if row.counts_json else {},
                )
                for row in conn.execute(query)
            ]

    def get_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            value: str | None = conn.execute(
                sa.select(watermark.c.value).where(watermark.c.name == name)
            ).scalar()
            return value

    def set_watermark(self, name: str, value: str) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                watermark,
                [{"name": name, "value": value, "updated_at": utc_now()}],
                ("name",),
            )
