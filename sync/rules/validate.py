"""What every YAML validator of mailsync shares: problems with their lines.

Four hand-written validators turn YAML into typed settings: the rule file
(``sync.rules.schema``), the sources file (``sync.sources.schema``), the
operator's settings (``sync.daemon.config``) and the rules-test files
(``sync.evaluate.ruletest``). Each walks its document and collects every
problem instead of stopping at the first. ``Report`` is that collection, with
the checks they all make at a path of the document: keys that are not allowed
(with the nearest allowed one as a suggestion), keys that are required, names
in lower_snake_case, and "expected this, found that".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sync.exceptions import Problem
from sync.rules.loader import MarkedDict, MarkedList, line_of

#: Where a value is in its document: the chain of keys (and 1-based list positions).
Path_ = tuple[str | int, ...]

#: Names engineers give in ``sources.yaml``: entity types, actions, facts.
LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """`` (did you mean 'money_ok'?)`` or nothing."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: object, allowed: Iterable[str]) -> str:
    """``unknown key 'lader' (did you mean 'ladder'?); allowed keys: when, ladder``."""
    allowed = list(allowed)
    return f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}"


def missing_key(key: str, hint: str = "") -> str:
    """``missing key 'list'``, then ``hint`` (``: the query returning ...``)."""
    return f"missing key {key!r}{hint}"


def describe(value: object) -> str:
    """A value as a marketer would name it: ``a list``, ``7 (a number)``, ``nothing``."""
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


class Report:
    """The problems of one file, collected while a validator walks it.

    ``container`` and ``key`` locate a problem's line (``line_of``); ``path``
    names where it is, for a reader who does not count lines. A validator
    whose audience words things differently overrides ``describe`` and
    ``found`` (``sources.yaml`` is read by engineers: "got a mapping").
    """

    #: The word before a description of what was found instead.
    found = "found"

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def describe(self, value: object) -> str:
        return describe(value)

    def error(self, container: Any, key: Any, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(container, key), path, message))

    def warn(self, container: Any, key: Any, path: Path_, message: str) -> None:
        self.problems.append(
            Problem(self.file, line_of(container, key), path, message, warning=True)
        )

    @property
    def failed(self) -> bool:
        """Whether any problem is an error (warnings do not refuse a file)."""
        return any(not p.warning for p in self.problems)

    def expected(self, container: Any, key: Any, path: Path_, what: str, value: object) -> None:
        """Report ``expected {what}, found {value described}``."""
        self.error(container, key, path, f"expected {what}, {self.found} {self.describe(value)}")

    def unknown_keys(self, mapping: Mapping[Any, Any], allowed: Iterable[str], path: Path_) -> None:
        """Report each key of ``mapping`` that is not ``allowed``."""
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                self.error(mapping, key, (*path, key), unknown_key(key, allowed))

    def required(
        self,
        mapping: Mapping[Any, Any],
        key: str,
        parent: Any,
        at: Any,
        path: Path_,
        hint: str = "",
    ) -> bool:
        """Whether ``mapping`` has ``key``; if not, report it at ``parent[at]``.

        ``hint`` follows the key's name: ``missing key 'list': the query ...``.
        """
        if key in mapping:
            return True
        self.error(parent, at, path, missing_key(key, hint))
        return False

    def snake_name(self, container: Any, name: Any, path: Path_, what: str) -> bool:
        """Whether ``name`` is in lower_snake_case; if not, report it as ``what``."""
        if isinstance(name, str) and LOWER_SNAKE.match(name):
            return True
        self.error(container, name, path, f"expected {what} in lower_snake_case, got {name!r}")
        return False
