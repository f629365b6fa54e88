"""From the YAML a marketer wrote to a ``Ruleset``, or to every reason it is wrong.

``load_rules(path)`` reads the file with ``sync.rules.loader`` (lines kept), walks
it building the typed model of ``sync.rules.model``, and collects every problem on
the way instead of stopping at the first: a marketer fixing a file wants the
whole list. Each problem names file, line and path, says what was expected
and what was found, and suggests the nearest valid name for a typo.

Checks beyond shapes and types: names that must exist (statuses, facts,
ladders, suffixes), zero-delay cycles of ``then`` transitions, ladder steps
that could never be reached, merge tags (≤ 10 of ``A-Z 0-9 _``), event names
(2 to 30 of ``A-Z a-z 0-9 _ -``), and a warning for statuses nothing can reach.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sync.exceptions import Problem, RulesError
from sync.payload import EVENT_PROPERTIES_MAX
from sync.rules.durations import DurationError, format_duration, parse_duration
from sync.rules.expressions import FACT_TYPES, ExpressionError, Type, parse_condition, parse_value
from sync.rules.layout import (
    ACTION_KEYS,
    ENTITY_KEYS,
    LOOP_KEYS,
    STATE_KEYS,
    THEN_KEYS,
    TOP_KEYS,
    misplaced_key,
    misplaced_name,
)
from sync.rules.loader import MarkedDict, MarkedList, line_of, load_yaml, read_yaml_file
from sync.rules.model import (
    ACTION_CODE,
    STATUS,
    Action,
    Choice,
    Derived,
    Entity,
    EventSpec,
    Loop,
    MergeField,
    Mode,
    Ruleset,
    State,
    Step,
    Then,
)

MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATUS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SUFFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
RESERVED = {"now", STATUS, ACTION_CODE, "otherwise", "and", "or", "not", "is", "in", "set"}
RESERVED |= {"null", "true", "false"}

EVENT_KEYS = ("name", "properties", "once")
OTHERWISE = "otherwise"

Path_ = tuple[str | int, ...]
_EMPTY = "`{key}` has nothing under it: write {inner} on the lines below it, indented further"


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """`` (did you mean 'money_ok'?)`` or nothing."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, MarkedDict | dict):
        return "a group of `name: value` lines"
    if isinstance(value, MarkedList | list):
        return "a list"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    return repr(value)


class _Builder:
    """Walks one document; ``problems`` fills up as it goes."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        #: Ladders declared but invalid: already reported, not "unknown" where used.
        self.broken_ladders: set[str] = set()
        #: Names found indented inside a status, as if they were statuses of their own.
        self.nested: set[str] = set()

    # -- reporting

    def error(self, container: Any, key: Any, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(container, key), path, message))

    def warn(self, container: Any, key: Any, path: Path_, message: str) -> None:
        self.problems.append(
            Problem(self.file, line_of(container, key), path, message, warning=True)
        )

    def mapping(self, parent: Any, key: Any, value: Any, path: Path_) -> MarkedDict | None:
        if value is None:
            return MarkedDict()
        if not isinstance(value, MarkedDict):
            self.error(parent, key, path, f"expected `name: value` lines, found {_kind(value)}")
            return None
        return value

    def unknown_keys(
        self,
        mapping: MarkedDict,
        allowed: tuple[str, ...],
        path: Path_,
        level: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Report keys not in ``allowed``; at a known ``level`` of the file, a key that
        belongs to another level is reported as the indentation slip it is."""
        for key in mapping:
            if key in allowed:
                continue
            slip = None
            if level is not None:
                slip = misplaced_key(key, level, owner, then_line=mapping.key_lines.get("then"))
                if slip and level == "status" and "of its own" in slip:
                    self.nested.add(str(key))
            self.error(
                mapping,
                key,
                (*path, key),
                slip
                or f"unknown key{did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}",
            )

    def misplaced(self, group_raw: MarkedDict, name: Any, group: str, path: Path_) -> bool:
        """Report ``name`` of entity section ``group`` when it is an indentation slip."""
        if misplaced_name(name, group, None) is None:
            return False
        names = list(group_raw)
        before = [n for n in names[: names.index(name)] if misplaced_name(n, group, None) is None]
        previous = str(before[-1]) if before else None
        self.error(group_raw, name, (*path, name), str(misplaced_name(name, group, previous)))
        return True

    def duration(self, parent: Any, key: Any, value: Any, path: Path_) -> timedelta | None:
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            return timedelta(0)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # parse_duration says what unit is missing
        if not isinstance(value, str):
            self.error(
                parent, key, path, f"expected a duration like 24h or 7d, found {_kind(value)}"
            )
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.error(parent, key, path, str(exc))
            return None

    def text(self, parent: Any, key: Any, value: Any, path: Path_, what: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.error(parent, key, path, f"expected {what}, found {_kind(value)}")
            return None
        return value

    # -- document

    def ruleset(self, data: Any) -> Ruleset | None:
        if not isinstance(data, MarkedDict):
            self.problems.append(
                Problem(
                    self.file,
                    line_of(data) or 1,
                    (),
                    f"expected `entities:` at the top of the file, found {_kind(data)}",
                )
            )
            return None
        entity_names = list(data.get("entities") or ()) if isinstance(data, MarkedDict) else []
        owner = str(entity_names[0]) if len(entity_names) == 1 else None
        self.unknown_keys(data, TOP_KEYS, (), "top", owner)
        version = data.get("version", 1)
        if version != 1:
            self.error(data, "version", ("version",), f"expected version 1, found {_kind(version)}")
        ladders = self.ladders(data)
        entities_raw = self.mapping(data, "entities", data.get("entities"), ("entities",))
        if entities_raw is not None and not entities_raw:
            self.error(data, "entities", ("entities",), "declare at least one entity type")
        entities: dict[str, Entity] = {}
        for name, body in (entities_raw or MarkedDict()).items():
            if isinstance(name, str) and name in ENTITY_KEYS:
                previous = [n for n in entities_raw or () if n not in ENTITY_KEYS]
                under = f"under `{previous[0]}`" if previous else "under its entity"
                self.error(
                    entities_raw,
                    name,
                    ("entities", name),
                    f"`{name}` is indented like an entity type; indent it {under}, "
                    "like the other sections",
                )
                continue
            entity = self.entity(entities_raw or MarkedDict(), name, body, ladders)
            if entity is not None:
                entities[name] = entity
        # A status indented under another one is reported once, where it is written;
        # "unknown status" wherever it is used would only repeat that.
        self.problems = [
            p
            for p in self.problems
            if not any(p.message.startswith(f"unknown status {n!r}") for n in self.nested)
        ]
        errors = [p for p in self.problems if not p.warning]
        if errors:
            return None
        return Ruleset(self.file, entities, tuple(p for p in self.problems if p.warning))

    def ladders(self, data: MarkedDict) -> dict[str, tuple[Step, ...]]:
        raw = self.mapping(data, "ladders", data.get("ladders"), ("ladders",))
        ladders: dict[str, tuple[Step, ...]] = {}
        for name, body in (raw or {}).items():
            steps = self.ladder_steps(raw, name, body, ("ladders", name))
            if steps is not None:
                ladders[name] = steps
            else:
                self.broken_ladders.add(str(name))
        return ladders

    def ladder_steps(
        self, parent: Any, key: Any, body: Any, path: Path_
    ) -> tuple[Step, ...] | None:
        steps_raw = self.mapping(parent, key, body, path)
        if steps_raw is None:
            return None
        steps = [Step("", timedelta(0))]
        ok = True
        for suffix, delay_raw in steps_raw.items():
            if not isinstance(suffix, str) or not SUFFIX.match(suffix):
                self.error(
                    steps_raw,
                    suffix,
                    (*path, suffix),
                    f"a ladder step is a suffix like _H24, found {_kind(suffix)}",
                )
                ok = False
                continue
            delay = self.duration(steps_raw, suffix, delay_raw, (*path, suffix))
            if delay is None:
                ok = False
                continue
            if delay <= steps[-1].after:
                self.error(
                    steps_raw,
                    suffix,
                    (*path, suffix),
                    f"steps must come in time order, each later than the one before: "
                    f"{format_duration(delay)} is not after {format_duration(steps[-1].after)}",
                )
                ok = False
                continue
            steps.append(Step(suffix, delay))
        return tuple(steps) if ok else None

    # -- entity

    def entity(
        self, parent: MarkedDict, name: Any, body: Any, ladders: Mapping[str, tuple[Step, ...]]
    ) -> Entity | None:
        path: Path_ = ("entities", name)
        if not isinstance(name, str) or not NAME.match(name):
            self.error(parent, name, path, "an entity type name is a word like user or match")
        raw = self.mapping(parent, name, body, path)
        if raw is None:
            return None
        self.unknown_keys(raw, ENTITY_KEYS, path, "entity", str(name))
        facts = self.facts(raw, path)
        derived = self.derived(raw, facts, path)
        types: dict[str, Type | None] = {**facts, **{d.name: d.type for d in derived}}
        typed_names = {k: v for k, v in types.items() if v is not None}
        state_names = self.state_names(raw, path)
        actions = self.actions(raw, state_names, types, path)
        states = self.states(raw, ladders, state_names, typed_names, types, path)
        condition_mode = any(s.chosen_by_condition for s in states.values())
        reinit = self.reinit(raw, states, typed_names, condition_mode, path)
        merge_fields = self.merge_fields(raw, types, actions, path)
        since = raw.get("since")
        if since is not None and (
            not isinstance(since, str) or types.get(since) is not Type.INSTANT
        ):
            self.error(
                raw,
                "since",
                (*path, "since"),
                f"expected the name of an instant fact{did_you_mean(since, facts)}, "
                f"found {_kind(since)}",
            )
        description = raw.get("description")
        entity = Entity(
            name=str(name),
            facts=facts,
            derived=derived,
            actions=actions,
            states=states,
            reinit=reinit,
            merge_fields=merge_fields,
            since=since if isinstance(since, str) else None,
            description=description if isinstance(description, str) else None,
        )
        if state_names and len(states) == len(state_names):
            self.check_entity(raw, entity, path)
        return entity

    def facts(self, raw: MarkedDict, path: Path_) -> dict[str, Type]:
        facts_raw = self.mapping(raw, "facts", raw.get("facts"), (*path, "facts"))
        facts: dict[str, Type] = {}
        for name, kind in (facts_raw or {}).items():
            where = (*path, "facts", name)
            if facts_raw is not None and self.misplaced(facts_raw, name, "facts", where[:-1]):
                continue
            if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
                self.error(
                    facts_raw,
                    name,
                    where,
                    f"a fact name is a word of letters, digits and _ and not one of "
                    f"{', '.join(sorted(RESERVED))}; found {_kind(name)}",
                )
                continue
            if not isinstance(kind, str) or kind not in FACT_TYPES:
                self.error(
                    facts_raw,
                    name,
                    where,
                    f"expected a fact type ({', '.join(FACT_TYPES)})"
                    f"{did_you_mean(kind, FACT_TYPES)}, found {_kind(kind)}",
                )
                continue
            facts[name] = FACT_TYPES[kind]
        return facts

    def derived(
        self, raw: MarkedDict, facts: Mapping[str, Type], path: Path_
    ) -> tuple[Derived, ...]:
        derived_raw = self.mapping(raw, "derived", raw.get("derived"), (*path, "derived"))
        names: dict[str, Type] = dict(facts)
        result: list[Derived] = []
        for name, text in (derived_raw or {}).items():
            where = (*path, "derived", name)
            if derived_raw is not None and self.misplaced(derived_raw, name, "derived", where[:-1]):
                continue
            if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
                self.error(
                    derived_raw, name, where, f"a derived fact name is a word, found {_kind(name)}"
                )
                continue
            if name in facts:
                self.error(derived_raw, name, where, "this name is already a fact")
                continue
            if self.text(derived_raw, name, text, where, "an expression") is None:
                continue
            try:
                expr, kind = parse_value(str(text), names)
            except ExpressionError as exc:
                self.error(
                    derived_raw, name, where, self.expression_message(text, exc, derived_raw, name)
                )
                continue
            result.append(Derived(name, expr, kind))
            if kind is not None:
                names[name] = kind
        return tuple(result)

    @staticmethod
    def expression_message(
        text: Any, exc: ExpressionError, container: Any = None, key: Any = None
    ) -> str:
        column = f" at column {exc.column}" if exc.column else ""
        message = f"in {str(text)!r}{column}: {exc.message}"
        spans = getattr(container, "value_spans", {})
        if key in spans:
            # YAML joins lines indented further than their key into one value: the
            # usual cause of a condition that "swallowed" the setting below it.
            first, last = spans[key]
            lines = f"line {last}" if last == first + 1 else f"lines {first + 1} to {last}"
            message += (
                f"; {lines} continue{'s' if last == first + 1 else ''} this condition "
                f"because {'it is' if last == first + 1 else 'they are'} indented further "
                f"than `{key}`: a setting of its own must line up with `{key}` and be "
                "written `name: value`"
            )
        return message

    def state_names(self, raw: MarkedDict, path: Path_) -> list[str]:
        statuses = raw.get("statuses")
        if not isinstance(statuses, MarkedDict) or not statuses:
            self.error(
                raw,
                "statuses",
                (*path, "statuses"),
                f"expected the statuses, one `name:` per line, found {_kind(statuses)}",
            )
            return []
        return [str(name) for name in statuses]

    def actions(
        self,
        raw: MarkedDict,
        state_names: list[str],
        types: Mapping[str, Type | None],
        path: Path_,
    ) -> dict[str, Action]:
        actions_raw = self.mapping(raw, "actions", raw.get("actions"), (*path, "actions"))
        actions: dict[str, Action] = {}
        for order, (name, body) in enumerate((actions_raw or {}).items()):
            where: Path_ = (*path, "actions", name)
            if actions_raw is not None and self.misplaced(actions_raw, name, "actions", where[:-1]):
                continue
            if not isinstance(name, str) or not NAME.match(name):
                self.error(
                    actions_raw, name, where, f"an action name is a word, found {_kind(name)}"
                )
                continue
            spec = self.mapping(actions_raw, name, body, where)
            if spec is None:
                continue
            self.unknown_keys(spec, ACTION_KEYS, where, "action", str(name))
            enters = spec.get("enters")
            if enters is not None and enters not in state_names:
                self.error(
                    spec,
                    "enters",
                    (*where, "enters"),
                    f"unknown status {enters!r}{did_you_mean(enters, state_names)}",
                )
                enters = None
            code = spec.get("code")
            if (
                code is not None
                and self.text(spec, "code", code, (*where, "code"), "a code") is None
            ):
                code = None
            event = None
            if "event" in spec:
                event = self.event(spec, spec["event"], types, (*where, "event"), state_event=False)
            if enters is None and code is None and event is None and "enters" not in spec:
                self.warn(
                    actions_raw,
                    name,
                    where,
                    "this action enters no status, has no code and no event",
                )
            actions[name] = Action(name, order, enters, code, event)
        return actions

    def event(
        self,
        parent: MarkedDict,
        value: Any,
        types: Mapping[str, Type | None],
        path: Path_,
        *,
        state_event: bool,
    ) -> EventSpec | None:
        if isinstance(value, str):
            value = MarkedDict({"name": value})
            value.line = line_of(parent, "event")
        spec = self.mapping(parent, "event", value, path)
        if spec is None:
            return None
        self.unknown_keys(spec, EVENT_KEYS, path)
        name = spec.get("name")
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            self.error(
                spec,
                "name",
                (*path, "name"),
                f"a Mailchimp event name has 2 to 30 letters, digits, _ or -; found {_kind(name)}",
            )
            return None
        props_raw = self.mapping(spec, "properties", spec.get("properties"), (*path, "properties"))
        properties: dict[str, str] = {}
        for prop, source in (props_raw or {}).items():
            if not isinstance(source, str) or source not in types:
                self.error(
                    props_raw,
                    prop,
                    (*path, "properties", prop),
                    f"unknown fact {source!r}{did_you_mean(source, types)}",
                )
                continue
            properties[str(prop)] = str(source)
        # Only the names are certain: a value may be empty (a NULL fact is not
        # sent), so rules are refused only when the names alone are too long.
        names = sum(len(str(prop)) for prop in props_raw or {})
        if names > EVENT_PROPERTIES_MAX:
            self.error(
                spec,
                "properties",
                (*path, "properties"),
                f"the property names alone are {names} characters; Mailchimp takes about "
                f"{EVENT_PROPERTIES_MAX} characters of names and values together "
                "(longer values are shortened when sent, names cannot be)",
            )
        once = spec.get("once", "entity")
        if once not in ("entity", "entry") or ("once" in spec and not state_event):
            allowed = "once per entity or once per entry: 'entity' or 'entry'"
            message = (
                f"expected {allowed}, found {_kind(once)}"
                if state_event
                else "'once' applies to status events; an action event is sent once per occurrence"
            )
            self.error(spec, "once", (*path, "once"), message)
        return EventSpec(name, properties, str(once))

    def states(
        self,
        raw: MarkedDict,
        ladders: Mapping[str, tuple[Step, ...]],
        state_names: list[str],
        typed_names: Mapping[str, Type],
        types: Mapping[str, Type | None],
        path: Path_,
    ) -> dict[str, State]:
        statuses = raw.get("statuses")
        if not isinstance(statuses, MarkedDict):
            return {}
        states: dict[str, State] = {}
        for name, body in statuses.items():
            where: Path_ = (*path, "statuses", name)
            if self.misplaced(statuses, name, "statuses", where[:-1]):
                continue
            if not isinstance(name, str) or not STATUS_NAME.match(name):
                self.error(
                    statuses,
                    name,
                    where,
                    "a status name starts with a letter and has letters, digits, _, . or -; "
                    f"found {_kind(name)}",
                )
                continue
            state = self.state(
                statuses, name, body, ladders, state_names, typed_names, types, where
            )
            if state is not None:
                states[name] = state
        return states

    def state(
        self,
        statuses: MarkedDict,
        name: str,
        body: Any,
        ladders: Mapping[str, tuple[Step, ...]],
        state_names: list[str],
        typed_names: Mapping[str, Type],
        types: Mapping[str, Type | None],
        where: Path_,
    ) -> State | None:
        one_line = isinstance(body, str)
        if one_line:  # shorthand: `status: condition`
            body_map = MarkedDict({"when": body})
            body_map.line = line_of(statuses, name)
            body_map.key_lines["when"] = line_of(statuses, name) or 0
            body = body_map
        spec = self.mapping(statuses, name, body, where)
        if spec is None:
            return None
        self.unknown_keys(spec, STATE_KEYS, where, "status", name)
        ok = True
        when = None
        otherwise = False
        if "when" in spec:
            text = spec["when"]
            if text == OTHERWISE or text is True:
                otherwise = True
            elif self.text(spec, "when", text, (*where, "when"), "a condition") is None:
                ok = False
            else:
                try:
                    when = parse_condition(str(text), typed_names)
                except ExpressionError as exc:
                    owner, key = (spec, "when") if spec.value_spans else (statuses, name)
                    message = self.expression_message(text, exc, owner, key)
                    if one_line and exc.message.startswith("unexpected '") and text.count(" ") > 2:
                        # The one-line form: `name: condition`. A note written as
                        # `Note: some text` lands here, so say how it was read.
                        message += (
                            f"; `{name}: {text}` on one line means the status `{name}` "
                            f"is entered when `{text}` holds (start the line with # for a note)"
                        )
                    self.error(spec, "when", (*where, "when"), message)
                    ok = False
        steps: tuple[Step, ...] | None = (Step("", timedelta(0)),)
        ladder = spec.get("ladder")
        if isinstance(ladder, str):
            steps = ladders.get(ladder)
            if steps is None and ladder not in self.broken_ladders:
                self.error(
                    spec,
                    "ladder",
                    (*where, "ladder"),
                    f"unknown ladder {ladder!r}{did_you_mean(ladder, ladders)}; "
                    f"declared ladders: {', '.join(ladders) or 'none'}",
                )
        elif ladder is not None:
            steps = self.ladder_steps(spec, "ladder", ladder, (*where, "ladder"))
        if steps is None:
            return None
        then = self.then(spec, steps, state_names, where) if "then" in spec else None
        loop = self.loop(spec, name, steps, where) if "loop" in spec else None
        if then is not None and loop is not None:
            self.error(
                spec, "loop", (*where, "loop"), "a status has either 'then' or 'loop', not both"
            )
            ok = False
        event = None
        if "event" in spec:
            event = self.event(spec, spec["event"], types, (*where, "event"), state_event=True)
        tags = spec.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            self.error(
                spec, "tags", (*where, "tags"), f"expected a list of tag names, found {_kind(tags)}"
            )
            tags = []
        description = spec.get("description")
        if not ok:
            return None
        return State(
            name=name,
            steps=steps,
            then=then,
            loop=loop,
            when=when,
            otherwise=otherwise,
            event=event,
            tags=frozenset(tags),
            description=description if isinstance(description, str) else None,
        )

    def then(
        self, spec: MarkedDict, steps: tuple[Step, ...], state_names: list[str], where: Path_
    ) -> Then | None:
        path = (*where, "then")
        if spec["then"] is None:
            self.error(spec, "then", path, _EMPTY.format(key="then", inner="`after:` and `enter:`"))
            return None
        raw = self.mapping(spec, "then", spec["then"], path)
        if raw is None:
            return None
        self.unknown_keys(raw, THEN_KEYS, path, "then", str(where[-1]))
        after = self.duration(raw, "after", raw.get("after"), (*path, "after"))
        enter = raw.get("enter")
        if enter not in state_names:
            self.error(
                raw,
                "enter",
                (*path, "enter"),
                f"unknown status {enter!r}{did_you_mean(enter, state_names)}",
            )
            return None
        if after is None:
            return None
        if len(steps) > 1 and after <= steps[-1].after:
            self.error(
                raw,
                "after",
                (*path, "after"),
                f"'then' must come after the last ladder step ({steps[-1].suffix} at "
                f"{format_duration(steps[-1].after)}), found {format_duration(after)}",
            )
            return None
        return Then(after, str(enter))

    def loop(
        self, spec: MarkedDict, name: str, steps: tuple[Step, ...], where: Path_
    ) -> Loop | None:
        path = (*where, "loop")
        if spec["loop"] is None:
            self.error(
                spec, "loop", path, _EMPTY.format(key="loop", inner="`after:` and `back_to:`")
            )
            return None
        raw = self.mapping(spec, "loop", spec["loop"], path)
        if raw is None:
            return None
        self.unknown_keys(raw, LOOP_KEYS, path, "loop", name)
        after = self.duration(raw, "after", raw.get("after"), (*path, "after"))
        back_to = raw.get("back_to")
        suffixes = [s.suffix for s in steps]
        names = [name + s for s in suffixes]
        if back_to in names:
            index = names.index(back_to)
        elif back_to in suffixes and back_to != "":
            index = suffixes.index(back_to)
        else:
            self.error(
                raw,
                "back_to",
                (*path, "back_to"),
                f"expected a step of this status's ladder ({', '.join(names)})"
                f"{did_you_mean(back_to, names + suffixes[1:])}, found {_kind(back_to)}",
            )
            return None
        if after is None:
            return None
        if after <= steps[-1].after:
            self.error(
                raw,
                "after",
                (*path, "after"),
                f"'loop' must come after the last ladder step ({name}{steps[-1].suffix} at "
                f"{format_duration(steps[-1].after)}), found {format_duration(after)}",
            )
            return None
        if index == len(steps) - 1:
            self.error(
                raw,
                "back_to",
                (*path, "back_to"),
                "going back to the last step changes nothing; go back to an earlier step",
            )
            return None
        return Loop(after, index)

    def reinit(
        self,
        raw: MarkedDict,
        states: Mapping[str, State],
        typed_names: Mapping[str, Type],
        condition_mode: bool,
        path: Path_,
    ) -> tuple[Choice, ...]:
        if "reinit" not in raw:
            return ()
        where: Path_ = (*path, "reinit")
        lines = raw["reinit"]
        if condition_mode:
            self.error(
                raw,
                "reinit",
                where,
                "re-initialisation applies to statuses entered by actions; these statuses "
                "are chosen by their 'when' conditions already",
            )
            return ()
        if not isinstance(lines, MarkedList):
            self.error(
                raw,
                "reinit",
                where,
                f"expected a list of '- status: condition' lines, found {_kind(lines)}",
            )
            return ()
        choices: list[Choice] = []
        seen_otherwise = False
        for index, line in enumerate(lines):
            here = (*where, index + 1)
            if not isinstance(line, MarkedDict) or len(line) != 1:
                self.error(
                    lines,
                    index,
                    here,
                    f"expected one '- status: condition' line, found {_kind(line)}",
                )
                continue
            ((status, text),) = line.items()
            if status not in states:
                if status in (raw.get("statuses") or ()):
                    continue  # declared, but invalid: reported where it is declared
                self.error(
                    line, status, here, f"unknown status {status!r}{did_you_mean(status, states)}"
                )
                continue
            if seen_otherwise:
                self.error(
                    line, status, here, "never used: an 'otherwise' line above always matches"
                )
                continue
            if text == OTHERWISE:
                seen_otherwise = True
                choices.append(Choice(status, None))
                continue
            if self.text(line, status, text, here, "a condition or 'otherwise'") is None:
                continue
            try:
                choices.append(Choice(status, parse_condition(str(text), typed_names)))
            except ExpressionError as exc:
                self.error(line, status, here, self.expression_message(text, exc, line, status))
        return tuple(choices)

    def merge_fields(
        self,
        raw: MarkedDict,
        types: Mapping[str, Type | None],
        actions: Mapping[str, Action],
        path: Path_,
    ) -> tuple[MergeField, ...]:
        where: Path_ = (*path, "merge_fields")
        fields_raw = self.mapping(raw, "merge_fields", raw.get("merge_fields"), where)
        sources = [STATUS, ACTION_CODE, *types]
        result: list[MergeField] = []
        for tag, source in (fields_raw or {}).items():
            here = (*where, tag)
            if fields_raw is not None and self.misplaced(fields_raw, tag, "merge_fields", where):
                continue
            if not isinstance(tag, str) or not MERGE_TAG.match(tag):
                self.error(
                    fields_raw,
                    tag,
                    here,
                    f"a merge tag has 1 to 10 upper-case letters, digits or _; found {_kind(tag)}",
                )
                continue
            if source not in sources:
                self.error(
                    fields_raw,
                    tag,
                    here,
                    f"unknown value {source!r}{did_you_mean(source, sources)}; expected status, "
                    "action_code or a fact name",
                )
                continue
            if source == ACTION_CODE and not any(a.code for a in actions.values()):
                self.warn(fields_raw, tag, here, "no action has a code, so this field stays empty")
            kind = types.get(source)
            mc_type = {Type.NUMBER: "number", Type.INSTANT: "date"}.get(kind, "text")  # type: ignore[arg-type]
            result.append(MergeField(tag, str(source), mc_type))
        return tuple(result)

    # -- whole-entity checks

    def check_entity(self, raw: MarkedDict, entity: Entity, path: Path_) -> None:
        statuses = raw["statuses"]
        condition_mode = entity.mode is Mode.CONDITIONS
        self.check_status_names(statuses, entity, path)
        if condition_mode:
            for action in entity.actions.values():
                if action.enters is not None:
                    actions_raw = raw["actions"]
                    self.error(
                        actions_raw[action.name],
                        "enters",
                        (*path, "actions", action.name, "enters"),
                        "actions cannot enter statuses here: this entity's statuses are chosen "
                        "by their 'when' conditions",
                    )
            seen_otherwise: str | None = None
            for state in entity.states.values():
                if state.chosen_by_condition and seen_otherwise is not None:
                    self.error(
                        statuses,
                        state.name,
                        (*path, "statuses", state.name, "when"),
                        f"never chosen: {seen_otherwise!r} above it says 'otherwise'",
                    )
                if state.otherwise:
                    seen_otherwise = state.name
        self.check_cycles(statuses, entity, path)
        self.check_reachable(statuses, entity, path)

    def check_status_names(self, statuses: MarkedDict, entity: Entity, path: Path_) -> None:
        owner: dict[str, str] = {}
        for state in entity.states.values():
            for status in state.status_names:
                if status in owner and owner[status] != state.name:
                    self.error(
                        statuses,
                        state.name,
                        (*path, "statuses", state.name),
                        f"status {status!r} is also a step of {owner[status]!r}; "
                        "every reported status must have one meaning",
                    )
                owner[status] = state.name

    def check_cycles(self, statuses: MarkedDict, entity: Entity, path: Path_) -> None:
        """Reject ``then`` chains that come back to where they started with no delay:
        the entity would never settle in any of those statuses."""
        reported: set[frozenset[str]] = set()
        for start in entity.states.values():
            chain = [start.name]
            total = timedelta(0)
            current = start
            while current.then is not None:
                total += current.then.after
                nxt = current.then.enter
                if nxt in chain:
                    cycle = chain[chain.index(nxt) :]
                    members = frozenset(cycle)
                    cycle_delay = sum(
                        (entity.states[n].then.after for n in cycle),  # type: ignore[union-attr]
                        timedelta(0),
                    )
                    if cycle_delay == timedelta(0) and members not in reported:
                        reported.add(members)
                        self.error(
                            statuses,
                            cycle[0],
                            (*path, "statuses", cycle[0], "then"),
                            f"statuses {' → '.join([*cycle, nxt])} form a cycle with no delay: "
                            "the entity would never settle in any of them",
                        )
                    break
                chain.append(nxt)
                current = entity.states[nxt]

    def check_reachable(self, statuses: MarkedDict, entity: Entity, path: Path_) -> None:
        entered = {a.enters for a in entity.actions.values() if a.enters}
        entered |= {c.state for c in entity.reinit}
        entered |= {s.then.enter for s in entity.states.values() if s.then}
        entered |= {s.name for s in entity.states.values() if s.chosen_by_condition}
        for state in entity.states.values():
            if state.name not in entered:
                self.warn(
                    statuses,
                    state.name,
                    (*path, "statuses", state.name),
                    "no action, condition, re-initialisation or 'then' ever enters this status",
                )


def build_ruleset(data: Any, file: str, problems: Iterable[Problem] = ()) -> Ruleset:
    """Build the model from loaded YAML, raising ``RulesError`` with every problem."""
    builder = _Builder(file)
    builder.problems.extend(problems)
    ruleset = builder.ruleset(data)
    if ruleset is None or any(not p.warning for p in builder.problems):
        raise RulesError(sorted(builder.problems, key=lambda p: (p.line or 0, p.warning)))
    return ruleset


def load_rules(path: str | Path) -> Ruleset:
    """Read and validate a rule file."""
    document = read_yaml_file(path)
    return build_ruleset(document.data, document.file, document.problems)


def parse_rules(text: str, file: str = "rules.yaml") -> Ruleset:
    """Validate rules given as text (tests, the daemon's reload)."""
    document = load_yaml(text, file)
    return build_ruleset(document.data, document.file, document.problems)
