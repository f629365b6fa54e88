"""The statuses a rollup counts, read from the state store.

An entity type whose facts count related entities' statuses (a Little
World user's matches) is read with a status lookup per relation. The
related statuses are not in the application's data: mailsync derives them,
and the state store holds them (the cycle evaluates the related types
first, dependencies first, so they are current). One definition, used by
the cycle's engine path and by ``mailsync explain``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sync.sources.model import SourcesConfig
from sync.state.entities import EntityState


class StoredStates(Protocol):
    """What a rollup reads of the state store: one entity's stored evaluation."""

    def entity_state_of(self, entity_type: str, entity_id: str) -> EntityState | None: ...


def stored_status(state: StoredStates, entity_type: str) -> Callable[[str], str | None]:
    """Related entity id -> its status as stored (None: none, or not stored)."""

    def status_of(entity_id: str) -> str | None:
        stored = state.entity_state_of(entity_type, entity_id)
        return stored.status if stored else None

    return status_of


def related_statuses(
    sources: SourcesConfig, state: StoredStates, entity_type: str
) -> dict[str, Callable[[str], str | None]] | None:
    """The status lookup of each relation of ``entity_type``, as the reader's
    ``related_statuses`` takes them; None for a type without relations."""
    related = {
        rel.name: stored_status(state, rel.name) for rel in sources.entity(entity_type).relations
    }
    return related or None
