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

This module walks the document and each entity; one module builds each
section of an entity, writing its problems to a ``RulesReport``
(``schema_report``): facts, derived facts and actions (``schema_facts``),
statuses and their timelines (``schema_statuses``), events and merge fields
(``schema_outputs``), re-initialisation (``schema_reinit``), then the checks
of the whole entity (``schema_checks``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sync.exceptions import Problem, RulesError
from sync.rules.expressions import Type
from sync.rules.layout import ENTITY_KEYS, TOP_KEYS
from sync.rules.loader import MarkedDict, line_of, load_yaml, read_yaml_file
from sync.rules.model import Entity, Ruleset, Step
from sync.rules.schema_checks import check_entity
from sync.rules.schema_facts import build_actions, build_derived, build_facts
from sync.rules.schema_outputs import build_merge_fields
from sync.rules.schema_reinit import build_reinit
from sync.rules.schema_report import NAME, RulesReport
from sync.rules.schema_statuses import build_ladder_steps, build_states, list_state_names
from sync.rules.validate import Path_, describe, did_you_mean


def build_ruleset(data: Any, file: str, problems: Iterable[Problem] = ()) -> Ruleset:
    """Build the model from loaded YAML, raising ``RulesError`` with every problem."""
    report = RulesReport(file)
    report.problems.extend(problems)
    ruleset = build_document(report, data)
    if ruleset is None or report.failed:
        raise RulesError(sorted(report.problems, key=lambda p: (p.line or 0, p.warning)))
    return ruleset


def load_rules(path: str | Path) -> Ruleset:
    """Read and validate a rule file."""
    document = read_yaml_file(path)
    return build_ruleset(document.data, document.file, document.problems)


def parse_rules(text: str, file: str = "rules.yaml") -> Ruleset:
    """Validate rules given as text (tests, the daemon's reload)."""
    document = load_yaml(text, file)
    return build_ruleset(document.data, document.file, document.problems)


def build_document(report: RulesReport, data: Any) -> Ruleset | None:
    if not isinstance(data, MarkedDict):
        report.problems.append(
            Problem(
                report.file,
                line_of(data) or 1,
                (),
                f"expected `entities:` at the top of the file, found {describe(data)}",
            )
        )
        return None
    entity_names = list(data.get("entities") or ()) if isinstance(data, MarkedDict) else []
    owner = str(entity_names[0]) if len(entity_names) == 1 else None
    report.unknown_keys(data, TOP_KEYS, (), "top", owner)
    version = data.get("version", 1)
    if version != 1:
        report.error(
            data, "version", ("version",), f"expected version 1, found {describe(version)}"
        )
    ladders = build_ladders(report, data)
    entities_raw = report.mapping(data, "entities", data.get("entities"), ("entities",))
    if entities_raw is not None and not entities_raw:
        report.error(data, "entities", ("entities",), "declare at least one entity type")
    entities: dict[str, Entity] = {}
    for name, body in (entities_raw or MarkedDict()).items():
        if isinstance(name, str) and name in ENTITY_KEYS:
            previous = [n for n in entities_raw or () if n not in ENTITY_KEYS]
            under = f"under `{previous[0]}`" if previous else "under its entity"
            report.error(
                entities_raw,
                name,
                ("entities", name),
                f"`{name}` is indented like an entity type; indent it {under}, "
                "like the other sections",
            )
            continue
        entity = build_entity(report, entities_raw or MarkedDict(), name, body, ladders)
        if entity is not None:
            entities[name] = entity
    # A status indented under another one is reported once, where it is written;
    # "unknown status" wherever it is used would only repeat that.
    report.problems = [
        p
        for p in report.problems
        if not any(p.message.startswith(f"unknown status {n!r}") for n in report.nested)
    ]
    if report.failed:
        return None
    return Ruleset(report.file, entities, tuple(p for p in report.problems if p.warning))


def build_ladders(report: RulesReport, data: MarkedDict) -> dict[str, tuple[Step, ...]]:
    raw = report.mapping(data, "ladders", data.get("ladders"), ("ladders",))
    ladders: dict[str, tuple[Step, ...]] = {}
    for name, body in (raw or {}).items():
        steps = build_ladder_steps(report, raw, name, body, ("ladders", name))
        if steps is not None:
            ladders[name] = steps
        else:
            report.broken_ladders.add(str(name))
    return ladders


def build_entity(
    report: RulesReport,
    parent: MarkedDict,
    name: Any,
    body: Any,
    ladders: Mapping[str, tuple[Step, ...]],
) -> Entity | None:
    path: Path_ = ("entities", name)
    if not isinstance(name, str) or not NAME.match(name):
        report.error(parent, name, path, "an entity type name is a word like user or match")
    raw = report.mapping(parent, name, body, path)
    if raw is None:
        return None
    report.unknown_keys(raw, ENTITY_KEYS, path, "entity", str(name))
    facts = build_facts(report, raw, path)
    derived = build_derived(report, raw, facts, path)
    types: dict[str, Type | None] = {**facts, **{d.name: d.type for d in derived}}
    typed_names = {k: v for k, v in types.items() if v is not None}
    state_names = list_state_names(report, raw, path)
    actions = build_actions(report, raw, state_names, types, path)
    states = build_states(report, raw, ladders, state_names, typed_names, types, path)
    condition_mode = any(s.chosen_by_condition for s in states.values())
    reinit = build_reinit(report, raw, states, typed_names, condition_mode, path)
    merge_fields = build_merge_fields(report, raw, types, actions, path)
    since = raw.get("since")
    if since is not None and (not isinstance(since, str) or types.get(since) is not Type.INSTANT):
        report.error(
            raw,
            "since",
            (*path, "since"),
            f"expected the name of an instant fact{did_you_mean(since, facts)}, "
            f"found {describe(since)}",
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
        check_entity(report, raw, entity, path)
    return entity
