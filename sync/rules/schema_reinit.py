"""Re-initialisation: the status an entity gets when its history is rebuilt from facts.

Each ``- status: condition`` line is tried in order; ``otherwise`` always matches.
Only entities whose statuses are entered by actions have it: statuses chosen
by conditions need no rebuilding.
"""

from __future__ import annotations

from collections.abc import Mapping

from sync.rules.expression_checker import parse_condition
from sync.rules.expressions import ExpressionError, Type
from sync.rules.loader import MarkedDict, MarkedList
from sync.rules.model import Choice, State
from sync.rules.schema_report import OTHERWISE, RulesReport
from sync.rules.validate import Path_, describe, did_you_mean


def build_reinit(
    report: RulesReport,
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
        report.error(
            raw,
            "reinit",
            where,
            "re-initialisation applies to statuses entered by actions; these statuses "
            "are chosen by their 'when' conditions already",
        )
        return ()
    if not isinstance(lines, MarkedList):
        report.error(
            raw,
            "reinit",
            where,
            f"expected a list of '- status: condition' lines, found {describe(lines)}",
        )
        return ()
    choices: list[Choice] = []
    seen_otherwise = False
    for index, line in enumerate(lines):
        here = (*where, index + 1)
        if not isinstance(line, MarkedDict) or len(line) != 1:
            report.error(
                lines,
                index,
                here,
                f"expected one '- status: condition' line, found {describe(line)}",
            )
            continue
        ((status, text),) = line.items()
        if status not in states:
            if status in (raw.get("statuses") or ()):
                continue  # declared, but invalid: reported where it is declared
            report.error(
                line, status, here, f"unknown status {status!r}{did_you_mean(status, states)}"
            )
            continue
        if seen_otherwise:
            report.error(line, status, here, "never used: an 'otherwise' line above always matches")
            continue
        if text == OTHERWISE:
            seen_otherwise = True
            choices.append(Choice(status, None))
            continue
        if report.text(line, status, text, here, "a condition or 'otherwise'") is None:
            continue
        try:
            choices.append(Choice(status, parse_condition(str(text), typed_names)))
        except ExpressionError as exc:
            report.error(line, status, here, report.expression_message(text, exc, line, status))
    return tuple(choices)
