"""The status history: how many entities were where, and how they moved, over time.

The state store holds only the present (one row per entity). The dashboard's
Trends page needs the past, and its Lifecycle page the flow along each edge
over the last 24 hours and 7 days; both come from this compact history,
which the daemon appends to after each cycle (``record_cycle``):

* ``status_history``: the count per status at the end of the cycle, one point
  per hour (a later cycle in the same hour overwrites it);
* ``transition_history``: the moves (from status → to status) the cycle made,
  summed per hour.

It stays bounded: hourly points are kept for ``HOURLY_FOR`` (90 days); older
ones are folded into one point per day (the day's last counts, the day's
summed moves). A year of history for 50 statuses is about 120,000 count rows
whatever the population.

The moves come from the cycle summary, which keeps the first 10,000
individual changes and the exact number of entries per status. When a cycle
changed more, the split of each status's entries by origin is scaled from
the changes kept, so the totals stay exact and only the split is an estimate.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sync.daemon.cycle_summary import CycleSummary
from sync.rules.model import Ruleset
from sync.state.store import StateStore
from sync.state.tables import status_history, transition_history, watermark

log = logging.getLogger(__name__)

HOUR = "hour"
DAY = "day"
#: How long hourly points are kept before being folded into daily ones.
HOURLY_FOR = timedelta(days=90)
#: Watermark naming the cycle (its ``now``) whose counts are the latest point.
RECORDED = "status_history_at"

Move = tuple[str, str, str]  # entity type, from status ('' when new), to status ('' for none)


def _count(row: Any) -> int:
    # Not ``row.count``: a Row is a tuple, whose ``count`` is a method.
    return int(row._mapping["count"])


def hour_of(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(instant: datetime) -> datetime:
    return hour_of(instant).replace(hour=0)


def moves_of(summary: CycleSummary) -> Counter[Move]:
    """The cycle's moves; exact per target status, the origin split scaled
    when the summary kept only part of the individual changes."""
    kept: Counter[Move] = Counter(
        (entity, before or "", after or "") for entity, _, before, after in summary.changed
    )
    moves: Counter[Move] = Counter()
    for (entity, status), total in summary.status_changes.items():
        to = status or ""
        origins = {m: n for m, n in kept.items() if m[0] == entity and m[2] == to}
        known = sum(origins.values())
        if known == 0:
            moves[(entity, "?", to)] += total  # origin unknown: kept changes ran out
            continue
        # Largest remainder: the scaled parts add up to the exact total.
        shares = {m: n * total / known for m, n in origins.items()}
        floors = {m: int(v) for m, v in shares.items()}
        left = total - sum(floors.values())
        for m in sorted(shares, key=lambda m: floors[m] - shares[m])[:left]:
            floors[m] += 1
        moves.update({m: n for m, n in floors.items() if n})
    return moves


def record_cycle(
    state: StateStore, ruleset: Ruleset, summary: CycleSummary, *, compact: bool = True
) -> None:
    """Append the cycle's point to the history (counts now, moves made)."""
    bucket = hour_of(summary.now)
    counts = {name: state.status_counts(name) for name in ruleset.entities}
    moves = moves_of(summary)
    with state.engine.begin() as conn:
        for name, by_status in counts.items():
            conn.execute(
                status_history.delete().where(
                    status_history.c.entity_type == name,
                    status_history.c.resolution == HOUR,
                    status_history.c.bucket == bucket,
                )
            )
            rows = [
                {"entity_type": name, "resolution": HOUR, "bucket": bucket,
                 "status": status or "", "count": n}
                for status, n in by_status.items()
            ]  # fmt: skip
            if rows:
                conn.execute(status_history.insert(), rows)
        _add_moves(conn, state, HOUR, bucket, moves)
        state._upsert(
            conn,
            watermark,
            [{"name": RECORDED, "value": summary.now.isoformat(), "updated_at": datetime.now(UTC)}],
            ("name",),
        )
        if compact:
            _compact(conn, state, summary.now)


def _add_moves(
    conn: sa.Connection, state: StateStore, resolution: str, bucket: datetime, moves: Counter[Move]
) -> None:
    if not moves:
        return
    keys = ("entity_type", "resolution", "bucket", "from_status", "to_status")
    existing = {
        (r.entity_type, r.from_status, r.to_status): _count(r)
        for r in conn.execute(
            sa.select(transition_history).where(
                transition_history.c.resolution == resolution,
                transition_history.c.bucket == bucket,
            )
        )
    }
    rows = [
        {"entity_type": e, "resolution": resolution, "bucket": bucket, "from_status": f,
         "to_status": t, "count": n + existing.get((e, f, t), 0)}
        for (e, f, t), n in moves.items()
    ]  # fmt: skip
    state._upsert(conn, transition_history, rows, keys)


def _compact(conn: sa.Connection, state: StateStore, now: datetime) -> None:
    """Fold hourly points older than ``HOURLY_FOR`` into daily ones."""
    horizon = day_of(now - HOURLY_FOR)
    old_counts = conn.execute(
        sa.select(status_history).where(
            status_history.c.resolution == HOUR, status_history.c.bucket < horizon
        )
    ).all()
    old_moves = conn.execute(
        sa.select(transition_history).where(
            transition_history.c.resolution == HOUR, transition_history.c.bucket < horizon
        )
    ).all()
    if not old_counts and not old_moves:
        return
    # Counts: the day's last hour stands for the day.
    last: dict[tuple[str, datetime], datetime] = {}
    for row in old_counts:
        key = (row.entity_type, day_of(row.bucket))
        last[key] = max(last.get(key, row.bucket), row.bucket)
    daily = [
        {"entity_type": r.entity_type, "resolution": DAY, "bucket": day_of(r.bucket),
         "status": r.status, "count": _count(r)}
        for r in old_counts
        if last[(r.entity_type, day_of(r.bucket))] == r.bucket
    ]  # fmt: skip
    state._upsert(conn, status_history, daily, ("entity_type", "resolution", "bucket", "status"))
    by_day: dict[datetime, Counter[Move]] = {}
    for r in old_moves:
        by_day.setdefault(day_of(r.bucket), Counter())[
            (r.entity_type, r.from_status, r.to_status)
        ] += _count(r)
    for day, moves in by_day.items():
        _add_moves(conn, state, DAY, day, moves)
    conn.execute(
        status_history.delete().where(
            status_history.c.resolution == HOUR, status_history.c.bucket < horizon
        )
    )
    conn.execute(
        transition_history.delete().where(
            transition_history.c.resolution == HOUR, transition_history.c.bucket < horizon
        )
    )


def record_quietly(state: StateStore, ruleset: Ruleset, summary: CycleSummary) -> None:
    """``record_cycle`` for the daemon: the history is for people looking at
    a dashboard, so failing to write it is logged, never fatal to the cycle."""
    try:
        record_cycle(state, ruleset, summary)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("status history not recorded for this cycle: %s", exc)


# -- reading -----------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    at: datetime
    counts: Mapping[str, int]  # status ('' for none) -> entities


def series(
    conn: sa.Connection,
    entity_type: str,
    since: datetime | None = None,
    *,
    max_points: int | None = None,
) -> list[Point]:
    """Counts per status over time, oldest first: daily points, then hourly
    ones. With ``max_points``, evenly spaced points only (always the latest),
    chosen before the counts are read, so a long period costs no more."""
    where = [status_history.c.entity_type == entity_type]
    if since is not None:
        where.append(status_history.c.bucket >= since)
    buckets: dict[str, list[datetime]] = {}
    for resolution in (HOUR, DAY):
        buckets[resolution] = list(
            conn.execute(
                sa.select(status_history.c.bucket)
                .where(*where, status_history.c.resolution == resolution)
                .group_by(status_history.c.bucket)
            ).scalars()
        )
    hourly_from = min(buckets[HOUR], default=None)
    # A day also covered hour by hour is left out.
    chosen = sorted(
        [(b, HOUR) for b in buckets[HOUR]]
        + [(b, DAY) for b in buckets[DAY] if hourly_from is None or b < hourly_from]
    )
    if max_points is not None and len(chosen) > max_points:
        step = len(chosen) / max_points
        chosen = sorted({chosen[-1 - int(i * step)] for i in range(max_points)})
    points: dict[datetime, dict[str, int]] = {b: {} for b, _ in chosen}
    for resolution in (HOUR, DAY):
        wanted = [b for b, r in chosen if r == resolution]
        for start in range(0, len(wanted), 400):
            # Equality on the primary key's first three columns: point lookups.
            rows = conn.execute(
                sa.select(
                    status_history.c.bucket, status_history.c.status, status_history.c.count
                ).where(
                    status_history.c.entity_type == entity_type,
                    status_history.c.resolution == resolution,
                    status_history.c.bucket.in_(wanted[start : start + 400]),
                )
            )
            for bucket, status, count in rows:
                points[bucket][status] = int(count)
    return [Point(at, counts) for at, counts in sorted(points.items())]


def latest_counts(conn: sa.Connection, entity_type: str) -> tuple[str, dict[str, int]] | None:
    """The counts recorded after the last cycle, with that cycle's ``now`` (ISO)."""
    recorded = conn.execute(
        sa.select(watermark.c.value).where(watermark.c.name == RECORDED)
    ).scalar()
    if recorded is None:
        return None
    bucket = hour_of(datetime.fromisoformat(recorded))
    rows = conn.execute(
        sa.select(status_history.c.status, status_history.c.count).where(
            status_history.c.entity_type == entity_type,
            status_history.c.resolution == HOUR,
            status_history.c.bucket == bucket,
        )
    ).all()
    return recorded, {status: int(count) for status, count in rows}


def moves_since(
    conn: sa.Connection, entity_type: str, since: datetime
) -> dict[tuple[str, str], int]:
    """(from, to) -> entities that made that move in buckets from ``since`` on."""
    query = (
        sa.select(
            transition_history.c.from_status,
            transition_history.c.to_status,
            sa.func.sum(transition_history.c.count),
        )
        .where(
            transition_history.c.entity_type == entity_type,
            # Both resolutions named, so the primary key's index serves the range.
            transition_history.c.resolution.in_((HOUR, DAY)),
            transition_history.c.bucket >= since,
        )
        .group_by(transition_history.c.from_status, transition_history.c.to_status)
    )
    return {(f, t): int(n) for f, t, n in conn.execute(query)}


def flows(
    conn: sa.Connection, entity_type: str, now: datetime, windows: Sequence[timedelta]
) -> dict[tuple[str, str], tuple[int, ...]]:
    """(from, to) -> moves in each window ending at ``now`` (whole hours)."""
    per_window = [moves_since(conn, entity_type, hour_of(now - w)) for w in windows]
    keys = {k for moves in per_window for k in moves}
    return {k: tuple(moves.get(k, 0) for moves in per_window) for k in keys}
