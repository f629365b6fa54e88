"""``mailsync graph --format svg``: the ladder layout, read back with a real XML parser.

Every shipped rule file is drawn and parsed with ``xml.etree``; the statuses,
edges and labels found in the drawing are compared with the rules themselves
(not with the renderer's own model), and the geometry is checked where the
layout promises something: one row per state, steps left to right, priority
lists numbered in order, legible when fitted to a laptop screen.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.cli import cli
from sync.rules.graph_svg import Annotations, after_entry, render_svg, words
from sync.rules.model import Mode, Ruleset
from sync.rules.schema import load_rules, parse_rules

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = {
    "blousebrothers": ROOT / "rules.yaml",
    "littleworld": ROOT / "examples" / "littleworld" / "rules.yaml",
    "rallia": ROOT / "examples" / "rallia" / "rules.yaml",
}
NS = {"s": "http://www.w3.org/2000/svg"}
LAPTOP = (1366, 768)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode())


def entity_group(root: ET.Element, name: str) -> ET.Element:
    found = root.find(f".//s:g[@data-entity='{name}']", NS)
    assert found is not None, f"no drawing of {name}"
    return found


def edges(group: ET.Element) -> set[tuple[str, str, str, str]]:
    return {
        (g.get("data-kind", ""), g.get("data-source", ""), g.get("data-target", ""),
         g.get("data-label", ""))
        for g in group.iterfind(".//s:g[@data-kind]", NS)
        if "edge" in (g.get("class") or "")
    }  # fmt: skip


def expected_edges(ruleset: Ruleset, name: str) -> set[tuple[str, str, str, str]]:
    """The edges the rules call for, spelt independently of the renderer."""
    entity = ruleset.entity(name)
    out: set[tuple[str, str, str, str]] = set()
    for state in entity.states.values():
        names = state.status_names
        for i in range(1, len(names)):
            days = state.steps[i].after
            out.add(("step", names[i - 1], names[i], after_entry(days)))
        if state.then is not None:
            target = entity.states[state.then.enter].status_names[0]
            out.add(("then", names[-1], target, after_entry(state.then.after)))
        if state.loop is not None:
            period = state.loop.after - state.steps[state.loop.back_to].after
            label = f"{after_entry(state.loop.after)}, then every {words(period)}"
            out.add(("loop", names[-1], names[state.loop.back_to], label))
    return out


@pytest.fixture(scope="module")
def drawings() -> dict[str, tuple[Ruleset, ET.Element]]:
    out = {}
    for key, path in RULE_FILES.items():
        ruleset = load_rules(path)
        out[key] = (ruleset, parse(render_svg(ruleset)))
    return out


@pytest.mark.parametrize("key", sorted(RULE_FILES))
def test_every_status_is_a_box(key: str, drawings: dict[str, tuple[Ruleset, ET.Element]]) -> None:
    ruleset, root = drawings[key]
    for name, entity in ruleset.entities.items():
        group = entity_group(root, name)
        boxes = [g.get("data-status") for g in group.iterfind(".//s:g[@class='node']", NS)]
        assert boxes == list(entity.status_names)


@pytest.mark.parametrize("key", sorted(RULE_FILES))
def test_timed_edges_match_the_rules(
    key: str, drawings: dict[str, tuple[Ruleset, ET.Element]]
) -> None:
    ruleset, root = drawings[key]
    for name in ruleset.entities:
        drawn = {e for e in edges(entity_group(root, name)) if e[0] in ("step", "then", "loop")}
        assert drawn == expected_edges(ruleset, name)


@pytest.mark.parametrize("key", sorted(RULE_FILES))
def test_entries_and_priority_lists(
    key: str, drawings: dict[str, tuple[Ruleset, ET.Element]]
) -> None:
    ruleset, root = drawings[key]
    for name, entity in ruleset.entities.items():
        drawn = edges(entity_group(root, name))
        actions = {(e[2], e[3].split(" ")[0]) for e in drawn if e[0] == "action"}
        assert actions == {
            (entity.states[a.enters].status_names[0], a.name)
            for a in entity.actions.values()
            if a.enters is not None
        }
        kind = "condition" if entity.mode is Mode.CONDITIONS else "reinit"
        choices = entity.choices if entity.mode is Mode.CONDITIONS else entity.reinit
        lines = sorted((int(e[3].split(".")[0]), e[2]) for e in drawn if e[0] == kind)
        assert lines == [(i, c.state) for i, c in enumerate(choices, start=1)]


def test_blousebrothers_labels_read_as_offsets_from_entry(
    drawings: dict[str, tuple[Ruleset, ET.Element]],
) -> None:
    _, root = drawings["blousebrothers"]
    drawn = edges(entity_group(root, "user"))
    assert ("step", "registered", "registered_H24", "24 hours after entry") in drawn
    assert ("step", "registered_J15", "registered_M1", "30 days after entry") in drawn
    assert ("then", "buyer_ok_M1", "money_ok", "31 days after entry") in drawn
    assert (
        "loop", "creat_wait_M1", "creat_wait_J15", "31 days after entry, then every 16 days"
    ) in drawn  # fmt: skip
    texts = [t.text for t in root.iter(f"{{{NS['s']}}}text")]
    # The reinit column, in order, as the rule file lists it.
    assert [t for t in texts if t and re.match(r"^\d\. ", t)][:2] == [
        "1. if not has_wallet",
        "5. if not has_credit",
    ]


def _boxes(root: ET.Element) -> dict[str, tuple[float, float]]:
    """status -> (x, y) of its box."""
    out = {}
    for g in root.iterfind(".//s:g[@class='node']", NS):
        rect = g.find("s:rect", NS)
        assert rect is not None
        out[g.get("data-status", "")] = (float(rect.get("x", 0)), float(rect.get("y", 0)))
    return out


def test_one_row_per_state_and_steps_left_to_right(
    drawings: dict[str, tuple[Ruleset, ET.Element]],
) -> None:
    ruleset, root = drawings["blousebrothers"]
    boxes = _boxes(root)
    rows: list[float] = []
    for state in ruleset.entity("user").states.values():
        xs = [boxes[n][0] for n in state.status_names]
        ys = {boxes[n][1] for n in state.status_names}
        assert len(ys) == 1, f"{state.name}'s ladder is not on one row"
        assert xs == sorted(xs)
        assert len(set(xs)) == len(xs)
        rows.append(ys.pop())
    assert rows == sorted(rows)
    assert len(set(rows)) == len(rows)


def _fitted_scale(root: ET.Element) -> float:
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    return min(LAPTOP[0] / width, LAPTOP[1] / height)


def _smallest_font(root: ET.Element) -> float:
    return min(float(t.get("font-size", 99)) for t in root.iter(f"{{{NS['s']}}}text"))


FIFTY = """
version: 1
entities:
  user:
    actions:
{actions}
    statuses:
{statuses}
"""


def test_legible_at_fifty_statuses_on_a_laptop(
    drawings: dict[str, tuple[Ruleset, ET.Element]],
) -> None:
    """Fitted to a 1366x768 screen, the smallest text stays at 7 px or more."""
    ruleset, root = drawings["blousebrothers"]
    assert len(ruleset.entity("user").status_names) >= 45
    assert _smallest_font(root) * _fitted_scale(root) >= 7
    actions = "\n".join(f"      act{i}: {{enters: s{i}}}" for i in range(10))
    ladder = "{_a: 1d, _b: 3d, _c: 7d, _d: 30d}"
    statuses = "\n".join(f"      s{i}:\n        ladder: {ladder}" for i in range(10))
    fifty = parse_rules(FIFTY.format(actions=actions, statuses=statuses))
    assert len(fifty.entity("user").status_names) == 50
    svg = parse(render_svg(fifty))
    assert _smallest_font(svg) * _fitted_scale(svg) >= 7


def test_text_is_escaped() -> None:
    rules = parse_rules(
        """
version: 1
entities:
  match:
    facts: {start_at: instant, n: number, label: string}
    statuses:
      small: {when: n < 3 and now >= start_at and label == "a&b"}
      other: {when: otherwise}
"""
    )
    root = parse(render_svg(rules))
    drawn = edges(entity_group(root, "match"))
    assert (
        "condition", "first match wins", "small", '1. n < 3 and now >= start_at and label == "a&b"'
    ) in drawn  # fmt: skip


def test_annotations_put_counts_and_flows_on_the_drawing() -> None:
    ruleset = load_rules(RULE_FILES["blousebrothers"])
    notes = Annotations(
        counts={"registered": 30, "registered_H24": 10},
        total=40,
        flows={("registered", "registered_H24"): (3, 12)},
        entries={"registered": (5, 9)},
        href=lambda status: f"/status?s={status}",
    )
    root = parse(render_svg(ruleset, annotations={"user": notes}))
    counts = {
        t.get("data-count"): t.text for t in root.iter(f"{{{NS['s']}}}text") if t.get("data-count")
    }
    assert counts["30"] == "30 · 75.0%"
    assert counts["10"] == "10 · 25.0%"
    texts = [t.text for t in root.iter(f"{{{NS['s']}}}text")]
    assert "24h 3 · 7d 12" in texts
    assert "entered 24h 5 · 7d 9" in texts
    links = {a.get("href") for a in root.iter(f"{{{NS['s']}}}a")}
    assert "/status?s=registered_H24" in links


def test_words() -> None:
    assert words(timedelta(days=1)) == "24 hours"
    assert words(timedelta(days=7)) == "7 days"
    assert words(timedelta(hours=3)) == "3 hours"
    assert words(timedelta(minutes=10)) == "10 minutes"
    assert words(timedelta(hours=1)) == "1 hour"


def test_cli_prints_svg_and_docs_copy_is_current() -> None:
    result = CliRunner().invoke(
        cli, ["graph", str(RULE_FILES["blousebrothers"]), "--format", "svg"]
    )
    assert result.exit_code == 0, result.output
    parse(result.output)
    shipped = (ROOT / "docs" / "lifecycle.svg").read_text(encoding="utf-8")
    assert shipped == result.output.replace(str(RULE_FILES["blousebrothers"]), "rules.yaml"), (
        "docs/lifecycle.svg is stale: run `mailsync graph rules.yaml --format svg > "
        "docs/lifecycle.svg`"
    )
    one = CliRunner().invoke(
        cli, ["graph", str(RULE_FILES["rallia"]), "--format", "svg", "--entity", "match"]
    )
    assert one.exit_code == 0
    assert {
        g.get("data-entity") for g in parse(one.output).iterfind(".//s:g[@data-entity]", NS)
    } == {"match"}
