"""What a cycle carries through one entity type, and reads of each entity.

``TypeRun`` is one entity type within a cycle: its event window, the ids
that must reach the sink, the event-bearing occurrences read for the SQL
path and the ids seen (to find deletions). ``Derived`` is what the cycle
reads of one entity's evaluation, whether the compiled SQL or the Python
engine gave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sync.records import ActionOccurrence, FactValue
from sync.rules.model import Entity


class Derived(Protocol):
    """What a cycle reads of an evaluation, from the SQL or from the engine."""

    @property
    def status(self) -> str | None: ...
    @property
    def status_since(self) -> datetime | None: ...
    @property
    def state(self) -> str | None: ...
    @property
    def state_entered_at(self) -> datetime | None: ...
    @property
    def next_change_at(self) -> datetime | None: ...
    @property
    def merge_fields(self) -> Mapping[str, FactValue]: ...
    @property
    def tags(self) -> frozenset[str]: ...


@dataclass
class TypeRun:
    """One entity type within a cycle."""

    entity: Entity
    events_since: datetime
    #: Ids that must reach the sink whatever the diff says (retries, events
    #: of unknown outcome).
    forced: set[str]
    #: Event-bearing occurrences inside the window, by id (SQL path).
    occurrences: dict[str, list[ActionOccurrence]] = field(default_factory=dict)
    seen: set[str] | None = None
    #: In a full pass: how many entities of the type were stored before it,
    #: and how many of those it has seen so far. Equal at the end, none was
    #: deleted, and the stored ids need not be read back.
    stored_before: int | None = None
    stored_seen: int = 0
    #: In a full pass that found the deleted entities itself (the state
    #: store joined, or a merge of digests): the stored entities no longer
    #: listed; and, joined, how many stored entities the SQL's rows carried.
    gone: list[str] | None = None
    stored_returned: int = 0
    #: In a full pass that merged digests: what the digests were computed
    #: from (``SqlEvaluator.digest_basis``), recorded once the pass is over.
    digest_basis: str | None = None
