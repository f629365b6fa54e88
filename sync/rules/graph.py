"""Rules → a graph model → Mermaid or Graphviz DOT (``mailsync graph``).

The diagram of a lifecycle is *generated* from the ``Ruleset`` so that it
cannot drift from the rules, which a hand-drawn diagram always does. Drawing
goes through an intermediate model (``Graph``: frozen nodes, edges and
clusters) and the two renderers only translate that model into text: what is
drawn is decided once, in ``build_graph``, and the tests can check it without
parsing either output format.

What is drawn, per entity:

* every state, and its ladder as a chain of steps, each edge labelled with
  the step's offset from entering the state ("7 days after entry": an offset
  counts from the entry, not from the step before);
* ``then``: from the last step to the state it enters afresh ("31 days after
  entry");
* ``loop``: from the last step back to the step it returns to, with the
  delay and the period of the cycle it starts;
* actions mode: one edge per status-giving action from the start, labelled
  with the action (and its code and event); the re-initialisation priority
  list as a ``reinit`` choice node with numbered edges ("1. if not
  has_wallet"), and the whole list in order in a note beside it;
* condition mode: the priority list as a choice node from the start, edges
  numbered top to bottom and labelled with the condition text;
* events sent on entering a state, as ``⚡ name`` after the state's name.

Status names may contain ``.`` and ``-``, which neither format accepts in an
identifier, so every node gets a sanitized id and keeps its real name as its
label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sync.rules.durations import format_duration
from sync.rules.expressions import unparse
from sync.rules.model import Action, Choice, Entity, Mode, Ruleset, State

# ---------------------------------------------------------------- the model


class NodeKind(Enum):
    START = "start"  # where every entity begins: [*] in Mermaid, a dot in DOT
    STATE = "state"  # a state as entered (its ladder's first step)
    STEP = "step"  # a later step of a ladder (registered_H24 …)
    CHOICE = "choice"  # a priority list: first matching line wins
    NOTE = "note"  # information with no place on an edge (actions that enter nothing)


class EdgeKind(Enum):
    ACTION = "action"  # an action enters a state
    STEP = "step"  # time moves along a ladder
    THEN = "then"  # time enters another state afresh
    LOOP = "loop"  # time goes back to an earlier step, for ever
    REINIT = "reinit"  # the start of a re-initialisation, and its priority lines
    CONDITION = "condition"  # condition mode: the start and its priority lines


@dataclass(frozen=True)
class Node:
    id: str  # safe in both formats: [A-Za-z0-9_]+, not a keyword
    label: str  # the real name, as marketers wrote it
    kind: NodeKind
    event: str | None = None  # event sent on entering this state
    description: str | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    kind: EdgeKind


@dataclass(frozen=True)
class Cluster:
    """A state's ladder: the nodes of its steps, drawn as one group where the
    format allows edges to cross group borders (DOT)."""

    id: str
    label: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Graph:
    """One entity's lifecycle."""

    name: str
    mode: Mode
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def node_id(self, label: str) -> str:
        """The id of the state or step whose real name is ``label``."""
        for node in self.nodes:
            if node.label == label and node.kind in (NodeKind.STATE, NodeKind.STEP):
                return node.id
        raise KeyError(label)

    @property
    def start(self) -> str:
        return next(node.id for node in self.nodes if node.kind is NodeKind.START)

    def edges_from(self, node_id: str) -> tuple[Edge, ...]:
        return tuple(edge for edge in self.edges if edge.source == node_id)


# ---------------------------------------------------------------- building

# Words that read as syntax when used as a bare id, in Mermaid's state
# diagrams or in DOT. Compared lowercased.
_RESERVED = frozenset(
    {
        "state", "note", "end", "as", "direction", "class", "classdef", "style",
        "click", "hide", "scale", "left", "right", "of", "tb", "bt", "lr", "rl",
        "acctitle", "accdescr", "graph", "digraph", "subgraph", "node", "edge",
        "strict", "default",
    }
)  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
SAFE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Ids:
    """Hands out ids that are unique within one graph and safe in both formats.

    Two names may sanitize alike (``pre.x`` and ``pre_x``): the later one
    gets a numbered suffix rather than silently merging two states.
    """

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def new(self, name: str) -> str:
        base = _UNSAFE.sub("_", name) or "_"
        if base[0].isdigit() or base.lower() in _RESERVED:
            base = "s_" + base
        candidate, n = base, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{base}_{n}"
        self.taken.add(candidate)
        return candidate


_DAY = timedelta(days=1)


def delay(after: timedelta) -> str:
    """An offset from entering a state, as drawn on an edge: ``+24h``, ``+7d``, ``+31d``.

    Spelt the way ladders are written and named (``_H24`` at 24h, ``_J7`` at
    7d, ``_M1`` at 30d) rather than in ``format_duration``'s canonical form,
    which would turn them into ``1d`` and ``1w``.
    """
    if after == _DAY:
        return "+24h"
    if after > _DAY and after % _DAY == timedelta(0):
        return f"+{after // _DAY}d"
    return "+" + format_duration(after)


_UNIT_WORDS = {"w": "week", "d": "day", "h": "hour", "min": "minute", "s": "second"}


def in_words(after: timedelta) -> str:
    """``timedelta(days=7)`` → ``"7 days"``, in the units ladders are written in."""
    parts = re.findall(r"(\d+)([a-z]+)", delay(after))
    return " ".join(
        f"{count} {_UNIT_WORDS[unit]}{'' if count == '1' else 's'}" for count, unit in parts
    )


def after_entry(after: timedelta) -> str:
    """An edge's offset, said as what it is: ``"7 days after entry"``.

    Every offset of a ladder, ``then`` or ``loop`` counts from entering the
    state; "+7d" on an edge from ``_H24`` to ``_J7`` read as "seven days later"."""
    return f"{in_words(after)} after entry" if after else "on entry"


def _action_label(action: Action) -> str:
    label = action.name
    if action.code is not None:
        label += f" (code {action.code})"
    if action.event is not None:
        label += f" ⚡ {action.event.name}"
    return label


def _numbered(choices: Iterable[Choice], word: str = "") -> list[tuple[str, str]]:
    """(state, "3. condition") for each line of a priority list; ``word`` goes
    before each condition (``"if "``), not before ``otherwise``."""
    return [
        (
            choice.state,
            f"{i}. {word}{unparse(choice.when)}" if choice.when is not None else f"{i}. otherwise",
        )
        for i, choice in enumerate(choices, start=1)
    ]


#: First line of the note listing the re-initialisation in order.
REINIT_TITLE = "mailsync reinit: the first line that holds wins"


def build_graph(entity: Entity) -> Graph:
    """The drawing of one entity's lifecycle, as a graph model."""
    ids = _Ids()
    nodes: list[Node] = []
    edges: list[Edge] = []
    clusters: list[Cluster] = []
    # Each state's step ids, in ladder order; states first so that their ids
    # stay their own names and the helper nodes are the ones renamed on a clash.
    steps: dict[str, list[str]] = {}
    for state in entity.states.values():
        steps[state.name] = [ids.new(name) for name in state.status_names]

    start = ids.new("start")
    nodes.append(Node(start, "start", NodeKind.START))

    for state in entity.states.values():
        _draw_state(state, steps, nodes, edges, clusters, ids)

    if entity.mode is Mode.CONDITIONS:
        choose = ids.new("choose")
        nodes.append(Node(choose, "first match wins", NodeKind.CHOICE))
        edges.append(Edge(start, choose, "", EdgeKind.CONDITION))
        for state_name, label in _numbered(entity.choices):
            edges.append(Edge(choose, steps[state_name][0], label, EdgeKind.CONDITION))
    else:
        for action in entity.actions.values():
            if action.enters is not None:
                edges.append(
                    Edge(start, steps[action.enters][0], _action_label(action), EdgeKind.ACTION)
                )
        silent = [a for a in entity.actions.values() if a.enters is None]
        if silent:
            # They change no status, so they have no edge; listing them keeps
            # the drawing a complete picture of what the rules react to.
            text = "status unchanged by " + " · ".join(_action_label(a) for a in silent)
            nodes.append(Node(ids.new("status_unchanged"), text, NodeKind.NOTE))

    if entity.reinit:
        reinit = ids.new("reinit")
        nodes.append(Node(reinit, "reinit", NodeKind.CHOICE))
        edges.append(Edge(start, reinit, "mailsync reinit", EdgeKind.REINIT))
        lines = _numbered(entity.reinit, "if ")
        for state_name, label in lines:
            edges.append(Edge(reinit, steps[state_name][0], label, EdgeKind.REINIT))
        # Eight edges fanning out of one diamond are hard to read in order: the
        # note says the whole list top to bottom, each line with its status.
        listing = [f"{label} → {state_name}" for state_name, label in lines]
        nodes.append(
            Node(ids.new("reinit_order"), "\n".join([REINIT_TITLE, *listing]), NodeKind.NOTE)
        )

    return Graph(entity.name, entity.mode, tuple(nodes), tuple(edges), tuple(clusters))


def _draw_state(
    state: State,
    steps: Mapping[str, list[str]],
    nodes: list[Node],
    edges: list[Edge],
    clusters: list[Cluster],
    ids: _Ids,
) -> None:
    own = steps[state.name]
    for i, node_id in enumerate(own):
        nodes.append(
            Node(
                node_id,
                state.status_name(i),
                NodeKind.STATE if i == 0 else NodeKind.STEP,
                event=state.event.name if i == 0 and state.event is not None else None,
                description=state.description if i == 0 else None,
            )
        )
    for i in range(1, len(own)):
        # Every offset counts from entering the state, not from the previous step.
        edges.append(Edge(own[i - 1], own[i], after_entry(state.steps[i].after), EdgeKind.STEP))
    if len(own) > 1:
        clusters.append(Cluster(ids.new(f"ladder_{state.name}"), state.name, tuple(own)))
    if state.then is not None:
        target = steps[state.then.enter][0]
        edges.append(Edge(own[-1], target, after_entry(state.then.after), EdgeKind.THEN))
    if state.loop is not None:
        back = state.steps[state.loop.back_to]
        period = in_words(state.loop.after - back.after)
        label = f"{after_entry(state.loop.after)}, then every {period}"
        edges.append(Edge(own[-1], own[state.loop.back_to], label, EdgeKind.LOOP))


def build_graphs(ruleset: Ruleset, entity: str | None = None) -> tuple[Graph, ...]:
    """Every entity's graph, or only the named one (``KeyError`` if unknown)."""
    if entity is not None:
        return (build_graph(ruleset.entities[entity]),)
    return tuple(build_graph(e) for e in ruleset.entities.values())


# ---------------------------------------------------------------- helpers shared by renderers


def _node_text(node: Node) -> str:
    return node.label if node.event is None else f"{node.label} ⚡ {node.event}"


class _Namespaces:
    """Ids stay short for one entity; with several, each entity's ids get its
    name in front, so that ``match`` and ``participant`` may share status names."""

    def __init__(self, graphs: Sequence[Graph]) -> None:
        entity_ids = _Ids()
        self.several = len(graphs) > 1
        self.prefix = {graph.name: entity_ids.new(graph.name) for graph in graphs}

    def __call__(self, graph: Graph, node_id: str) -> str:
        return f"{self.prefix[graph.name]}__{node_id}" if self.several else node_id


# ---------------------------------------------------------------- Mermaid

# Mermaid reads `#name;` / `#123;` as a character code, so `#` itself is
# written first. `:` ends a state description and, before Mermaid 11.13, a
# transition label; `;` ends a statement; `"` closes a quoted state name;
# `<`, `>` and `&` could start HTML, which Mermaid sanitizes away; `%%` starts
# a comment. Written as codes they all reach the drawing unchanged.
_MERMAID_CODES = {
    "#": "#35;",
    ":": "#58;",
    ";": "#59;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "%": "#37;",
    "{": "#123;",
    "}": "#125;",
}
_MERMAID_SPECIAL = re.compile("[" + re.escape("".join(_MERMAID_CODES)) + "]")


def mermaid_text(text: str) -> str:
    """``text`` made safe for a Mermaid state name or transition label."""
    one_line = " ".join(text.split())
    return _MERMAID_SPECIAL.sub(lambda m: _MERMAID_CODES[m.group()], one_line)


def render_mermaid(graphs: Sequence[Graph]) -> str:
    """A ``stateDiagram-v2``; several entities become composite states.

    Ladders are drawn flat, not as composite states: Mermaid draws edges that
    cross a composite's border badly or refuses them, and every ladder has
    such edges (actions enter it, ``then`` leaves it).
    """
    local = _Namespaces(graphs)
    lines = ["stateDiagram-v2"]
    for graph in graphs:
        indent = "    "
        if local.several:
            # The bare prefix cannot clash: every node id adds "__" to it.
            entity_id = local.prefix[graph.name]
            lines.append(f'{indent}state "{mermaid_text(graph.name)}" as {entity_id} {{')
            indent += "    "

        def ref(node_id: str, graph: Graph = graph) -> str:
            if graph.node(node_id).kind is NodeKind.START:
                return "[*]"
            return local(graph, node_id)

        for node in graph.nodes:
            if node.kind is NodeKind.START:
                continue
            if node.kind is NodeKind.CHOICE:
                lines.append(f"{indent}state {ref(node.id)} <<choice>>")
            else:
                # A note of several lines: the first names the box, each next one
                # is a description line of it (Mermaid stacks them in order).
                first, *more = _node_text(node).split("\n")
                lines.append(f'{indent}state "{mermaid_text(first)}" as {ref(node.id)}')
                lines.extend(f"{indent}{ref(node.id)} : {mermaid_text(m)}" for m in more)
        for edge in graph.edges:
            label = f" : {mermaid_text(edge.label)}" if edge.label else ""
            lines.append(f"{indent}{ref(edge.source)} --> {ref(edge.target)}{label}")
        if local.several:
            lines.append("    }")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- DOT


def dot_string(text: str, *, left: bool = False) -> str:
    """``text`` as a DOT double-quoted string (backslash first: it escapes the rest).
    With ``left``, every line is left-justified (``\\l``), as a list reads."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if left:
        escaped = escaped.replace("\n", "\\l") + "\\l"
    else:
        escaped = escaped.replace("\n", "\\n")
    return f'"{escaped}"'


_DOT_NODE = {
    NodeKind.START: 'shape=circle, style=filled, fillcolor=black, label="", width=0.2',
    NodeKind.STATE: "shape=box, style=rounded",
    NodeKind.STEP: 'shape=box, style="rounded,dashed"',
    NodeKind.CHOICE: "shape=diamond",
    NodeKind.NOTE: "shape=note",
}
_DOT_EDGE = {
    EdgeKind.ACTION: "color=black",
    EdgeKind.STEP: "color=gray40",
    EdgeKind.THEN: "color=blue, style=bold",
    EdgeKind.LOOP: "color=darkgreen, style=dashed",
    EdgeKind.REINIT: "color=darkorange, style=dotted",
    EdgeKind.CONDITION: "color=black",
}


def render_dot(graphs: Sequence[Graph], name: str = "lifecycle") -> str:
    """A Graphviz ``digraph``: one cluster per entity, one per ladder inside it."""
    local = _Namespaces(graphs)
    lines = [
        f"digraph {dot_string(name)} {{",
        "    rankdir=LR;",
        '    fontname="Helvetica";',
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for index, graph in enumerate(graphs):
        lines.append(f"    subgraph cluster_{index} {{")
        lines.append(f"        label={dot_string(graph.name)};")
        in_ladder = {node_id for cluster in graph.clusters for node_id in cluster.nodes}

        def node_line(node: Node, indent: str, graph: Graph = graph) -> str:
            label = dot_string(_dot_label(node), left=node.kind is NodeKind.NOTE)
            attrs = f"{_DOT_NODE[node.kind]}, label={label}"
            if node.description:
                attrs += f", tooltip={dot_string(node.description)}"
            return f"{indent}{dot_string(local(graph, node.id))} [{attrs}];"

        for node in graph.nodes:
            if node.id not in in_ladder:
                lines.append(node_line(node, "        "))
        for number, cluster in enumerate(graph.clusters):
            lines.append(f"        subgraph cluster_{index}_{number} {{")
            lines.append(f'            label={dot_string(cluster.label)}; style="rounded,dashed";')
            for node_id in cluster.nodes:
                lines.append(node_line(graph.node(node_id), "            "))
            lines.append("        }")
        for edge in graph.edges:
            attrs = _DOT_EDGE[edge.kind]
            if edge.label:
                attrs += f", label={dot_string(edge.label)}"
            source, target = local(graph, edge.source), local(graph, edge.target)
            lines.append(f"        {dot_string(source)} -> {dot_string(target)} [{attrs}];")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_label(node: Node) -> str:
    if node.kind is NodeKind.START:
        return ""
    return node.label if node.event is None else f"{node.label}\n⚡ {node.event}"


#: The output formats ``mailsync graph --format`` offers.
FORMATS = ("mermaid", "dot")


def render(ruleset: Ruleset, fmt: str = "mermaid", entity: str | None = None) -> str:
    """The diagram of ``ruleset`` (or of one entity) in ``fmt``, one of ``FORMATS``."""
    graphs = build_graphs(ruleset, entity)
    if fmt == "mermaid":
        return render_mermaid(graphs)
    if fmt == "dot":
        return render_dot(graphs, name=ruleset.file)
    raise ValueError(f"unknown diagram format {fmt!r}; expected one of {', '.join(FORMATS)}")
