"""``sync.rules.graph`` and ``mailsync graph``: the model for each construct, both
renderers on every shipped rule file, and the validity of what they print.

DOT is read back with pydot (a real DOT grammar); Mermaid has no Python
parser, so its output is read back by the small reader below, which follows
the stateDiagram grammar closely enough to check structure, and is compared
edge for edge with the DOT output: the two renderers must draw the same graph.
"""

from __future__ import annotations

import html
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pydot
import pytest
from click.testing import CliRunner

from sync.cli import cli
from sync.rules.graph import (
    REINIT_TITLE,
    SAFE_ID,
    EdgeKind,
    Graph,
    NodeKind,
    after_entry,
    build_graph,
    build_graphs,
    delay,
    dot_string,
    mermaid_text,
    render,
    render_dot,
    render_mermaid,
)
from sync.rules.model import Mode, Ruleset
from sync.rules.schema import load_rules, parse_rules

# pydot's grammar still calls pyparsing's camelCase names, which pyparsing 3.3
# deprecates; that is pydot's business, not a fault in our output.
pytestmark = pytest.mark.filterwarnings(r"ignore:'\w+' deprecated - use:DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = {
    "blousebrothers": ROOT / "rules.yaml",
    "littleworld": ROOT / "examples" / "littleworld" / "rules.yaml",
    "rallia": ROOT / "examples" / "rallia" / "rules.yaml",
}


@pytest.fixture(scope="module")
def rulesets() -> dict[str, Ruleset]:
    return {name: load_rules(path) for name, path in RULE_FILES.items()}


@pytest.fixture(scope="module")
def user(rulesets: dict[str, Ruleset]) -> Graph:
    return build_graph(rulesets["blousebrothers"].entity("user"))


def edge(graph: Graph, source: str, target: str) -> list[tuple[str, EdgeKind]]:
    """Labels and kinds of the edges between two real names ("start" for the start)."""
    src = graph.start if source == "start" else graph.node_id(source)
    dst = graph.node_id(target)
    return [(e.label, e.kind) for e in graph.edges if e.source == src and e.target == dst]


def choice_lines(graph: Graph, choice_label: str) -> list[tuple[str, str]]:
    """(label, target's real name) of a choice node's edges, in order."""
    choice = next(
        n.id for n in graph.nodes if n.kind is NodeKind.CHOICE and n.label == choice_label
    )
    return [(e.label, graph.node(e.target).label) for e in graph.edges_from(choice)]


# ---------------------------------------------------------------- the model, construct by construct


def test_ladder_is_a_chain_of_steps_labelled_with_offsets_from_entry(user: Graph) -> None:
    names = ["registered", "registered_H24", "registered_J7", "registered_J15", "registered_M1",
             "registered_inact"]  # fmt: skip
    offsets = [f"{o} after entry" for o in ("24 hours", "7 days", "15 days", "30 days", "45 days")]
    for (a, b), offset in zip(itertools.pairwise(names), offsets, strict=True):
        assert edge(user, a, b) == [(offset, EdgeKind.STEP)]
    assert user.node(user.node_id("registered")).kind is NodeKind.STATE
    assert user.node(user.node_id("registered_J7")).kind is NodeKind.STEP
    ladder = next(c for c in user.clusters if c.label == "registered")
    assert [user.node(i).label for i in ladder.nodes] == names
    # The final step leads nowhere: X_inact is for good.
    assert user.edges_from(user.node_id("registered_inact")) == ()


def test_then_enters_another_state_afresh_from_the_last_step(user: Graph) -> None:
    then = [("31 days after entry", EdgeKind.THEN)]
    assert edge(user, "buyer_ok_M1", "money_ok") == then
    assert edge(user, "give_eval_notok_M1", "money_ok") == then
    # No ladder: straight from the state itself.
    assert edge(user, "conf_publi_ok", "creat_wait") == [("24 hours after entry", EdgeKind.THEN)]


def test_loop_goes_back_to_its_step_with_delay_and_period(user: Graph) -> None:
    assert edge(user, "creat_wait_M1", "creat_wait_J15") == [
        ("31 days after entry, then every 16 days", EdgeKind.LOOP)
    ]


def test_actions_enter_their_state_from_the_start(user: Graph) -> None:
    assert edge(user, "start", "registered") == [
        ("signup (code welcome) ⚡ welcome", EdgeKind.ACTION)
    ]
    assert edge(user, "start", "wallet_ok") == [("wallet_created", EdgeKind.ACTION)]
    into_money_ok = [label for label, kind in edge(user, "start", "money_ok")]
    assert into_money_ok == [
        "account_credited (code credit) ⚡ credit",
        "subscription_bought (code abo) ⚡ abo",
        "conf_evaluated",
    ]
    action_edges = [e for e in user.edges if e.kind is EdgeKind.ACTION]
    assert len(action_edges) == 12  # the 14 actions less the two that enter nothing


def test_actions_that_enter_nothing_are_listed_in_a_note(user: Graph) -> None:
    (note,) = (n for n in user.nodes if n.label.startswith("status unchanged by"))
    assert note.kind is NodeKind.NOTE
    assert "transfer_received (code virement)" in note.label
    assert "balance_low (code credit_low)" in note.label
    assert not [e for e in user.edges if note.id in (e.source, e.target)]


def test_reinit_is_a_numbered_choice_of_its_own(user: Graph) -> None:
    assert user.mode is Mode.ACTIONS
    reinit = next(n for n in user.nodes if n.label == "reinit")
    assert reinit.kind is NodeKind.CHOICE
    assert [(e.label, e.kind) for e in user.edges if e.target == reinit.id] == [
        ("mailsync reinit", EdgeKind.REINIT)
    ]
    lines = [
        ("1. if not has_wallet", "registered"),
        ("2. if has_finished_unpublished_conf", "creat_conf_100"),
        ("3. if has_conf_in_progress", "creat_conf_begin"),
        ("4. if has_published_conf", "conf_publi_ok"),
        ("5. if not has_credit", "wallet_ok"),
        ("6. if not has_pending_evaluation", "money_ok"),
        ("7. if has_pending_evaluation", "give_eval_notok"),
        ("8. otherwise", "money_ok"),
    ]
    assert choice_lines(user, "reinit") == lines
    assert all(e.kind is EdgeKind.REINIT for e in user.edges_from(reinit.id))


def test_the_reinit_list_is_also_written_out_in_order_in_a_note(user: Graph) -> None:
    (note,) = (n for n in user.nodes if n.label.startswith(REINIT_TITLE))
    assert note.kind is NodeKind.NOTE
    assert note.label.split("\n") == [
        "mailsync reinit: the first line that holds wins",
        "1. if not has_wallet → registered",
        "2. if has_finished_unpublished_conf → creat_conf_100",
        "3. if has_conf_in_progress → creat_conf_begin",
        "4. if has_published_conf → conf_publi_ok",
        "5. if not has_credit → wallet_ok",
        "6. if not has_pending_evaluation → money_ok",
        "7. if has_pending_evaluation → give_eval_notok",
        "8. otherwise → money_ok",
    ]
    mermaid = render_mermaid([user])
    assert 'state "mailsync reinit#58; the first line that holds wins" as reinit_order' in mermaid
    assert "    reinit_order : 8. otherwise → money_ok\n" in mermaid
    dot = render_dot([user])
    assert (
        'label="mailsync reinit: the first line that holds wins\\l1. if not has_wallet → '
        "registered\\l2. if"
    ) in dot
    assert 'otherwise → money_ok\\l"];' in dot


def test_condition_mode_draws_the_priority_list_numbered_with_conditions(
    rulesets: dict[str, Ruleset],
) -> None:
    match = build_graph(rulesets["rallia"].entity("match"))
    assert match.mode is Mode.CONDITIONS
    assert [e.kind for e in match.edges_from(match.start)] == [EdgeKind.CONDITION]
    assert choice_lines(match, "first match wins") == [
        ("1. cancelled_at is set", "cancelled"),
        ("2. now >= start_at and not full", "expired"),
        ("3. now >= end_at + 2d", "closed"),
        ("4. now >= end_at", "completed"),
        ("5. now >= start_at", "in_progress"),
        ("6. otherwise", "scheduled"),
    ]
    assert not [n for n in match.nodes if n.label == "reinit"]


def test_every_line_of_a_long_priority_list_keeps_its_number(
    rulesets: dict[str, Ruleset],
) -> None:
    entity = rulesets["littleworld"].entity("user")
    lines = choice_lines(build_graph(entity), "first match wins")
    assert [target for _, target in lines] == list(entity.states)
    assert [label.split(". ", 1)[0] for label, _ in lines] == [str(i) for i in range(1, 22)]
    assert lines[8] == (
        "9. searching and had_onboarding_call and now >= search_started_at + 60d",
        "inactive.unmatched",
    )
    assert lines[-1] == ("21. otherwise", "signup.created")


def test_events_on_entry_are_noted_on_the_state(rulesets: dict[str, Ruleset]) -> None:
    participant = build_graph(rulesets["rallia"].entity("participant"))
    events = {n.label: n.event for n in participant.nodes if n.event}
    assert events == {
        "match_cancelled": "match_cancelled",
        "checkin_open": "match_checkin",
        "reminder_2h": "match_reminder_2h",
        "reminder_24h": "match_reminder_24h",
    }
    assert 'state "reminder_24h ⚡ match_reminder_24h" as participant__reminder_24h' in (
        render_mermaid(build_graphs(rulesets["rallia"]))
    )
    assert '"reminder_24h\\n⚡ match_reminder_24h"' in render_dot([participant])


@pytest.mark.parametrize(
    ("after", "text"),
    [({"hours": 24}, "+24h"), ({"days": 7}, "+7d"), ({"days": 31}, "+31d"),
     ({"hours": 3}, "+3h"), ({"hours": 36}, "+1d12h"), ({"minutes": 10}, "+10min")],
    ids=["24h", "7d-not-1w", "31d", "3h", "36h", "10min"],
)  # fmt: skip
def test_delays_read_like_the_ladder_names(after: dict[str, int], text: str) -> None:
    from datetime import timedelta

    assert delay(timedelta(**after)) == text


@pytest.mark.parametrize(
    ("after", "text"),
    [({"hours": 24}, "24 hours after entry"), ({"days": 7}, "7 days after entry"),
     ({"days": 1, "hours": 12}, "1 day 12 hours after entry"),
     ({"minutes": 1}, "1 minute after entry"), ({"weeks": 12}, "84 days after entry"),
     ({}, "on entry")],
    ids=["24h", "7d", "36h", "1min", "12w", "zero"],
)  # fmt: skip
def test_edge_labels_say_the_offset_counts_from_entry(after: dict[str, int], text: str) -> None:
    from datetime import timedelta

    assert after_entry(timedelta(**after)) == text


# ---------------------------------------------------------------- ids


def test_status_names_become_safe_ids_and_stay_as_labels(rulesets: dict[str, Ruleset]) -> None:
    graph = build_graph(rulesets["littleworld"].entity("match"))
    node_id = graph.node_id("pre.expired_never_confirmed")
    assert node_id == "pre_expired_never_confirmed"
    assert all(SAFE_ID.match(n.id) for n in graph.nodes)


CLASHING = """
version: 1
entities:
  thing:
    since: created_at
    facts: {created_at: instant, x: bool, y: bool, note: string}
    statuses:
      a.b: 'x and note == "x: y; #1 <z> {w} 50%% & \\"q\\""'
      a_b: y
      a-b: not x
      end: not y
      start: x and y
      choose: {when: otherwise}
"""


def test_awkward_names_and_labels_stay_valid_and_round_trip() -> None:
    graph = build_graph(parse_rules(CLASHING).entity())
    ids = [graph.node_id(name) for name in ("a.b", "a_b", "a-b", "end", "start", "choose")]
    assert len(set(ids)) == len(ids)
    assert all(SAFE_ID.match(i) for i in ids)
    assert graph.node_id("end") == "s_end"  # `end` closes a block in Mermaid
    # States keep their names; the helper nodes are the ones renamed.
    assert graph.node_id("start") == "start"
    assert graph.start != "start"
    assert choice_lines(graph, "first match wins")[0] == (
        '1. x and note == "x: y; #1 <z> {w} 50%% & \\"q\\""',
        "a.b",
    )
    mermaid = render_mermaid([graph])
    check_mermaid(mermaid)
    assert mermaid_edges(mermaid) == dot_edges(render_dot([graph]))


# ---------------------------------------------------------------- escaping


def test_mermaid_text_writes_syntax_characters_as_codes() -> None:
    assert mermaid_text('a: b; "c" <d> #e & 50%') == (
        "a#58; b#59; #quot;c#quot; #lt;d#gt; #35;e #amp; 50#37;"
    )
    assert mermaid_text("two\nlines") == "two lines"
    assert decode_mermaid(mermaid_text('x: "y" <z> # ; & % {}')) == 'x: "y" <z> # ; & % {}'


def test_dot_string_escapes_quotes_and_backslashes() -> None:
    assert dot_string('say "hi" \\ now\nok') == '"say \\"hi\\" \\\\ now\\nok"'


# ---------------------------------------------------------------- Mermaid, read back

_MERMAID_ID = r"(?:\[\*\]|[A-Za-z0-9_]+)"
_DECLARE = re.compile(r'^state "([^"]*)" as ([A-Za-z0-9_]+)$')
_COMPOSITE = re.compile(r'^state "([^"]*)" as ([A-Za-z0-9_]+) \{$')
_CHOICE = re.compile(r"^state ([A-Za-z0-9_]+) <<choice>>$")
_EDGE = re.compile(rf"^({_MERMAID_ID}) --> ({_MERMAID_ID})(?: : (.*))?$")
_DESCRIBE = re.compile(r"^([A-Za-z0-9_]+) : (.*)$")


def decode_mermaid(text: str) -> str:
    """Undo Mermaid character codes: ``#58;`` → ``:``, ``#quot;`` → ``"``."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return chr(int(code)) if code.isdigit() else html.unescape(f"&{code};")

    return re.sub(r"#(\w+);", one, text)


def check_mermaid(text: str) -> None:
    """Fail unless ``text`` is a stateDiagram-v2 this project can stand behind:
    balanced composites, declared endpoints, safe ids, no raw syntax in labels."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[0] == "stateDiagram-v2"
    depth = 0
    declared: list[set[str]] = [set()]
    edges: list[list[tuple[str, str]]] = [[]]
    for line in lines[1:]:
        if m := _COMPOSITE.match(line):
            assert depth == 0, "entities are the only composites"
            depth += 1
            declared.append(set())
            edges.append([])
            label = m.group(1)
        elif line == "}":
            assert depth > 0, "unbalanced }"
            depth -= 1
            block_declared, block_edges = declared.pop(), edges.pop()
            assert all(a in block_declared and b in block_declared for a, b in block_edges)
            continue
        elif m := _DECLARE.match(line):
            label = m.group(1)
            assert m.group(2) not in declared[-1], f"declared twice: {line}"
            declared[-1].add(m.group(2))
        elif m := _CHOICE.match(line):
            declared[-1].add(m.group(1))
            continue
        elif m := _DESCRIBE.match(line):
            assert m.group(1) in declared[-1], f"description of an undeclared state: {line}"
            label = m.group(2)
        elif m := _EDGE.match(line):
            source, target, label = m.group(1), m.group(2), m.group(3) or ""
            assert target != "[*]", "nothing ends a lifecycle"
            edges[-1].append(
                (source if source != "[*]" else target, target)  # [*] needs no declaration
            )
        else:
            pytest.fail(f"not a line of ours: {line!r}")
        # `:` ends a label in Mermaid < 11.13, `;` ends the statement, `"` a
        # quoted name, `<`/`>` may start HTML, `%%` a comment, `#` a code.
        remains = re.sub(r"#\w+;", "", label)
        assert not re.search(r'[:;"<>%{}#]', remains), f"raw syntax in a label: {line!r}"
    assert depth == 0, "unclosed composite"
    assert all(a in declared[0] and b in declared[0] for a, b in edges[0])


def mermaid_edges(text: str) -> list[tuple[str, str, str]]:
    """(source label, target label, edge label) for every edge, decoded."""
    names: dict[str, str] = {}
    found = []
    for line in (line.strip() for line in text.splitlines()):
        if m := _DECLARE.match(line):
            names[m.group(2)] = decode_mermaid(m.group(1)).split(" ⚡ ")[0]
        elif m := _CHOICE.match(line):
            names[m.group(1)] = m.group(1).split("__")[-1]
        elif m := _EDGE.match(line):
            source, target = m.group(1), m.group(2)
            found.append(
                (names.get(source, "[*]"), names[target], decode_mermaid(m.group(3) or ""))
            )
    return sorted(found)


# ---------------------------------------------------------------- DOT, read back


def dot_edges(text: str) -> list[tuple[str, str, str]]:
    """Parse ``text`` with pydot and list its edges like ``mermaid_edges``."""
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None
    assert len(graphs) == 1
    names: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []

    def unquote(value: str) -> str:
        assert value[0] == value[-1] == '"', value
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])

    def walk(graph: pydot.Dot | pydot.Subgraph) -> None:
        for node in graph.get_nodes():
            if node.get_name() in ("node", "edge", "graph"):
                continue  # default attribute statements
            node_id, label = unquote(node.get_name()), unquote(node.get("label"))
            # Named as mermaid_edges names them: the start is [*], a choice its
            # unprefixed id, a state its name without the event.
            if label == "":
                names[node_id] = "[*]"
            elif node.get("shape") == "diamond":
                names[node_id] = node_id.split("__")[-1]
            else:
                names[node_id] = label.split("\n")[0]
        for e in graph.get_edges():
            label = e.get("label")
            source, destination = e.get_source(), e.get_destination()
            assert isinstance(source, str)
            assert isinstance(destination, str)
            edges.append((unquote(source), unquote(destination), unquote(label) if label else ""))
        for sub in graph.get_subgraphs():
            walk(sub)

    walk(graphs[0])
    return sorted((names[a], names[b], label) for a, b, label in edges)


# ---------------------------------------------------------------- both renderers, every file


@pytest.mark.parametrize("name", list(RULE_FILES))
def test_mermaid_output_is_structurally_valid(rulesets: dict[str, Ruleset], name: str) -> None:
    check_mermaid(render(rulesets[name], "mermaid"))


@pytest.mark.parametrize("name", list(RULE_FILES))
def test_dot_output_parses_and_draws_every_edge(rulesets: dict[str, Ruleset], name: str) -> None:
    graphs = build_graphs(rulesets[name])
    edges = dot_edges(render(rulesets[name], "dot"))
    assert len(edges) == sum(len(g.edges) for g in graphs)


@pytest.mark.parametrize("name", list(RULE_FILES))
def test_both_renderers_draw_the_same_edges(rulesets: dict[str, Ruleset], name: str) -> None:
    ruleset = rulesets[name]
    mermaid = mermaid_edges(render(ruleset, "mermaid"))
    assert mermaid == dot_edges(render(ruleset, "dot"))

    def node_name(graph: Graph, node_id: str) -> str:
        # How both readers name a node: choices have no label of their own in Mermaid.
        kind = graph.node(node_id).kind
        if kind is NodeKind.START:
            return "[*]"
        return node_id if kind is NodeKind.CHOICE else graph.node(node_id).label

    model = sorted(
        (node_name(g, e.source), node_name(g, e.target), e.label)
        for g in build_graphs(ruleset)
        for e in g.edges
    )
    assert mermaid == model


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
@pytest.mark.parametrize("name", list(RULE_FILES))
def test_graphviz_itself_accepts_the_dot_output(rulesets: dict[str, Ruleset], name: str) -> None:
    done = subprocess.run(
        ["dot", "-Tsvg"], input=render(rulesets[name], "dot"), capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout


def test_several_entities_become_one_composite_each_with_its_own_start(
    rulesets: dict[str, Ruleset],
) -> None:
    mermaid = render(rulesets["rallia"], "mermaid")
    assert 'state "match" as match {' in mermaid
    assert 'state "participant" as participant {' in mermaid
    assert "[*] --> match__choose" in mermaid
    assert "[*] --> participant__choose" in mermaid
    dot = render(rulesets["rallia"], "dot")
    assert dot.count('label="match";') == 1
    assert dot.count('label="participant";') == 1


def test_one_entity_keeps_short_ids(rulesets: dict[str, Ruleset]) -> None:
    mermaid = render(rulesets["rallia"], "mermaid", entity="match")
    assert "[*] --> choose" in mermaid
    assert "participant" not in mermaid
    check_mermaid(mermaid)


# ---------------------------------------------------------------- the diagram follows the rules

BASE = """
version: 1
entities:
  user:
    facts: {ok: bool}
    actions:
      signup: {enters: registered}
    statuses:
      registered:
        ladder: {_H24: 24h}
"""


def test_the_diagram_changes_when_the_rules_change() -> None:
    before = parse_rules(BASE)
    after = parse_rules(
        BASE.replace("{enters: registered}", "{enters: registered}\n      paid: {enters: paying}")
        + "      paying:\n        ladder: {_J7: 7d}\n"
    )
    for fmt in ("mermaid", "dot"):
        old, new = render(before, fmt), render(after, fmt)
        assert "paying_J7" not in old
        assert "paying_J7" in new
    assert mermaid_edges(render(after, "mermaid")) == sorted(
        [*mermaid_edges(render(before, "mermaid")),
         ("[*]", "paying", "paid"), ("paying", "paying_J7", "7 days after entry")]
    )  # fmt: skip
    slower = parse_rules(BASE.replace("_H24: 24h", "_H24: 48h"))
    assert "registered --> registered_H24 : 2 days after entry" in render(slower, "mermaid")


# ---------------------------------------------------------------- the command


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["graph", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_prints_mermaid_by_default(rulesets: dict[str, Ruleset]) -> None:
    code, out, _ = invoke(str(RULE_FILES["blousebrothers"]))
    assert code == 0
    assert out == render(rulesets["blousebrothers"], "mermaid")


def test_cli_prints_dot_for_one_entity(rulesets: dict[str, Ruleset]) -> None:
    code, out, _ = invoke(str(RULE_FILES["rallia"]), "--format", "dot", "--entity", "participant")
    assert code == 0
    assert out.startswith("digraph ")
    assert "reminder_24h" in out
    assert "in_progress" not in out  # a match status


def test_cli_invalid_rules_exit_2_with_located_messages(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(BASE.replace("enters: registered", "enters: registred"))
    code, out, err = invoke(str(rules))
    assert code == 2
    assert out == ""
    assert f"{rules}:7: entities ==> user ==> actions ==> signup" in err
    assert "did you mean 'registered'" in err


def test_cli_unknown_entity_is_a_usage_error_naming_the_choices() -> None:
    code, _, err = invoke(str(RULE_FILES["rallia"]), "--entity", "matc")
    assert code == 2
    assert "no entity 'matc'" in err
    assert "did you mean 'match'" in err
    assert "entities: match, participant" in err


def test_cli_rejects_an_unknown_format() -> None:
    code, _, err = invoke(str(RULE_FILES["rallia"]), "--format", "png")
    assert code == 2
    assert "'png' is not one of" in err


def test_the_diagram_in_the_readme_is_the_current_one(rulesets: dict[str, Ruleset]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pasted = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert pasted == render(rulesets["blousebrothers"], "mermaid"), (
        "README.md's diagram is stale: paste the output of `mailsync graph rules.yaml` again"
    )


def test_render_refuses_an_unknown_format(rulesets: dict[str, Ruleset]) -> None:
    with pytest.raises(ValueError, match="unknown diagram format 'svg'"):
        render(rulesets["rallia"], "svg")
