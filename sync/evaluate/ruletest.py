"""Rules-test files: pinning what the rules must do (``mailsync test FILE...``).

A rules-test file names a rule file and lists scenarios: facts, action
occurrences, an optional re-initialisation instant, and expectations of the
status (and optionally merge fields) at given instants. The format is public
(see ``docs/rules.md``); like Prometheus' ``promtool test rules``, it lets a
marketer change ``rules.yaml`` and know at once what moved.

Reading a test file is validated as strictly as a rule file: every instant
must carry its offset, and every fact, action, status and merge tag must exist
in the rules (with a suggestion for typos).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sync.evaluate.engine import Baseline, evaluate, reinit_state
from sync.exceptions import RulesError
from sync.records import ActionOccurrence, FactValue, parse_instant
from sync.rules.expressions import Type
from sync.rules.loader import MarkedDict, MarkedList, line_of, read_yaml_file
from sync.rules.model import Entity, Ruleset
from sync.rules.schema import load_rules
from sync.rules.validate import Report, did_you_mean

TOP_KEYS = ("rules", "entity", "tests")
TEST_KEYS = ("name", "facts", "events", "reinit_at", "expect")
EVENT_KEYS = ("action", "at")
EXPECT_KEYS = ("at", "status", "merge_fields")


@dataclass(frozen=True)
class Expectation:
    at: datetime
    status: str | None
    merge_fields: Mapping[str, Any]
    line: int | None


@dataclass(frozen=True)
class Scenario:
    name: str
    facts: Mapping[str, FactValue]
    actions: tuple[ActionOccurrence, ...]
    reinit_at: datetime | None
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class TestFile:
    file: str
    ruleset: Ruleset
    entity: Entity
    scenarios: tuple[Scenario, ...]


@dataclass(frozen=True)
class Failure:
    file: str
    line: int | None
    test: str
    at: datetime
    expected: str
    got: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"FAIL {where}: {self.test} at {self.at.isoformat()}: "
            f"expected {self.expected}, got {self.got}"
        )


@dataclass
class Outcome:
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)


class _Reader(Report):
    """Reads one rules-test file; ``problems`` fills up as it goes."""

    def instant(
        self, container: Any, key: Any, value: Any, path: tuple[str | int, ...]
    ) -> datetime | None:
        try:
            return parse_instant(value)
        except ValueError as exc:
            self.error(container, key, path, str(exc))
            return None

    def fact(
        self, entity: Entity, facts: MarkedDict, name: Any, value: Any, path: tuple[str | int, ...]
    ) -> tuple[bool, FactValue]:
        kind = entity.facts.get(name)
        if kind is None:
            known = ", ".join(entity.facts) or "none"
            self.error(
                facts,
                name,
                path,
                f"unknown fact {name!r}{did_you_mean(name, entity.facts)}; "
                f"facts of {entity.name}: {known}",
            )
            return False, None
        if value is None:
            return True, None
        if kind is Type.INSTANT:
            instant = self.instant(facts, name, value, path)
            return instant is not None, instant
        if kind is Type.BOOL:
            good = isinstance(value, bool)
        elif kind is Type.STRING:
            good = isinstance(value, str)
        else:
            good = isinstance(value, int | float) and not isinstance(value, bool)
        if not good:
            self.error(facts, name, path, f"expected a {kind.value}, found {value!r}")
            return False, None
        return True, value

    def read(self, path: Path) -> TestFile | None:
        document = read_yaml_file(path)
        self.problems.extend(document.problems)
        data = document.data
        if not isinstance(data, MarkedDict):
            self.error(data, None, (), "expected `rules:` and `tests:` at the top of the file")
            return None
        self.unknown_keys(data, TOP_KEYS, ())
        rules_ref = data.get("rules")
        if not isinstance(rules_ref, str):
            self.error(
                data,
                "rules",
                ("rules",),
                "expected the path of the rule file, relative to this file",
            )
            return None
        # The rule file's own problems are reported under its own name.
        ruleset = load_rules(path.parent / rules_ref)
        entity_name = data.get("entity")
        if entity_name is None and len(ruleset.entities) != 1:
            self.error(
                data,
                None,
                ("entity",),
                f"{rules_ref} has several entity types ({', '.join(ruleset.entities)}); "
                "say which with 'entity:'",
            )
            return None
        if entity_name is not None and entity_name not in ruleset.entities:
            self.error(
                data,
                "entity",
                ("entity",),
                f"unknown entity type {entity_name!r}{did_you_mean(entity_name, ruleset.entities)}",
            )
            return None
        entity = ruleset.entity(entity_name)
        tests = data.get("tests")
        if not isinstance(tests, MarkedList) or not tests:
            self.error(data, "tests", ("tests",), "expected a non-empty list of tests")
            return None
        scenarios = [self.scenario(entity, tests, index, raw) for index, raw in enumerate(tests)]
        if self.problems:
            return None
        return TestFile(str(path), ruleset, entity, tuple(s for s in scenarios if s is not None))

    def scenario(self, entity: Entity, tests: MarkedList, index: int, raw: Any) -> Scenario | None:
        path: tuple[str | int, ...] = ("tests", index + 1)
        if not isinstance(raw, MarkedDict):
            self.error(
                tests,
                index,
                path,
                "expected a test: `name:`, then `events:` and `expect:` lines under it",
            )
            return None
        self.unknown_keys(raw, TEST_KEYS, path)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            self.error(raw, "name", (*path, "name"), "every test needs a name")
            name = f"test {index + 1}"
        path = ("tests", name)
        ok = True
        facts: dict[str, FactValue] = {}
        facts_raw = raw.get("facts") or MarkedDict()
        if not isinstance(facts_raw, MarkedDict):
            self.error(raw, "facts", (*path, "facts"), "expected `fact: value` lines")
            ok = False
        else:
            for fact, value in facts_raw.items():
                good, parsed = self.fact(entity, facts_raw, fact, value, (*path, "facts", fact))
                ok &= good
                facts[fact] = parsed
        actions: list[ActionOccurrence] = []
        events_raw = raw.get("events") or MarkedList()
        if not isinstance(events_raw, MarkedList):
            self.error(raw, "events", (*path, "events"), "expected a list of {action, at}")
            ok = False
            events_raw = MarkedList()
        for position, event in enumerate(events_raw):
            here = (*path, "events", position + 1)
            if not isinstance(event, MarkedDict):
                self.error(events_raw, position, here, "expected {action: NAME, at: INSTANT}")
                ok = False
                continue
            self.unknown_keys(event, EVENT_KEYS, here)
            action = event.get("action")
            if action not in entity.actions:
                self.error(
                    event,
                    "action",
                    (*here, "action"),
                    f"unknown action {action!r}{did_you_mean(action, entity.actions)}",
                )
                ok = False
                continue
            at = self.instant(event, "at", event.get("at"), (*here, "at"))
            if at is None:
                ok = False
                continue
            actions.append(ActionOccurrence(at, str(action)))
        reinit_at = None
        if raw.get("reinit_at") is not None:
            reinit_at = self.instant(raw, "reinit_at", raw["reinit_at"], (*path, "reinit_at"))
            ok &= reinit_at is not None
            if not entity.reinit:
                self.error(
                    raw, "reinit_at", (*path, "reinit_at"), f"{entity.name} has no reinit rules"
                )
                ok = False
        expectations = self.expectations(entity, raw, path)
        if not ok or expectations is None:
            return None
        return Scenario(name, facts, tuple(actions), reinit_at, expectations)

    def expectations(
        self, entity: Entity, raw: MarkedDict, path: tuple[str | int, ...]
    ) -> tuple[Expectation, ...] | None:
        expect = raw.get("expect")
        if not isinstance(expect, MarkedList) or not expect:
            self.error(
                raw, "expect", (*path, "expect"), "expected a non-empty list of {at, status}"
            )
            return None
        result: list[Expectation] = []
        statuses = entity.status_names
        tags = [f.tag for f in entity.merge_fields]
        for position, item in enumerate(expect):
            here = (*path, "expect", position + 1)
            if not isinstance(item, MarkedDict):
                self.error(expect, position, here, "expected {at: INSTANT, status: NAME}")
                continue
            self.unknown_keys(item, EXPECT_KEYS, here)
            at = self.instant(item, "at", item.get("at"), (*here, "at"))
            if "status" not in item:
                self.error(item, None, here, "expected a status (null for none)")
                continue
            status = item["status"]
            if status is not None and status not in statuses:
                self.error(
                    item,
                    "status",
                    (*here, "status"),
                    f"unknown status {status!r}{did_you_mean(status, statuses)}",
                )
                continue
            merge = item.get("merge_fields") or MarkedDict()
            if not isinstance(merge, MarkedDict):
                self.error(
                    item,
                    "merge_fields",
                    (*here, "merge_fields"),
                    "expected `TAG: value` lines",
                )
                continue
            bad = [tag for tag in merge if tag not in tags]
            for tag in bad:
                self.error(
                    merge,
                    tag,
                    (*here, "merge_fields", tag),
                    f"unknown merge tag {tag!r}{did_you_mean(tag, tags)}; "
                    f"merge tags of {entity.name}: {', '.join(tags) or 'none'}",
                )
            if at is None or bad:
                continue
            result.append(Expectation(at, status, dict(merge), line_of(expect, position)))
        return tuple(result)


def read_test_file(path: str | Path) -> TestFile:
    """Read and validate a rules-test file (and its rule file)."""
    reader = _Reader(str(path))
    test_file = reader.read(Path(path))
    if test_file is None or reader.problems:
        raise RulesError(reader.problems)
    return test_file


def _same(expected: Any, got: FactValue) -> bool:
    if isinstance(got, datetime) and isinstance(expected, str):
        try:
            return parse_instant(expected) == got
        except ValueError:
            return False
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    return bool(expected == got)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def run_test_file(test_file: TestFile, outcome: Outcome | None = None) -> Outcome:
    """Evaluate every expectation; failures are collected, not raised."""
    outcome = outcome or Outcome()
    entity = test_file.entity
    for scenario in test_file.scenarios:
        baseline = None
        if scenario.reinit_at is not None:
            state = reinit_state(entity, scenario.facts, scenario.reinit_at)
            if state is not None:
                baseline = Baseline(state, scenario.reinit_at)
        for expectation in scenario.expectations:
            result = evaluate(entity, scenario.facts, scenario.actions, expectation.at, baseline)
            problems = []
            if result.status != expectation.status:
                problems.append((f"status {_show(expectation.status)}", f"{_show(result.status)}"))
            for tag, value in expectation.merge_fields.items():
                got = result.merge_fields.get(tag)
                if not _same(value, got):
                    problems.append((f"{tag}={_show(value)}", f"{tag}={_show(got)}"))
            if problems:
                outcome.failures.append(
                    Failure(
                        test_file.file,
                        expectation.line,
                        scenario.name,
                        expectation.at,
                        "; ".join(e for e, _ in problems),
                        "; ".join(g for _, g in problems),
                    )
                )
            else:
                outcome.passed += 1
    return outcome
