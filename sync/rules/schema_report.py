"""The rule file's report: its problems, and the checks every section of it makes.

``RulesReport`` is the shared ``Report`` of ``sync.rules.validate`` with what
only a rule file needs: a key or name at the wrong indentation is reported as
the slip it is (``sync.rules.layout``), durations, texts, and the message of a
condition that does not parse. The ``schema_*`` modules each build one section
of an entity and write their problems here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sync.rules.durations import DurationError, parse_duration
from sync.rules.expressions import ExpressionError
from sync.rules.layout import misplaced_key, misplaced_name
from sync.rules.loader import MarkedDict
from sync.rules.model import ACTION_CODE, STATUS
from sync.rules.validate import Path_, Report, unknown_key

#: Names of entity types, facts and actions: a word.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = {"now", STATUS, ACTION_CODE, "otherwise", "and", "or", "not", "is", "in", "set"}
RESERVED |= {"null", "true", "false"}
OTHERWISE = "otherwise"


class RulesReport(Report):
    """The problems of one rule file, and what is known of it so far."""

    def __init__(self, file: str) -> None:
        super().__init__(file)
        #: Ladders declared but invalid: already reported, not "unknown" where used.
        self.broken_ladders: set[str] = set()
        #: Names found indented inside a status, as if they were statuses of their own.
        self.nested: set[str] = set()

    def mapping(self, parent: Any, key: Any, value: Any, path: Path_) -> MarkedDict | None:
        if value is None:
            return MarkedDict()
        if not isinstance(value, MarkedDict):
            self.expected(parent, key, path, "`name: value` lines", value)
            return None
        return value

    def unknown_keys(
        self,
        mapping: Mapping[Any, Any],
        allowed: Iterable[str],
        path: Path_,
        level: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Report keys not in ``allowed``; at a known ``level`` of the file, a key that
        belongs to another level is reported as the indentation slip it is."""
        allowed = tuple(allowed)
        then_line = mapping.key_lines.get("then") if isinstance(mapping, MarkedDict) else None
        for key in mapping:
            if key in allowed:
                continue
            slip = None
            if level is not None:
                slip = misplaced_key(key, level, owner, then_line=then_line)
                if slip and level == "status" and "of its own" in slip:
                    self.nested.add(str(key))
            self.error(mapping, key, (*path, key), slip or unknown_key(key, allowed))

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
            self.expected(parent, key, path, "a duration like 24h or 7d", value)
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.error(parent, key, path, str(exc))
            return None

    def text(self, parent: Any, key: Any, value: Any, path: Path_, what: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.expected(parent, key, path, what, value)
            return None
        return value

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
