"""Database values as facts: instants in UTC, typed values, bound instants.

Instants come back timezone-aware in UTC. Databases that store naive
timestamps (SQLite always does, PostgreSQL ``timestamp without time zone``)
are read as wall-clock times in the source's ``naive_timezone`` (UTC unless
configured); ``bind_instant`` gives ``:now`` and ``:since`` the same reading.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sync.records import FactValue
from sync.sources.model import FactType


def to_utc(value: Any, naive_tz: ZoneInfo) -> datetime | None:
    """An instant from whatever the driver returned, aware and in UTC.

    Naive values (SQLite text, ``timestamp without time zone``) are wall-clock
    times in ``naive_tz``. Raises ``ValueError`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ValueError(f"not an instant: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=naive_tz)
    try:
        instant: datetime = value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01 in a zone east of UTC has no UTC instant: a bad value of
        # this one row, like any other, not a reason to stop the read.
        raise ValueError(f"instant out of range in UTC: {value!r}") from None
    return instant


_TRUE = {"t", "true", "1", "y", "yes"}
_FALSE = {"f", "false", "0", "n", "no"}


def convert(value: Any, type_: FactType, naive_tz: ZoneInfo) -> FactValue:
    """A database value as a fact of ``type_``; ``ValueError`` when it is not one."""
    if value is None:
        return None
    if type_ == "instant":
        return to_utc(value, naive_tz)
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | Decimal) and value in (0, 1):
            return bool(value)  # SQLite has no boolean type: 0/1
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"not a boolean: {value!r}")
    if type_ == "number":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float):
            return value
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return float(value)
        raise ValueError(f"not a number: {value!r}")
    return value if isinstance(value, str) else str(value)


def bind_instant(value: datetime, dialect: str, naive_tz: ZoneInfo) -> Any:
    """``:now`` / ``:since`` as the database compares them best.

    PostgreSQL gets an aware datetime (the session time zone is the source's
    naive time zone, so ``timestamp`` columns compare as wall-clock times
    there). SQLite compares text, so it gets the wall-clock time in
    SQLAlchemy's storage format, ``YYYY-MM-DD HH:MM:SS.ffffff``.
    """
    if value.tzinfo is None:
        raise ValueError("bound instants must be timezone-aware")
    if dialect == "sqlite":
        local = value.astimezone(naive_tz).replace(tzinfo=None)
        return local.isoformat(" ", timespec="microseconds")
    return value.astimezone(UTC)
