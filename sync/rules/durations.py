"""Durations as marketers write them: ``10min``, ``3h``, ``24h``, ``7d``, ``12w``.

Units: ``s``, ``min``, ``h``, ``d`` (24 hours), ``w`` (7 days). Parts can be
combined, largest first: ``1d12h``. There is no month: a month in a ladder is
written ``30d``, so that every delay is an exact number of seconds. ``m`` is
refused because readers disagree on whether it means minutes or months.

One spelling only: ``2 d``, ``2D`` and ``2 days`` are refused, each with the
accepted spelling as a suggestion ("did you mean 2d?"), so that a file never
says the same thing two ways.
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


#: How people write units in prose, and the one spelling accepted here. ``None``
#: marks a unit with no exact length: a month, a year.
_SPELLINGS: dict[str, str | None] = {
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), "w"),
    **dict.fromkeys(("d", "day", "days"), "d"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "min"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("mo", "month", "months", "y", "yr", "year", "years"), None),
}
_LOOSE_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*(?:,|and)?")
_EXAMPLES = "10min, 3h, 7d or 12w"


def _loose_parts(text: str) -> list[tuple[str, str]] | None:
    """``"1 day, 12 Hours"`` → ``[("1", "day"), ("12", "hours")]``; None if not that shape."""
    parts, pos = [], 0
    while pos < len(text):
        match = _LOOSE_PART.match(text, pos)
        if match is None or match.end() == pos:
            return None
        parts.append((match.group(1), match.group(2).lower()))
        pos = match.end()
    return parts or None


def duration_suggestion(text: str) -> str | None:
    """The accepted spelling of a duration written loosely, when there is exactly one."""
    parts = _loose_parts(text.strip())
    if parts is None or any(unit not in _SPELLINGS for _, unit in parts):
        return None
    seconds = 0.0
    for number, unit in parts:
        canonical = _SPELLINGS[unit]
        if canonical is None:
            days = 365 if unit.startswith("y") else 30
            seconds += float(number) * days * UNITS["d"]
        else:
            seconds += float(number) * UNITS[canonical]
    if seconds != int(seconds) or seconds <= 0:
        return None
    as_written = "".join(f"{n}{_SPELLINGS[u]}" for n, u in parts if _SPELLINGS[u])
    if all("." not in n for n, _ in parts) and _WHOLE.match(as_written):
        try:
            if _strict(as_written) == timedelta(seconds=seconds):
                return as_written
        except DurationError:
            pass
    return format_duration(timedelta(seconds=int(seconds)))


def parse_duration(text: str) -> timedelta:
    """``"1d12h"`` → ``timedelta(days=1, hours=12)``. ``"0"`` is zero.

    Exactly one spelling is accepted (``7d``, not ``7 d``, ``7D`` or ``7 days``);
    anything else is refused with the accepted spelling as a suggestion."""
    stripped = text.strip()
    if stripped == "0":
        return timedelta(0)
    if _WHOLE.match(stripped):
        return _strict(stripped)
    if re.fullmatch(r"[-+]?\d+(?:\.\d+)?", stripped):
        if stripped.startswith("-"):
            raise DurationError(f"a delay cannot be negative; found {text!r}")
        return _no_unit(stripped)
    if stripped.startswith("-"):
        raise DurationError(
            f"a delay cannot be negative: write how long after entry, like 3h; found {text!r}"
        )
    parts = _loose_parts(stripped)
    if parts and any(_SPELLINGS.get(unit, "") is None for _, unit in parts):
        suggestion = duration_suggestion(stripped)
        hint = f"did you mean {suggestion}? " if suggestion else ""
        raise DurationError(
            f"{hint}Months and years differ in length, so write them in days: "
            f"30d for a month, 365d for a year; found {text!r}"
        )
    suggestion = duration_suggestion(stripped)
    if suggestion is not None and "." in stripped:
        raise DurationError(
            f"did you mean {suggestion}? Durations use whole numbers; found {text!r}"
        )
    if suggestion is not None:
        raise DurationError(
            f"did you mean {suggestion}? Write a number then its unit, in lower case "
            f"with no space: {_EXAMPLES}; found {text!r}"
        )
    raise DurationError(f"expected a duration like {_EXAMPLES}, found {text!r}")


def _no_unit(number: str) -> timedelta:
    raise DurationError(
        f"{number} what? Add a unit: {number}min, {number}h, {number}d or {number}w"
        if "." not in number
        else f"{number} has no unit, and durations use whole numbers: write it like {_EXAMPLES}"
    )


def _strict(compact: str) -> timedelta:
    seconds = 0
    last_size = None
    parts = _PART.findall(compact)
    for number, unit in parts:
        if unit == "m":
            count = int(number)
            if count == 1:
                what = "write 1min for a minute, or 30d for a month"
            else:
                what = f"write {count}min for {count} minutes, or {count * 30}d for {count} months"
            raise DurationError(f"`m` is ambiguous: {what}")
    for number, unit in parts:
        size = UNITS[unit]
        if last_size is not None and size >= last_size:
            total = sum(int(n) * UNITS[u] for n, u in parts)
            raise DurationError(
                f"write the largest unit first, each unit once: did you mean "
                f"{format_duration(timedelta(seconds=total))}? found {compact!r}"
            )
        last_size = size
        seconds += int(number) * size
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(f"{compact!r} is longer than 100 years (36500d)")
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
