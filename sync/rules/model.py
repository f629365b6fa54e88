"""The typed rule model: what a ``rules.yaml`` means, with no behaviour.

``sync.rules.schema`` builds these from the YAML; ``sync.evaluate.engine`` evaluates them for
one entity; ``sync.sql.compiler`` (later) compiles them for whole populations;
``sync.rules.graph`` draws them. Everything is frozen: a loaded ``Ruleset`` never
changes, so the daemon can swap it atomically when ``rules.yaml`` changes.

Vocabulary:

* a **state** is what an action, a condition or a timed transition *enters*
  (``registered``, ``creat_wait``, ``reminder_24h``);
* a state's **steps** are its ladder: the state itself at +0, then suffixed
  names at later offsets (``registered_H24`` at +24h …);
* a **status** is what is reported and pushed: the name of the current step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from functools import cached_property

from sync.exceptions import Problem
from sync.rules.expressions import Expr, Type

#: Merge-field sources that are not facts.
STATUS = "status"
ACTION_CODE = "action_code"


class Mode(Enum):
    """How an entity's state is chosen."""

    ACTIONS = "actions"  # latest status-giving action (or re-initialisation baseline)
    CONDITIONS = "conditions"  # first status whose `when` holds


@dataclass(frozen=True)
class EventSpec:
    """A Mailchimp event to send: per action occurrence, or on entering a state."""

    name: str
    #: property name → fact (or derived fact) whose value is sent, as text
    properties: Mapping[str, str] = field(default_factory=dict)
    #: for state events: "entity" sends once per entity ever, "entry" once per entry
    once: str = "entity"


@dataclass(frozen=True)
class Action:
    name: str
    order: int  # declaration order; on a tie the later action wins
    enters: str | None = None
    code: str | None = None
    event: EventSpec | None = None


@dataclass(frozen=True)
class Step:
    """One rung of a ladder: reported as ``state + suffix`` from ``after`` on."""

    suffix: str
    after: timedelta


@dataclass(frozen=True)
class Then:
    """After ``after`` in the state, the entity enters ``enter`` afresh."""

    after: timedelta
    enter: str


@dataclass(frozen=True)
class Loop:
    """After ``after`` in the state, go back to step ``back_to`` (an index into
    the steps) and carry on from there, for ever."""

    after: timedelta
    back_to: int


@dataclass(frozen=True)
class State:
    name: str
    steps: tuple[Step, ...]  # steps[0] is the state itself, suffix "" at +0
    then: Then | None = None
    loop: Loop | None = None
    when: Expr | None = None  # condition mode only
    otherwise: bool = False  # condition mode: the catch-all line
    event: EventSpec | None = None
    tags: frozenset[str] = frozenset()
    description: str | None = None

    def status_name(self, step: int) -> str:
        return self.name + self.steps[step].suffix

    @property
    def status_names(self) -> tuple[str, ...]:
        return tuple(self.status_name(i) for i in range(len(self.steps)))

    @property
    def chosen_by_condition(self) -> bool:
        return self.when is not None or self.otherwise


@dataclass(frozen=True)
class Choice:
    """A line of a priority list: enter ``state`` when ``when`` holds
    (``when`` None means ``otherwise``)."""

    state: str
    when: Expr | None


@dataclass(frozen=True)
class Derived:
    name: str
    expr: Expr
    type: Type | None


@dataclass(frozen=True)
class MergeField:
    tag: str
    source: str  # STATUS, ACTION_CODE, or a fact / derived fact name
    type: str  # Mailchimp merge-field type: text, number or date


@dataclass(frozen=True)
class Entity:
    name: str
    facts: Mapping[str, Type]
    derived: tuple[Derived, ...]
    actions: Mapping[str, Action]
    states: Mapping[str, State]  # in declaration order (the priority order in condition mode)
    reinit: tuple[Choice, ...]
    merge_fields: tuple[MergeField, ...]
    since: str | None = None  # instant fact: when condition-chosen states hold from the start
    description: str | None = None

    @cached_property
    def mode(self) -> Mode:
        if any(state.chosen_by_condition for state in self.states.values()):
            return Mode.CONDITIONS
        return Mode.ACTIONS

    @cached_property
    def choices(self) -> tuple[Choice, ...]:
        """The priority list of a condition-mode entity, top to bottom."""
        return tuple(
            Choice(state.name, state.when)
            for state in self.states.values()
            if state.chosen_by_condition
        )

    @cached_property
    def status_names(self) -> tuple[str, ...]:
        """Every status this entity can report, in declaration order."""
        return tuple(name for state in self.states.values() for name in state.status_names)

    @cached_property
    def managed_tags(self) -> frozenset[str]:
        return frozenset(tag for state in self.states.values() for tag in state.tags)

    @cached_property
    def types(self) -> Mapping[str, Type | None]:
        """Type of every name a condition or merge field may read."""
        types: dict[str, Type | None] = dict(self.facts)
        types.update({d.name: d.type for d in self.derived})
        return types


@dataclass(frozen=True)
class Ruleset:
    file: str
    entities: Mapping[str, Entity]
    warnings: tuple[Problem, ...] = ()

    def entity(self, name: str | None = None) -> Entity:
        """The named entity, or the only one when ``name`` is None."""
        if name is None:
            if len(self.entities) != 1:
                raise KeyError(f"{self.file} has several entity types; name one")
            return next(iter(self.entities.values()))
        return self.entities[name]
