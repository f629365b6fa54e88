"""Durations as marketers write them: ``10min``, ``3h``, ``24h``, ``7d``, ``12w``.

Units: ``s``, ``min``, ``h``, ``d`` (24 hours), ``w`` (7 days). Parts can be
combined, largest first: ``1d12h``. There is no month: a month in a ladder is
written ``30d``, so that every delay is an exact number of seconds. ``m`` is
refused because readers disagree on whether it means minutes or months.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS: dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "min": 60, "s": 1}
_PART = re.compile(r"(\d+)(min|w|d|h|s|m)")
_WHOLE = re.compile(r"^(?:\d+(?:min|w|d|h|s|m))+$")
#: Longer delays are typos (an extra zero or ten); they would also push
#: instants past the year 9999, which Python cannot represent.
MAX_DURATION = timedelta(days=36500)


class DurationError(ValueError):
    """Raised with a message fit to show a marketer."""


def parse_duration(text: str) -> timedelta:
    """``"1d12h"`` → ``timedelta(days=1, hours=12)``. ``"0"`` is zero."""
    compact = text.strip().replace(" ", "")
    if compact == "0":
        return timedelta(0)
    if not _WHOLE.match(compact):
        raise DurationError(f"expected a duration like 10min, 3h, 7d or 12w, got {text!r}")
    seconds = 0
    last_size = None
    for number, unit in _PART.findall(compact):
        if unit == "m":
            raise DurationError(
                f"ambiguous unit 'm' in {text!r}: write 'min' for minutes or days for months (30d)"
            )
        size = UNITS[unit]
        if last_size is not None and size >= last_size:
            raise DurationError(f"write the parts of {text!r} largest first, each unit once")
        last_size = size
        seconds += int(number) * size
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(f"{text!r} is longer than 100 years (36500d)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest canonical spelling: ``timedelta(hours=36)`` → ``"1d12h"``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    # Ladders count in days (7d, 15d, 30d); weeks only for long whole-week spans (12w).
    long_weeks = seconds % UNITS["w"] == 0 and seconds > 31 * UNITS["d"]
    units = UNITS if long_weeks else {k: v for k, v in UNITS.items() if k != "w"}
    for unit, size in units.items():
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
