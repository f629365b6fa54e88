"""What an entity's rules read: its facts, derived facts and actions.

Facts are typed (``user_id: number``); a derived fact is a value computed
from facts in the condition language (``sync.rules.expressions``); an action
may enter a status, carry a code and send an event (``schema_outputs``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sync.rules.expression_checker import parse_value
from sync.rules.expressions import FACT_TYPES, ExpressionError, Type
from sync.rules.layout import ACTION_KEYS
from sync.rules.loader import MarkedDict
from sync.rules.model import Action, Derived
from sync.rules.schema_outputs import build_event
from sync.rules.schema_report import NAME, RESERVED, RulesReport
from sync.rules.validate import Path_, describe, did_you_mean


def build_facts(report: RulesReport, raw: MarkedDict, path: Path_) -> dict[str, Type]:
    facts_raw = report.mapping(raw, "facts", raw.get("facts"), (*path, "facts"))
    facts: dict[str, Type] = {}
    for name, kind in (facts_raw or {}).items():
        where = (*path, "facts", name)
        if facts_raw is not None and report.misplaced(facts_raw, name, "facts", where[:-1]):
            continue
        if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
            report.error(
                facts_raw,
                name,
                where,
                f"a fact name is a word of letters, digits and _ and not one of "
                f"{', '.join(sorted(RESERVED))}; found {describe(name)}",
            )
            continue
        if not isinstance(kind, str) or kind not in FACT_TYPES:
            report.error(
                facts_raw,
                name,
                where,
                f"expected a fact type ({', '.join(FACT_TYPES)})"
                f"{did_you_mean(kind, FACT_TYPES)}, found {describe(kind)}",
            )
            continue
        facts[name] = FACT_TYPES[kind]
    return facts


def build_derived(
    report: RulesReport, raw: MarkedDict, facts: Mapping[str, Type], path: Path_
) -> tuple[Derived, ...]:
    derived_raw = report.mapping(raw, "derived", raw.get("derived"), (*path, "derived"))
    names: dict[str, Type] = dict(facts)
    result: list[Derived] = []
    for name, text in (derived_raw or {}).items():
        where = (*path, "derived", name)
        if derived_raw is not None and report.misplaced(derived_raw, name, "derived", where[:-1]):
            continue
        if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
            report.error(
                derived_raw, name, where, f"a derived fact name is a word, found {describe(name)}"
            )
            continue
        if name in facts:
            report.error(derived_raw, name, where, "this name is already a fact")
            continue
        if report.text(derived_raw, name, text, where, "an expression") is None:
            continue
        try:
            expr, kind = parse_value(str(text), names)
        except ExpressionError as exc:
            report.error(
                derived_raw, name, where, report.expression_message(text, exc, derived_raw, name)
            )
            continue
        result.append(Derived(name, expr, kind))
        if kind is not None:
            names[name] = kind
    return tuple(result)


def build_actions(
    report: RulesReport,
    raw: MarkedDict,
    state_names: list[str],
    types: Mapping[str, Type | None],
    path: Path_,
) -> dict[str, Action]:
    actions_raw = report.mapping(raw, "actions", raw.get("actions"), (*path, "actions"))
    actions: dict[str, Action] = {}
    for order, (name, body) in enumerate((actions_raw or {}).items()):
        where: Path_ = (*path, "actions", name)
        if actions_raw is not None and report.misplaced(actions_raw, name, "actions", where[:-1]):
            continue
        if not isinstance(name, str) or not NAME.match(name):
            report.error(
                actions_raw, name, where, f"an action name is a word, found {describe(name)}"
            )
            continue
        spec = report.mapping(actions_raw, name, body, where)
        if spec is None:
            continue
        report.unknown_keys(spec, ACTION_KEYS, where, "action", str(name))
        enters = spec.get("enters")
        if enters is not None and enters not in state_names:
            report.error(
                spec,
                "enters",
                (*where, "enters"),
                f"unknown status {enters!r}{did_you_mean(enters, state_names)}",
            )
            enters = None
        code = spec.get("code")
        if code is not None and report.text(spec, "code", code, (*where, "code"), "a code") is None:
            code = None
        event = None
        if "event" in spec:
            event = build_event(
                report, spec, spec["event"], types, (*where, "event"), state_event=False
            )
        if enters is None and code is None and event is None and "enters" not in spec:
            report.warn(
                actions_raw,
                name,
                where,
                "this action enters no status, has no code and no event",
            )
        actions[name] = Action(name, order, enters, code, event)
    return actions
