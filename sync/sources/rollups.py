"""Facts of one entity derived from the *evaluated statuses* of related entities.

Little World counts a user's matches by match status group: a user is
``active.active_match`` when one of their matches is ``ongoing.*``. The match
statuses are not stored anywhere (mailsync derives them), so these counts
cannot be plain SQL: the daemon evaluates the related entity type first
(``match``), then reads the ``user``s together with their *relation rows*
(user id, match id, role, per-match per-user columns) and folds them here.

This module is pure: no database, no clock. ``sources.py`` parses the
declarative ``rollups`` section into ``Rollup`` values; the source reader
produces ``RelationRow``s; ``compute_rollups`` joins the two with a mapping
from related id to status. Keeping it a pure function lets the rule engine
wire it in without knowing anything about SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from sync.records import FactValue

#: Related entity id -> evaluated status (None = no status), as a mapping or a function.
StatusLookup = Mapping[str, str | None] | Callable[[str], str | None]


@dataclass(frozen=True)
class RelationRow:
    """One related entity of one entity: user 7 is the ``learner`` of match 42.

    ``columns`` holds the per-relation values the query returned besides the
    ids (``role``, ``user_sent_messages``, ...), already typed.
    """

    relation: str
    related_id: str
    columns: Mapping[str, FactValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollup:
    """How one fact is derived: count the related entities that match.

    A related entity counts when its status matches one of ``statuses``
    (shell-style patterns: ``ongoing.*``, ``failed.ghosted``; empty means any
    status, including none) and every ``where`` column equals one of its
    allowed values.
    """

    fact: str
    relation: str
    statuses: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[FactValue, ...]], ...] = ()

    def counts(self, row: RelationRow, status: str | None) -> bool:
        """Whether ``row`` (whose related entity has ``status``) counts for this rollup."""
        if row.relation != self.relation:
            return False
        if self.statuses and not any(status_matches(p, status) for p in self.statuses):
            return False
        return all(_equal_any(row.columns.get(column), allowed) for column, allowed in self.where)


def status_matches(pattern: str, status: str | None) -> bool:
    """``ongoing.*`` matches ``ongoing.free_play``; no status matches no pattern.

    Case-sensitive on purpose: status names are identifiers from the rules.
    """
    return status is not None and fnmatchcase(status, pattern)


def _equal_any(value: FactValue, allowed: tuple[FactValue, ...]) -> bool:
    # bool is an int in Python: `True == 1` must not let a boolean column
    # match a count of 1 (or 0 match False), so compare types strictly.
    return any(type(value) is type(a) and value == a for a in allowed) or (
        _is_number(value) and any(_is_number(a) and value == a for a in allowed)
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lookup(statuses: StatusLookup) -> Callable[[str], str | None]:
    if callable(statuses):
        return statuses
    mapping = statuses
    return lambda related_id: mapping.get(related_id)


def compute_rollups(
    rollups: Sequence[Rollup],
    rows: Iterable[RelationRow],
    statuses: Mapping[str, StatusLookup],
) -> dict[str, int]:
    """Every rollup fact of one entity, from its relation rows.

    ``statuses`` maps a relation name (``match``) to that relation's lookup:
    related id -> evaluated status. A related id the lookup does not know
    has no status (it still counts for a rollup without a status filter).
    Every rollup gets a value, 0 when nothing counts: a missing count would
    make ``matches_active > 0`` null, and null comparisons are false.
    """
    lookups = {name: _lookup(lookup) for name, lookup in statuses.items()}
    result = {rollup.fact: 0 for rollup in rollups}
    for row in rows:
        lookup = lookups.get(row.relation)
        status = lookup(row.related_id) if lookup is not None else None
        for rollup in rollups:
            if rollup.counts(row, status):
                result[rollup.fact] += 1
    return result
