"""What an entity sends to Mailchimp besides its status: events and merge fields.

Events are named like Mailchimp wants them (2 to 30 of ``A-Z a-z 0-9 _ -``),
with properties taken from facts; a merge field's tag has at most 10 of
``A-Z 0-9 _`` and its value is the status, the action code or a fact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sync.payload import EVENT_PROPERTIES_MAX
from sync.rules.expressions import Type
from sync.rules.loader import MarkedDict, line_of
from sync.rules.model import ACTION_CODE, STATUS, Action, EventSpec, MergeField
from sync.rules.schema_report import RulesReport
from sync.rules.validate import Path_, describe, did_you_mean

MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
EVENT_KEYS = ("name", "properties", "once")


def build_event(
    report: RulesReport,
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
    spec = report.mapping(parent, "event", value, path)
    if spec is None:
        return None
    report.unknown_keys(spec, EVENT_KEYS, path)
    name = spec.get("name")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        report.error(
            spec,
            "name",
            (*path, "name"),
            f"a Mailchimp event name has 2 to 30 letters, digits, _ or -; found {describe(name)}",
        )
        return None
    props_raw = report.mapping(spec, "properties", spec.get("properties"), (*path, "properties"))
    properties: dict[str, str] = {}
    for prop, source in (props_raw or {}).items():
        if not isinstance(source, str) or source not in types:
            report.error(
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
        report.error(
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
            f"expected {allowed}, found {describe(once)}"
            if state_event
            else "'once' applies to status events; an action event is sent once per occurrence"
        )
        report.error(spec, "once", (*path, "once"), message)
    return EventSpec(name, properties, str(once))


def build_merge_fields(
    report: RulesReport,
    raw: MarkedDict,
    types: Mapping[str, Type | None],
    actions: Mapping[str, Action],
    path: Path_,
) -> tuple[MergeField, ...]:
    where: Path_ = (*path, "merge_fields")
    fields_raw = report.mapping(raw, "merge_fields", raw.get("merge_fields"), where)
    sources = [STATUS, ACTION_CODE, *types]
    result: list[MergeField] = []
    for tag, source in (fields_raw or {}).items():
        here = (*where, tag)
        if fields_raw is not None and report.misplaced(fields_raw, tag, "merge_fields", where):
            continue
        if not isinstance(tag, str) or not MERGE_TAG.match(tag):
            report.error(
                fields_raw,
                tag,
                here,
                f"a merge tag has 1 to 10 upper-case letters, digits or _; found {describe(tag)}",
            )
            continue
        if source not in sources:
            report.error(
                fields_raw,
                tag,
                here,
                f"unknown value {source!r}{did_you_mean(source, sources)}; expected status, "
                "action_code or a fact name",
            )
            continue
        if source == ACTION_CODE and not any(a.code for a in actions.values()):
            report.warn(fields_raw, tag, here, "no action has a code, so this field stays empty")
        kind = types.get(source)
        mc_type = {Type.NUMBER: "number", Type.INSTANT: "date"}.get(kind, "text")  # type: ignore[arg-type]
        result.append(MergeField(tag, str(source), mc_type))
    return tuple(result)
