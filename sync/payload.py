"""What a value must be for Mailchimp to take it in a request body.

Two limits of the real service that the rules and the sink must respect
before anything is sent, kept here so that the rules check (``schema``), the
member builder (``members``) and the sink apply the same ones:

- **Request bodies are JSON.** Python's ``json.dumps`` writes a non-finite
  float as the bare token ``NaN`` / ``Infinity``, which is not JSON: one such
  value would make a whole 500-member body unparseable ("JSON Parse Error").
  :func:`json_problem` says why a merge value cannot be sent, so that the one
  record is refused and the rest of the batch goes through.
- **Event properties are bounded**: about 1,000 characters for every key and
  value together. The number is the project's assumption, not a documented
  fact (see ``docs/emulator.md``): Mailchimp documents no limit, and the staff
  answer in ``mailchimp/Mailchimp-SDK-iOS#70`` knew of none. Bounding keeps
  an event from being refused on every attempt if the limit is real; values
  are shortened (with a warning from the caller), never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Characters of an event's property names and values together.
EVENT_PROPERTIES_MAX = 1000


def json_problem(value: object) -> str | None:
    """Why ``value`` cannot be a merge-field value in a JSON body, or None.

    Only what JSON cannot carry is refused here; whether Mailchimp takes a
    JSON value for a given field is its answer to give."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a JSON number"
    if value is None or isinstance(value, str | int | float):
        return None
    return f"a {type(value).__name__} is not a JSON value"


def properties_size(properties: Mapping[str, str]) -> int:
    """Characters of an event's properties: every name and value together."""
    return sum(len(name) + len(value) for name, value in properties.items())


def bound_properties(
    properties: Mapping[str, str], limit: int = EVENT_PROPERTIES_MAX
) -> tuple[dict[str, str], list[str]]:
    """``properties`` shortened to at most ``limit`` characters, and the names
    of the values that were shortened (empty when nothing had to change).

    Names are kept whole (they are what a journey reads); the room left is
    shared among the values, the shortest first, so a long value does not
    crowd out short ones. When the names alone exceed ``limit`` every value
    is emptied and the result still exceeds it: ``mailsync check`` refuses
    such rules, so only a hand-built event can get here.
    """
    if properties_size(properties) <= limit:
        return dict(properties), []
    room = max(limit - sum(len(name) for name in properties), 0)
    kept: dict[str, str] = {}
    shortened: list[str] = []
    pending = sorted(properties.items(), key=lambda item: (len(item[1]), item[0]))
    for index, (name, value) in enumerate(pending):
        share = room // (len(pending) - index)
        cut = value[:share]
        if len(cut) < len(value):
            shortened.append(name)
        kept[name] = cut
        room -= len(cut)
    # Keep the declared order: it is how the rules listed them.
    return {name: kept[name] for name in properties}, sorted(shortened)
