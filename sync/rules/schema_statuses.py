"""An entity's statuses and their timelines: conditions, ladders, ``then`` and ``loop``.

A status is entered by an action or chosen by its ``when`` condition; once
entered it may climb a ladder of suffixed steps (``_H24`` after 24h), move on
to another status (``then``) or go back to an earlier step (``loop``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sync.rules.durations import format_duration
from sync.rules.expression_checker import parse_condition
from sync.rules.expressions import ExpressionError, Type
from sync.rules.layout import LOOP_KEYS, STATE_KEYS, THEN_KEYS
from sync.rules.loader import MarkedDict, line_of
from sync.rules.model import Loop, State, Step, Then
from sync.rules.schema_outputs import build_event
from sync.rules.schema_report import OTHERWISE, RulesReport
from sync.rules.validate import Path_, describe, did_you_mean

STATUS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SUFFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
_EMPTY = "`{key}` has nothing under it: write {inner} on the lines below it, indented further"


def list_state_names(report: RulesReport, raw: MarkedDict, path: Path_) -> list[str]:
    statuses = raw.get("statuses")
    if not isinstance(statuses, MarkedDict) or not statuses:
        report.error(
            raw,
            "statuses",
            (*path, "statuses"),
            f"expected the statuses, one `name:` per line, found {describe(statuses)}",
        )
        return []
    return [str(name) for name in statuses]


def build_states(
    report: RulesReport,
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
        if report.misplaced(statuses, name, "statuses", where[:-1]):
            continue
        if not isinstance(name, str) or not STATUS_NAME.match(name):
            report.error(
                statuses,
                name,
                where,
                "a status name starts with a letter and has letters, digits, _, . or -; "
                f"found {describe(name)}",
            )
            continue
        state = build_state(
            report, statuses, name, body, ladders, state_names, typed_names, types, where
        )
        if state is not None:
            states[name] = state
    return states


def build_state(
    report: RulesReport,
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
    spec = report.mapping(statuses, name, body, where)
    if spec is None:
        return None
    report.unknown_keys(spec, STATE_KEYS, where, "status", name)
    ok = True
    when = None
    otherwise = False
    if "when" in spec:
        text = spec["when"]
        if text == OTHERWISE or text is True:
            otherwise = True
        elif report.text(spec, "when", text, (*where, "when"), "a condition") is None:
            ok = False
        else:
            try:
                when = parse_condition(str(text), typed_names)
            except ExpressionError as exc:
                owner, key = (spec, "when") if spec.value_spans else (statuses, name)
                message = report.expression_message(text, exc, owner, key)
                if one_line and exc.message.startswith("unexpected '") and text.count(" ") > 2:
                    # The one-line form: `name: condition`. A note written as
                    # `Note: some text` lands here, so say how it was read.
                    message += (
                        f"; `{name}: {text}` on one line means the status `{name}` "
                        f"is entered when `{text}` holds (start the line with # for a note)"
                    )
                report.error(spec, "when", (*where, "when"), message)
                ok = False
    steps: tuple[Step, ...] | None = (Step("", timedelta(0)),)
    ladder = spec.get("ladder")
    if isinstance(ladder, str):
        steps = ladders.get(ladder)
        if steps is None and ladder not in report.broken_ladders:
            report.error(
                spec,
                "ladder",
                (*where, "ladder"),
                f"unknown ladder {ladder!r}{did_you_mean(ladder, ladders)}; "
                f"declared ladders: {', '.join(ladders) or 'none'}",
            )
    elif ladder is not None:
        steps = build_ladder_steps(report, spec, "ladder", ladder, (*where, "ladder"))
    if steps is None:
        return None
    then = build_then(report, spec, steps, state_names, where) if "then" in spec else None
    loop = build_loop(report, spec, name, steps, where) if "loop" in spec else None
    if then is not None and loop is not None:
        report.error(
            spec, "loop", (*where, "loop"), "a status has either 'then' or 'loop', not both"
        )
        ok = False
    event = None
    if "event" in spec:
        event = build_event(report, spec, spec["event"], types, (*where, "event"), state_event=True)
    tags = spec.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        report.error(
            spec, "tags", (*where, "tags"), f"expected a list of tag names, found {describe(tags)}"
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


def build_ladder_steps(
    report: RulesReport, parent: Any, key: Any, body: Any, path: Path_
) -> tuple[Step, ...] | None:
    steps_raw = report.mapping(parent, key, body, path)
    if steps_raw is None:
        return None
    steps = [Step("", timedelta(0))]
    ok = True
    for suffix, delay_raw in steps_raw.items():
        if not isinstance(suffix, str) or not SUFFIX.match(suffix):
            report.error(
                steps_raw,
                suffix,
                (*path, suffix),
                f"a ladder step is a suffix like _H24, found {describe(suffix)}",
            )
            ok = False
            continue
        delay = report.duration(steps_raw, suffix, delay_raw, (*path, suffix))
        if delay is None:
            ok = False
            continue
        if delay <= steps[-1].after:
            report.error(
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


def build_then(
    report: RulesReport,
    spec: MarkedDict,
    steps: tuple[Step, ...],
    state_names: list[str],
    where: Path_,
) -> Then | None:
    path = (*where, "then")
    if spec["then"] is None:
        report.error(spec, "then", path, _EMPTY.format(key="then", inner="`after:` and `enter:`"))
        return None
    raw = report.mapping(spec, "then", spec["then"], path)
    if raw is None:
        return None
    report.unknown_keys(raw, THEN_KEYS, path, "then", str(where[-1]))
    after = report.duration(raw, "after", raw.get("after"), (*path, "after"))
    enter = raw.get("enter")
    if enter not in state_names:
        report.error(
            raw,
            "enter",
            (*path, "enter"),
            f"unknown status {enter!r}{did_you_mean(enter, state_names)}",
        )
        return None
    if after is None:
        return None
    if len(steps) > 1 and after <= steps[-1].after:
        report.error(
            raw,
            "after",
            (*path, "after"),
            f"'then' must come after the last ladder step ({steps[-1].suffix} at "
            f"{format_duration(steps[-1].after)}), found {format_duration(after)}",
        )
        return None
    return Then(after, str(enter))


def build_loop(
    report: RulesReport, spec: MarkedDict, name: str, steps: tuple[Step, ...], where: Path_
) -> Loop | None:
    path = (*where, "loop")
    if spec["loop"] is None:
        report.error(spec, "loop", path, _EMPTY.format(key="loop", inner="`after:` and `back_to:`"))
        return None
    raw = report.mapping(spec, "loop", spec["loop"], path)
    if raw is None:
        return None
    report.unknown_keys(raw, LOOP_KEYS, path, "loop", name)
    after = report.duration(raw, "after", raw.get("after"), (*path, "after"))
    back_to = raw.get("back_to")
    suffixes = [s.suffix for s in steps]
    names = [name + s for s in suffixes]
    if back_to in names:
        index = names.index(back_to)
    elif back_to in suffixes and back_to != "":
        index = suffixes.index(back_to)
    else:
        report.error(
            raw,
            "back_to",
            (*path, "back_to"),
            f"expected a step of this status's ladder ({', '.join(names)})"
            f"{did_you_mean(back_to, names + suffixes[1:])}, found {describe(back_to)}",
        )
        return None
    if after is None:
        return None
    if after <= steps[-1].after:
        report.error(
            raw,
            "after",
            (*path, "after"),
            f"'loop' must come after the last ladder step ({name}{steps[-1].suffix} at "
            f"{format_duration(steps[-1].after)}), found {format_duration(after)}",
        )
        return None
    if index == len(steps) - 1:
        report.error(
            raw,
            "back_to",
            (*path, "back_to"),
            "going back to the last step changes nothing; go back to an earlier step",
        )
        return None
    return Loop(after, index)
