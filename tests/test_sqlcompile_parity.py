"""Parity: the compiled SQL and the Python engine say the same thing, everywhere.

Every scenario of every rules-test file, generated histories (hypothesis),
and the three demo databases go through both evaluators, on SQLite and on
PostgreSQL (``db_url``); status, status_since, state, state_entered_at,
action_code, merge fields and next_change_at must be identical.

Scenarios are written into generic tables (one row per entity, one per
action occurrence, one per re-initialisation baseline) read through a
``sources.yaml`` built for the entity, so the SQL path runs exactly as it
would on an application database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.daemon.events import event_keys, properties_needed, row_events
from sync.demo import load_demo
from sync.evaluate.engine import Baseline, Evaluation, evaluate, reinit_state
from sync.evaluate.ruletest import read_test_file
from sync.records import ActionOccurrence, FactValue
from sync.rules.expressions import Type
from sync.rules.model import Entity, Mode, Ruleset
from sync.rules.schema import load_rules, parse_rules
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources, parse_sources
from sync.sql.actions import Baselines
from sync.sql.compiled import SqlEvaluation
from sync.sql.evaluator import SqlEvaluator, later_keys

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = sorted(
    [ROOT / "rules.test.yaml", *(ROOT / "examples").glob("*/rules*.test.yaml")],
    key=str,
)
_SQL_TYPES: Mapping[Type, Any] = {
    Type.BOOL: sa.Boolean,
    Type.NUMBER: sa.Float,
    Type.STRING: sa.Text,
    Type.INSTANT: sa.DateTime(timezone=True),
}


@dataclass(frozen=True)
class Case:
    """One entity's inputs: what both evaluators get."""

    facts: Mapping[str, FactValue]
    actions: tuple[ActionOccurrence, ...] = ()
    baseline: Baseline | None = None


def _fields(result: Evaluation | SqlEvaluation) -> tuple[Any, ...]:
    return (
        result.status,
        result.status_since,
        result.state,
        result.state_entered_at,
        result.action_code,
        dict(result.merge_fields),
        result.next_change_at,
    )


def _utc(value: FactValue) -> FactValue:
    # SQLAlchemy writes the wall-clock digits of a datetime to SQLite.
    return value.astimezone(UTC) if isinstance(value, datetime) else value


class ScenarioDatabase:
    """Generic tables holding cases of one entity type, and their sources."""

    def __init__(self, url: str, ruleset: Ruleset, entity: Entity) -> None:
        self.url = url
        self.ruleset = ruleset
        self.entity = entity
        self.metadata = sa.MetaData()
        self.entities = sa.Table(
            "m_entities",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("email", sa.Text),
            *(sa.Column(f"x_{name}", _SQL_TYPES[kind]) for name, kind in entity.facts.items()),
        )
        self.occurrences = sa.Table(
            "m_occurrences",
            self.metadata,
            sa.Column("entity_id", sa.Integer),
            sa.Column("action", sa.Text),
            sa.Column("at", sa.DateTime(timezone=True)),
        )
        self.baselines = sa.Table(
            "m_baselines",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("state", sa.Text),
            sa.Column("at", sa.DateTime(timezone=True)),
        )
        self.engine = sa.create_engine(url)

    def sources_text(self) -> str:
        facts = "".join(
            f"            {name}: {kind.value}\n" for name, kind in self.entity.facts.items()
        )
        select = ", ".join(["id", *(f"x_{n} AS {n}" for n in self.entity.facts)])
        actions = "".join(
            f"      {name}: SELECT entity_id AS id, at FROM m_occurrences WHERE action = '{name}'\n"
            for name in self.entity.actions
        )
        text = f"entities:\n  {self.entity.name}:\n    list: SELECT id, email FROM m_entities\n"
        if actions:
            text += "    actions:\n" + actions
        if facts:
            text += f"    facts:\n      - sql: SELECT {select} FROM m_entities\n"
            text += "        columns:\n" + facts
        return text

    def load(self, cases: Sequence[Case]) -> None:
        self.metadata.drop_all(self.engine)
        self.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            rows = [
                {
                    "id": number,
                    "email": f"e{number}@example.org",
                    **{f"x_{n}": _utc(case.facts.get(n)) for n in self.entity.facts},
                }
                for number, case in enumerate(cases, 1)
            ]
            if rows:
                conn.execute(self.entities.insert(), rows)
            occurrences = [
                {"entity_id": number, "action": a.action, "at": a.at.astimezone(UTC)}
                for number, case in enumerate(cases, 1)
                for a in case.actions
            ]
            if occurrences:
                conn.execute(self.occurrences.insert(), occurrences)
            baselines = [
                {"id": number, "state": case.baseline.state, "at": case.baseline.at}
                for number, case in enumerate(cases, 1)
                if case.baseline is not None
            ]
            if baselines:
                conn.execute(self.baselines.insert(), baselines)

    def evaluator(self) -> SqlEvaluator:
        sources = parse_sources(self.sources_text(), "parity-sources.yaml")
        return SqlEvaluator(self.ruleset, sources, self.url)

    def close(self) -> None:
        self.engine.dispose()


def compare(
    db: ScenarioDatabase,
    cases: Sequence[Case],
    nows: Sequence[datetime],
    *,
    ids: Sequence[int] | None = None,
) -> int:
    """Evaluate every case at every ``now`` both ways; returns comparisons made.

    For an action-mode entity, each ``now`` after the first is also evaluated
    incrementally, from the keys at the previous ``now`` and the occurrences
    since (``keys_since`` + ``evaluate(keys=...)``), which must give the same."""
    entity = db.entity
    compared = 0
    incremental = entity.mode is Mode.ACTIONS and ids is None
    previous: tuple[datetime, dict[str, SqlEvaluation]] | None = None
    with db.evaluator() as evaluator:
        for now in sorted(nows):
            got = {
                r.id: r
                for r in evaluator.evaluate(
                    entity.name,
                    now=now,
                    ids=None if ids is None else [str(i) for i in ids],
                    baselines=Baselines(table=db.baselines),
                )
            }
            if incremental and previous is not None and previous[0] < now:
                since, before = previous
                new = evaluator.keys_since(entity.name, since=since, now=now)
                keys = {i: later_keys(r.keys, new.get(i)) for i, r in before.items()}
                stepped = evaluator.evaluate(
                    entity.name, now=now, keys=keys, baselines=Baselines(table=db.baselines)
                )
                assert {r.id: r for r in stepped} == got, (since, now)
            previous = (now, got)
            for number, case in enumerate(cases, 1):
                if ids is not None and number not in ids:
                    continue
                expected = evaluate(entity, case.facts, case.actions, now, case.baseline)
                assert _fields(got[str(number)]) == _fields(expected), (number, case, now)
                compared += 1
    return compared


# --------------------------------------------------------------------------
# Every rules-test file


def _test_cases(path: Path) -> tuple[Ruleset, Entity, list[Case], list[Any]]:
    test_file = read_test_file(path)
    entity = test_file.entity
    cases: list[Case] = []
    for scenario in test_file.scenarios:
        baseline = None
        if scenario.reinit_at is not None:
            state = reinit_state(entity, scenario.facts, scenario.reinit_at)
            baseline = Baseline(state, scenario.reinit_at) if state else None
        cases.append(Case(scenario.facts, scenario.actions, baseline))
    return test_file.ruleset, entity, cases, list(test_file.scenarios)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rules_test_expectation(db_url: str, path: Path) -> None:
    ruleset, entity, cases, scenarios = _test_cases(path)
    db = ScenarioDatabase(db_url, ruleset, entity)
    db.load(cases)
    by_at: dict[datetime, list[int]] = {}
    for number, scenario in enumerate(scenarios, 1):
        for expectation in scenario.expectations:
            by_at.setdefault(expectation.at, []).append(number)
    checked = 0
    with db.evaluator() as evaluator:
        for at, numbers in sorted(by_at.items()):
            got = {
                r.id: r
                for r in evaluator.evaluate(
                    entity.name, now=at, baselines=Baselines(table=db.baselines)
                )
            }
            for number in numbers:
                case = cases[number - 1]
                expected = evaluate(entity, case.facts, case.actions, at, case.baseline)
                result = got[str(number)]
                assert _fields(result) == _fields(expected), (path.name, number, at)
                # And the SQL passes the marketers' own expectation.
                wanted = [e for e in scenarios[number - 1].expectations if e.at == at]
                assert all(e.status == result.status for e in wanted)
                checked += 1
    assert checked == sum(len(s.expectations) for s in scenarios)
    db.close()


def test_reinit_computed_in_sql_matches_stored_baselines(db_url: str) -> None:
    """``reinit_at`` mode: the baseline state comes from the reinit list in SQL."""
    ruleset, entity, cases, scenarios = _test_cases(ROOT / "rules.test.yaml")
    db = ScenarioDatabase(db_url, ruleset, entity)
    db.load(cases)
    checked = 0
    with db.evaluator() as evaluator:
        for number, scenario in enumerate(scenarios, 1):
            if scenario.reinit_at is None:
                continue
            for expectation in scenario.expectations:
                (result,) = evaluator.evaluate(
                    entity.name, now=expectation.at, ids=[str(number)], reinit_at=scenario.reinit_at
                )
                case = cases[number - 1]
                expected = evaluate(entity, case.facts, case.actions, expectation.at, case.baseline)
                assert _fields(result) == _fields(expected), (scenario.name, expectation.at)
                checked += 1
    assert checked > 20
    db.close()


# --------------------------------------------------------------------------
# Generated histories

BASE = datetime(2026, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)

CYCLES = """\
version: 1
entities:
  thing:
    facts: {ready: bool}
    actions:
      start: {enters: a, code: go}
      poke: {enters: c}
      tag: {code: tagged}
      jump: {enters: d}
    statuses:
      a:
        ladder: {_1: 1h, _2: 5h}
        then: {after: 1d, enter: b}
      b:
        then: {after: 2d, enter: c}
      c:
        ladder: {_x: 3h}
        then: {after: 1d, enter: b}
      d:
        ladder: {_1: 2h, _2: 6h, _3: 10h}
        loop: {after: 12h, back_to: _1}
    reinit:
      - d: ready
      - a: otherwise
    merge_fields: {ST: status, CODE: action_code, READY: ready}
"""


def _instants(draw: st.DrawFn, count: int) -> list[datetime]:
    # Coarse minutes make ties and exact ladder boundaries likely.
    return [BASE + draw(st.integers(0, 60 * 24 * 90)) * _MINUTE for _ in range(count)]


@st.composite
def action_cases(draw: st.DrawFn, entity: Entity) -> Case:
    names = sorted(entity.actions)
    count = draw(st.integers(0, 6))
    instants = _instants(draw, count)
    actions = tuple(sorted(ActionOccurrence(at, draw(st.sampled_from(names))) for at in instants))
    facts = {
        name: draw(st.booleans() | st.none())
        for name, kind in entity.facts.items()
        if kind is Type.BOOL
    }
    baseline = None
    if bool(entity.reinit) and draw(st.booleans()):
        at = BASE + draw(st.integers(0, 60 * 24 * 90)) * _MINUTE
        state = reinit_state(entity, facts, at)
        baseline = Baseline(state, at) if state else None
    return Case(facts, actions, baseline)


@st.composite
def nows_near(draw: st.DrawFn, cases: Sequence[Case]) -> list[datetime]:
    """Instants on and around the boundaries that matter, plus far ones."""
    anchors = [a.at for c in cases for a in c.actions] or [BASE]
    nows = []
    for _ in range(draw(st.integers(1, 4))):
        anchor = draw(st.sampled_from(anchors))
        offset = draw(st.sampled_from([0, 1, 24, 31 * 24, 46 * 24, 400 * 24, 2, 5, 6]))
        tick = timedelta(microseconds=draw(st.sampled_from([0, -1, 1])))
        nows.append(anchor + timedelta(hours=offset) + tick)
    return nows


_PARITY = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "rules", ["blousebrothers", "cycles"], ids=["blousebrothers", "then-cycles-and-loop"]
)
@_PARITY
@given(data=st.data())
def test_generated_action_histories(db_url: str, rules: str, data: st.DataObject) -> None:
    ruleset = load_rules(ROOT / "rules.yaml") if rules == "blousebrothers" else parse_rules(CYCLES)
    entity = next(iter(ruleset.entities.values()))
    cases = data.draw(st.lists(action_cases(entity), min_size=1, max_size=15))
    nows = data.draw(nows_near(cases))
    db = ScenarioDatabase(db_url, ruleset, entity)
    db.load(cases)
    assert compare(db, cases, nows) == len(cases) * len(nows)
    db.close()


@st.composite
def condition_cases(draw: st.DrawFn, entity: Entity) -> Case:
    facts: dict[str, FactValue] = {}
    for name, kind in entity.facts.items():
        if kind is Type.INSTANT:
            value: FactValue = draw(
                st.none() | st.integers(0, 24 * 120).map(lambda h: BASE + timedelta(hours=h))
            )
        elif kind is Type.BOOL:
            value = draw(st.booleans() | st.none())
        elif kind is Type.NUMBER:
            value = draw(st.integers(0, 3) | st.none())
        else:
            value = draw(st.sampled_from(["joined", "left", "pending", None]))
        facts[name] = value
    return Case(facts)


@st.composite
def nows_on_thresholds(draw: st.DrawFn, cases: Sequence[Case]) -> list[datetime]:
    anchors = [v for c in cases for v in c.facts.values() if isinstance(v, datetime)] or [BASE]
    nows = []
    for _ in range(draw(st.integers(1, 4))):
        anchor = draw(st.sampled_from(anchors))
        hours = draw(st.sampled_from([0, 3, 24, 48, 72, 14 * 24, 21 * 24, 30 * 24, 84 * 24, -2]))
        tick = timedelta(microseconds=draw(st.sampled_from([0, -1, 1])))
        nows.append(anchor + timedelta(hours=hours) + tick)
    return nows


CONDITION_ENTITIES = [
    ("examples/littleworld/rules.yaml", "user"),
    ("examples/littleworld/rules.yaml", "match"),
    ("examples/rallia/rules.yaml", "participant"),
    ("examples/rallia/rules.yaml", "match"),
]


@pytest.mark.parametrize(
    ("rules", "entity_name"),
    CONDITION_ENTITIES,
    ids=[f"{r.split('/')[1]}-{e}" for r, e in CONDITION_ENTITIES],
)
@_PARITY
@given(data=st.data())
def test_generated_condition_facts(
    db_url: str, rules: str, entity_name: str, data: st.DataObject
) -> None:
    ruleset = load_rules(ROOT / rules)
    entity = ruleset.entity(entity_name)
    cases = data.draw(st.lists(condition_cases(entity), min_size=1, max_size=15))
    nows = data.draw(nows_on_thresholds(cases))
    db = ScenarioDatabase(db_url, ruleset, entity)
    db.load(cases)
    assert compare(db, cases, nows) == len(cases) * len(nows)
    db.close()


# --------------------------------------------------------------------------
# The demo databases: SourceReader + engine against the compiled SQL

DEMOS = {
    "blousebrothers": (ROOT / "rules.yaml", ROOT / "sources.yaml", ("user",)),
    "littleworld": (
        ROOT / "examples/littleworld/rules.yaml",
        ROOT / "examples/littleworld/sources.yaml",
        ("match", "user"),
    ),
    "rallia": (
        ROOT / "examples/rallia/rules.yaml",
        ROOT / "examples/rallia/sources.yaml",
        ("match", "participant"),
    ),
}
DEMO_NOW = datetime(2026, 3, 1, tzinfo=UTC)
DEMO_NOWS = [
    DEMO_NOW,
    DEMO_NOW - timedelta(days=40),
    DEMO_NOW + timedelta(days=3, hours=5),
    DEMO_NOW + timedelta(days=200),
]


def _python(
    reader: SourceReader, ruleset: Ruleset, entity_type: str, now: datetime, related: Any
) -> Iterator[tuple[str, Evaluation]]:
    entity = ruleset.entity(entity_type)
    for record in reader.read_entities(entity_type, now=now, related_statuses=related):
        yield record.id, evaluate(entity, record.facts, record.actions, now)


@pytest.mark.parametrize("example", sorted(DEMOS))
def test_demo_databases(db_url: str, example: str) -> None:
    rules_file, sources_file, entity_types = DEMOS[example]
    load_demo(db_url, example, users=120, seed=7, now=DEMO_NOW)
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    compared = 0
    with SourceReader(sources, db_url) as reader, SqlEvaluator(ruleset, sources, db_url) as ev:
        for now in DEMO_NOWS:
            related: dict[str, dict[str, str | None]] | None = None
            for entity_type in entity_types:
                expected = dict(_python(reader, ruleset, entity_type, now, related))
                got = {r.id: r for r in ev.evaluate(entity_type, now=now)}
                assert sorted(got) == sorted(expected)
                for key, evaluation in expected.items():
                    assert _fields(got[key]) == _fields(evaluation), (entity_type, key, now)
                    assert got[key].tags == evaluation.tags
                compared += len(expected)
                related = {entity_type: {k: e.status for k, e in expected.items()}}
    assert compared > 400


def test_demo_subset_of_ids_matches_full_population(db_url: str) -> None:
    rules_file, sources_file, _ = DEMOS["littleworld"]
    load_demo(db_url, "littleworld", users=60, seed=3, now=DEMO_NOW)
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    with SqlEvaluator(ruleset, sources, db_url) as ev:
        everyone = {r.id: r for r in ev.evaluate("user", now=DEMO_NOW)}
        some = sorted(everyone)[::7]
        subset = {r.id: r for r in ev.evaluate("user", now=DEMO_NOW, ids=some)}
    assert sorted(subset) == some
    assert all(subset[k] == everyone[k] for k in some)


#: An event as compared: key, name, instant, properties.
EventRow = tuple[str, str, datetime, dict[str, str]]


@pytest.mark.parametrize("example", sorted(DEMOS))
def test_demo_event_keys(db_url: str, example: str) -> None:
    """The daemon finds the events to send set-based: the event-bearing
    occurrences in the window (one range query per action) and the state of
    the compiled evaluation give the idempotency keys (``cycle.event_keys``),
    which must be exactly those of the engine's events with the same window."""
    rules_file, sources_file, entity_types = DEMOS[example]
    load_demo(db_url, example, users=120, seed=7, now=DEMO_NOW)
    ruleset, sources = load_rules(rules_file), load_sources(sources_file)
    compared = 0
    with SourceReader(sources, db_url) as reader, SqlEvaluator(ruleset, sources, db_url) as ev:
        for now in DEMO_NOWS:
            since = now - timedelta(days=7)
            related: dict[str, dict[str, str | None]] | None = None
            for entity_type in entity_types:
                entity = ruleset.entity(entity_type)
                statuses: dict[str, str | None] = {}
                expected: dict[str, list[str]] = {}
                engine_events: dict[str, list[EventRow]] = {}
                for record in reader.read_entities(entity_type, now=now, related_statuses=related):
                    result = evaluate(entity, record.facts, record.actions, now, events_since=since)
                    statuses[record.id] = result.status
                    expected[record.id] = sorted(
                        f"{entity_type}:{record.id}:{e.key}" for e in result.events
                    )
                    engine_events[record.id] = sorted(
                        (e.key, e.name, e.occurred_at, dict(e.properties)) for e in result.events
                    )
                actions = [a.name for a in entity.actions.values() if a.event is not None]
                occurrences = reader.occurrences(entity_type, actions, since=since, now=now)
                with_properties = properties_needed(entity)
                for r in ev.evaluate(entity_type, now=now):
                    found = occurrences.get(r.id, ())
                    got = sorted(event_keys(entity, r.id, r, found, since, now))
                    assert got == expected[r.id], (entity_type, r.id, now)
                    compared += len(got)
                    # The events themselves, as the cycle sends them without
                    # the engine: equal to the engine's, properties included
                    # (none) when no event of the type has any.
                    events: list[EventRow] = sorted(
                        (e.key, e.name, e.occurred_at, dict(e.properties))
                        for e in row_events(entity, r, found, since, now)
                    )
                    want = engine_events[r.id]
                    if with_properties:
                        events = [(k, n, at, {}) for k, n, at, _ in events]
                        want = [(k, n, at, {}) for k, n, at, _ in want]
                    assert events == want, (entity_type, r.id, now)
                related = {entity_type: statuses}
    assert compared > 0
