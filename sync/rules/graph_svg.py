"""The lifecycle as an SVG drawn by mailsync itself (``mailsync graph --format svg``).

Mermaid and DOT hand the layout to another program, which lays a lifecycle out
as a general graph: fifty statuses become a tangle. Lifecycles are ladders, so
this renderer uses a fixed layout made for them, with no external tool:

* one row per entered state, its ladder's steps along the row by their
  suffix (``_H24``, ``_J7`` …), each step edge labelled with its offset from
  the entry into the state ("7 days after entry");
* timed exits at the end of the row: ``then`` as an arrow to the state it
  enters (a link to that row), ``loop`` as an arc back to its step;
* to the left, what enters the row: the actions, and each priority list
  (re-initialisation, condition mode's ``when:`` order) as its own column
  whose numbers give the order, first match wins.

Input is ``sync.rules.graph``'s model (what is drawn is decided there once), plus
the rule model for the offsets themselves, so the wording here does not
depend on how the text renderers spell their labels. ``Annotations`` lets the
dashboard put live counts and flows on the same drawing.

Every node and edge is a ``<g>`` with ``data-`` attributes naming what it
stands for, so tests (and curious users) can read the drawing back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sync.rules.durations import format_duration
from sync.rules.graph import Edge, EdgeKind, Graph, NodeKind, build_graphs
from sync.rules.model import Entity, Ruleset

SVG_NS = "http://www.w3.org/2000/svg"

# Geometry, in SVG user units (px at 100 %). Text widths are estimated from
# character counts: generous, since no font metrics are available here.
FONT = 12.0
SMALL = 10.5
CHAR = 0.62  # average glyph width as a share of the font size
PAD = 16.0
ROW_GAP = 10.0
LINE = 14.0
BOX_H = 26.0
BOX_TOP = LINE * 1.1  # from a row's top to its boxes: room for the offset labels
GAP = 86.0  # between two steps of a ladder: room for a two-line offset label
COLUMN_GAP = 18.0
LADDER_HEADING = "status, then its ladder (offsets count from entry)"
MAX_CONDITION = 34  # characters of a condition shown in a priority column

# Colours with at least 4.5:1 contrast on white for text (WCAG AA).
INK = "#1f2328"
MUTED = "#57606a"
STATE_FILL = "#ddf4ff"
STEP_FILL = "#f6f8fa"
EDGE_COLOURS = {
    EdgeKind.ACTION: "#1f2328",
    EdgeKind.STEP: "#57606a",
    EdgeKind.THEN: "#0550ae",
    EdgeKind.LOOP: "#116329",
    EdgeKind.REINIT: "#953800",
    EdgeKind.CONDITION: "#1f2328",
}


@dataclass(frozen=True)
class Annotations:
    """Live figures to draw on an entity's lifecycle (the dashboard's view).

    ``flows`` are keyed by (from status, to status); ``entries`` by status,
    for entries not explained by a timed edge (actions, conditions, reinit).
    Each flow is (last 24 hours, last 7 days).
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    total: int = 0
    flows: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    entries: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    href: Callable[[str], str] | None = None


def words(after: timedelta) -> str:
    """A delay in words: ``24 hours``, ``7 days``, ``90 minutes``.

    One day is said as ``24 hours``, the way ladders name that step (``_H24``).
    """
    seconds = int(after.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 and seconds != 86400 * (unit == "day"):
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return format_duration(after)


def after_entry(after: timedelta) -> str:
    """An offset counted from entering a state, as an edge says it."""
    return f"{words(after)} after entry"


def share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "0%"


def _width(text: str, size: float = FONT) -> float:
    return len(text) * size * CHAR


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Row:
    state: str  # the state's name
    node_ids: list[str]  # state node first, then its steps
    labels: list[str]  # the statuses, in ladder order
    entries: list[Edge]  # actions (or nothing) entering the state
    choices: dict[str, list[Edge]]  # choice node id -> its numbered lines entering the state
    exits: list[Edge]  # then / loop
    steps: list[Edge]
    event: str | None
    description: str | None


def _rows(graph: Graph) -> list[_Row]:
    ladders = {cluster.nodes[0]: list(cluster.nodes) for cluster in graph.clusters}
    rows: list[_Row] = []
    for node in graph.nodes:
        if node.kind is not NodeKind.STATE:
            continue
        ids = ladders.get(node.id, [node.id])
        own = set(ids)
        entering = [e for e in graph.edges if e.target == node.id]
        choices: dict[str, list[Edge]] = {}
        for edge in entering:
            if edge.kind in (EdgeKind.REINIT, EdgeKind.CONDITION):
                choices.setdefault(edge.source, []).append(edge)
        rows.append(
            _Row(
                state=node.label,
                node_ids=ids,
                labels=[graph.node(i).label for i in ids],
                entries=[e for e in entering if e.kind is EdgeKind.ACTION],
                choices=choices,
                exits=[
                    e
                    for e in graph.edges
                    if e.source in own and e.kind in (EdgeKind.THEN, EdgeKind.LOOP)
                ],
                steps=[e for e in graph.edges if e.kind is EdgeKind.STEP and e.source in own],
                event=node.event,
                description=node.description,
            )
        )
    return rows


def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    """A child element; ``font_size=`` becomes ``font-size``, ``class_`` ``class``,
    and None leaves the attribute out."""
    element = ET.SubElement(
        parent,
        tag,
        {k.rstrip("_").replace("_", "-"): _attr(v) for k, v in attrs.items() if v is not None},
    )
    if text is not None:
        element.text = text
    return element


def _attr(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return str(value)


def _text(
    parent: ET.Element, x: float, y: float, text: str, *, size: float = FONT, **attrs: object
) -> ET.Element:
    return add(parent, "text", text, x=x, y=y, font_size=size, **attrs)


def _arrow(parent: ET.Element, d: str, kind: EdgeKind) -> ET.Element:
    dash = {EdgeKind.LOOP: "5 3", EdgeKind.REINIT: "2 3"}.get(kind)
    return add(
        parent,
        "path",
        d=d,
        fill="none",
        stroke=EDGE_COLOURS[kind],
        stroke_width=1.4,
        stroke_dasharray=dash,
        marker_end="url(#arrow)",
    )


def _flow_text(flow: tuple[int, int] | None) -> str | None:
    if flow is None:
        return None
    return f"24h {flow[0]:,} · 7d {flow[1]:,}"


class _Layout:
    """Column positions and sizes for one entity, from its rows' contents."""

    def __init__(
        self,
        graph: Graph,
        rows: list[_Row],
        offsets: Mapping[tuple[str, str], str],
        annotated: bool,
    ) -> None:
        def offsets_of(edge: Edge) -> str:
            key = (graph.node(edge.source).label, graph.node(edge.target).label)
            return offsets.get(key, edge.label)

        self.annotated = annotated
        self.choice_nodes = [n for n in graph.nodes if n.kind is NodeKind.CHOICE]
        x = PAD
        self.choice_x: dict[str, tuple[float, float]] = {}
        for node in self.choice_nodes:
            lines = [_choice_text(e) for r in rows for e in r.choices.get(node.id, [])] + [
                _choice_title(node.label)
            ]
            width = max(_width(t, SMALL) for t in lines)
            self.choice_x[node.id] = (x, width)
            x += width + COLUMN_GAP
        entry_lines = [e.label for r in rows for e in r.entries]
        entry_lines += [f"on entry ⚡ {r.event}" for r in rows if r.event]
        if annotated:
            entry_lines.append("entered 24h 000,000 · 7d 000,000")
        self.entry_x = x
        self.entry_w = max([_width(t, SMALL) for t in entry_lines] + [_width("entered by", SMALL)])
        x += self.entry_w + COLUMN_GAP + 24  # room for the arrow into the state box
        self.state_x = x
        figures = _width("000,000 · 100.0%", SMALL) + 12 if annotated else 0.0
        self.state_w = max([_width(r.state) + 16 for r in rows] + [96.0, figures])
        suffixes = [label[len(r.state) :] or label for r in rows for label in r.labels[1:]]
        self.step_w = max([_width(s) + 16 for s in suffixes] + [56.0, figures])
        longest = max((len(r.labels) for r in rows), default=1)
        self.exit_x = self.state_x + self.state_w + (longest - 1) * (GAP + self.step_w) + GAP
        exit_lines = [_exit_text(graph, e) for r in rows for e in r.exits]
        exit_lines += [label for r in rows for e in r.exits for label in [offsets_of(e)]]
        self.exit_w = max([_width(t, SMALL) for t in exit_lines] + [_width("timed exit", SMALL)])
        self.exit_x = max(self.exit_x, self.state_x + _width(LADDER_HEADING, SMALL) + COLUMN_GAP)
        self.width = self.exit_x + self.exit_w + PAD
        self.box_h = BOX_H + (LINE if annotated else 0.0)

    def box_x(self, index: int) -> float:
        if index == 0:
            return self.state_x
        return self.state_x + self.state_w + GAP + (index - 1) * (GAP + self.step_w)

    def box_w(self, index: int) -> float:
        return self.state_w if index == 0 else self.step_w

    def row_height(self, row: _Row) -> float:
        entry_lines = len(row.entries) + (1 if row.event else 0) + (1 if self.annotated else 0)
        choice_lines = max((len(v) for v in row.choices.values()), default=0)
        exit_lines = 2 * len(row.exits) + (len(row.exits) if self.annotated else 0)
        text = max(entry_lines, choice_lines, exit_lines, 1) * LINE + 4
        return max(text, BOX_TOP + self.box_h + _loop_room(row)) + ROW_GAP


def _loop_room(row: _Row) -> float:
    """Space under the boxes for a loop's arc back along the row."""
    return 16.0 if any(e.kind is EdgeKind.LOOP for e in row.exits) else 4.0


def _choice_title(label: str) -> str:
    return "re-initialisation, first match wins" if label == "reinit" else "when: first match wins"


def _choice_text(edge: Edge) -> str:
    number, _, condition = edge.label.partition(". ")
    return f"{number}. {_short(condition, MAX_CONDITION)}"


def _exit_text(graph: Graph, edge: Edge) -> str:
    target = graph.node(edge.target).label
    if edge.kind is EdgeKind.LOOP:
        return f"↺ back to {target}"
    return f"→ {target}"


def offsets(entity: Entity) -> dict[tuple[str, str], str]:
    """(from status, to status) -> the timed edge's label, in words."""
    labels: dict[tuple[str, str], str] = {}
    for state in entity.states.values():
        names = state.status_names
        for i in range(1, len(names)):
            labels[(names[i - 1], names[i])] = after_entry(state.steps[i].after)
        if state.then is not None:
            target = entity.states[state.then.enter].status_names[0]
            labels[(names[-1], target)] = after_entry(state.then.after)
        if state.loop is not None:
            back = state.steps[state.loop.back_to]
            period = words(state.loop.after - back.after)
            labels[(names[-1], names[state.loop.back_to])] = (
                f"{after_entry(state.loop.after)}, then every {period}"
            )
    return labels


def render_svg(
    ruleset: Ruleset,
    entity: str | None = None,
    annotations: Mapping[str, Annotations] | None = None,
    *,
    standalone: bool = True,
) -> str:
    """The SVG of ``ruleset`` (or of one entity), optionally with live figures
    per entity. ``standalone`` adds the XML declaration for a file of its own;
    the dashboard inlines the drawing in HTML without it."""
    graphs = build_graphs(ruleset, entity)
    root = ET.Element("svg", {"xmlns": SVG_NS, "role": "img", "aria-labelledby": "lifecycle-title"})
    title = add(root, "title", f"Lifecycle of {', '.join(g.name for g in graphs)} ({ruleset.file})")
    title.set("id", "lifecycle-title")
    defs = add(root, "defs")
    marker = add(
        defs, "marker", id="arrow", viewBox="0 0 10 10", refX=9, refY=5,
        markerWidth=7, markerHeight=7, orient="auto-start-reverse",
    )  # fmt: skip
    add(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill="context-stroke")
    add(
        root, "style",
        "text{font-family:system-ui,'DejaVu Sans',Arial,sans-serif;fill:" + INK + "}"
        ".muted{fill:" + MUTED + "}.node rect{stroke:#57606a}"
        "a:focus rect,a:hover rect{stroke:#0969da;stroke-width:3}",
    )  # fmt: skip
    y = PAD
    width = 0.0
    for graph in graphs:
        notes = (annotations or {}).get(graph.name)
        labels = offsets(ruleset.entities[graph.name])
        layout = _Layout(graph, _rows(graph), labels, notes is not None)
        y = _draw_entity(root, graph, labels, layout, y, notes)
        width = max(width, layout.width)
        y += PAD
    root.set("width", _attr(width))
    root.set("height", _attr(y))
    root.set("viewBox", f"0 0 {_attr(width)} {_attr(y)}")
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n") if standalone else body


def _draw_entity(
    root: ET.Element,
    graph: Graph,
    offsets: Mapping[tuple[str, str], str],
    layout: _Layout,
    y: float,
    notes: Annotations | None,
) -> float:
    group = add(root, "g", class_="entity", data_entity=graph.name)
    heading = f"{graph.name} ({graph.mode.value} mode)"
    if notes is not None:
        heading += f" · {notes.total:,} entities"
    _text(group, PAD, y + FONT, heading, size=FONT + 3, font_weight="bold")
    y += FONT + 3 + LINE
    for node_id, (x, _) in layout.choice_x.items():
        _text(group, x, y, _choice_title(graph.node(node_id).label), size=SMALL, class_="muted")
    _text(group, layout.entry_x + layout.entry_w, y, "entered by", size=SMALL, class_="muted",
          text_anchor="end")  # fmt: skip
    _text(
        group, layout.state_x, y,
        LADDER_HEADING,
        size=SMALL, class_="muted",
    )  # fmt: skip
    _text(group, layout.exit_x, y, "timed exit", size=SMALL, class_="muted")
    y += LINE * 0.6
    for row in _rows(graph):
        y = _draw_row(group, graph, row, layout, y, offsets, notes)
    silent = [n for n in graph.nodes if n.kind is NodeKind.NOTE]
    for node in silent:
        y += LINE
        note = add(group, "g", class_="note", data_node=node.id)
        _text(note, PAD, y, node.label, size=SMALL, class_="muted")
    return y


def _draw_row(
    parent: ET.Element,
    graph: Graph,
    row: _Row,
    layout: _Layout,
    top: float,
    offsets: Mapping[tuple[str, str], str],
    notes: Annotations | None,
) -> float:
    height = layout.row_height(row)
    group = add(parent, "g", class_="row", id=f"{graph.name}--{row.node_ids[0]}")
    group.set("data-state", row.state)
    add(
        group, "line", x1=PAD, x2=layout.width - PAD, y1=top + height - ROW_GAP / 2,
        y2=top + height - ROW_GAP / 2, stroke="#d0d7de", stroke_width=0.6,
    )  # fmt: skip
    box_top = top + BOX_TOP
    mid = box_top + BOX_H / 2

    # Priority lists, one ordered column each.
    for node_id, edges in row.choices.items():
        x, _ = layout.choice_x[node_id]
        kind = edges[0].kind
        for i, edge in enumerate(edges):
            g = _edge_group(group, graph, edge, edge.label)
            t = _text(g, x, top + LINE * (i + 1), _choice_text(edge), size=SMALL)
            t.set("fill", EDGE_COLOURS[kind])
            add(g, "title", f"{_choice_title(graph.node(node_id).label)}: {edge.label}")

    # What enters the state: actions, events sent on entry.
    line = 0
    right = layout.entry_x + layout.entry_w
    for edge in row.entries:
        line += 1
        g = _edge_group(group, graph, edge, edge.label)
        ty = top + LINE * line
        _text(g, right, ty, edge.label, size=SMALL, text_anchor="end")
        _arrow(g, f"M {right + 4:.1f} {ty - 4:.1f} L {layout.state_x - 2:.1f} {mid:.1f}", edge.kind)
    if row.event:
        line += 1
        _text(group, right, top + LINE * line, f"on entry ⚡ {row.event}", size=SMALL,
              text_anchor="end", class_="muted")  # fmt: skip
    if notes is not None:
        line += 1
        entered = notes.entries.get(row.labels[0], (0, 0))
        t = _text(group, right, top + LINE * line, f"entered {_flow_text(entered)}",
                  size=SMALL, text_anchor="end", class_="muted flow")  # fmt: skip
        t.set("data-status", row.labels[0])

    # The ladder along the row.
    for index, (node_id, label) in enumerate(zip(row.node_ids, row.labels, strict=True)):
        _draw_box(group, graph, row, index, node_id, label, layout, box_top, notes)
    for edge in row.steps:
        i = row.node_ids.index(edge.target)
        x1 = layout.box_x(i - 1) + layout.box_w(i - 1)
        x2 = layout.box_x(i)
        source, target = graph.node(edge.source).label, graph.node(edge.target).label
        g = _edge_group(group, graph, edge, offsets.get((source, target), edge.label))
        _arrow(g, f"M {x1:.1f} {mid:.1f} L {x2 - 2:.1f} {mid:.1f}", edge.kind)
        label = offsets.get((source, target), edge.label)
        amount, _, rest = label.partition(" after ")
        cx = (x1 + x2) / 2
        _text(g, cx, mid - 16, amount, size=SMALL, text_anchor="middle")
        _text(g, cx, mid - 5, f"after {rest}" if rest else "", size=SMALL - 1,
              text_anchor="middle", class_="muted")  # fmt: skip
        flow = _flow_text(notes.flows.get((source, target), (0, 0))) if notes else None
        if flow:
            _text(g, cx, mid + 13, flow, size=SMALL - 1.5, text_anchor="middle",
                  class_="muted flow")  # fmt: skip

    # Timed exits at the end of the row.
    last = len(row.node_ids) - 1
    x_last = layout.box_x(last) + layout.box_w(last)
    for n, edge in enumerate(row.exits):
        source, target = graph.node(edge.source).label, graph.node(edge.target).label
        label = offsets.get((source, target), edge.label)
        g = _edge_group(group, graph, edge, label)
        ey = mid + n * LINE * 2.2
        if edge.kind is EdgeKind.LOOP:
            back = row.node_ids.index(edge.target)
            bx = layout.box_x(back) + layout.box_w(back) / 2
            bottom = box_top + layout.box_h
            _arrow(
                g,
                f"M {x_last - 8:.1f} {bottom:.1f} C {x_last - 8:.1f} {bottom + 16:.1f} "
                f"{bx:.1f} {bottom + 16:.1f} {bx:.1f} {bottom + 1:.1f}",
                edge.kind,
            )
        else:
            _arrow(g, f"M {x_last:.1f} {mid:.1f} L {layout.exit_x - 4:.1f} {ey:.1f}", edge.kind)
        link = add(g, "a", href=f"#{graph.name}--{graph.node(_row_of(graph, edge.target)).id}")
        t = _text(link, layout.exit_x, ey - 2, _exit_text(graph, edge), size=SMALL)
        t.set("fill", EDGE_COLOURS[edge.kind])
        _text(g, layout.exit_x, ey + 10, label, size=SMALL - 1, class_="muted")
        flow = _flow_text(notes.flows.get((source, target), (0, 0))) if notes else None
        if flow:
            _text(g, layout.exit_x, ey + 21, flow, size=SMALL - 1.5, class_="muted flow")
    return top + height


def _row_of(graph: Graph, node_id: str) -> str:
    """The state node whose row holds ``node_id``."""
    for cluster in graph.clusters:
        if node_id in cluster.nodes:
            return cluster.nodes[0]
    return node_id


def _edge_group(parent: ET.Element, graph: Graph, edge: Edge, label: str) -> ET.Element:
    g = add(parent, "g", class_=f"edge edge-{edge.kind.value}")
    source = graph.node(edge.source)
    g.set("data-source", source.label if source.kind is not NodeKind.START else "")
    g.set("data-target", graph.node(edge.target).label)
    g.set("data-kind", edge.kind.value)
    g.set("data-label", label)
    return g


def _draw_box(
    parent: ET.Element,
    graph: Graph,
    row: _Row,
    index: int,
    node_id: str,
    label: str,
    layout: _Layout,
    top: float,
    notes: Annotations | None,
) -> None:
    x, w = layout.box_x(index), layout.box_w(index)
    shown = label if index == 0 else (label[len(row.state) :] or label)
    container: ET.Element = parent
    if notes is not None and notes.href is not None:
        container = add(parent, "a", href=notes.href(label))
        container.set("aria-label", f"{label}: list its entities")
    g = add(container, "g", class_="node", id=f"{graph.name}-node-{node_id}")
    g.set("data-status", label)
    g.set("data-kind", "state" if index == 0 else "step")
    add(g, "title", f"{label}: {row.description}" if index == 0 and row.description else label)
    add(
        g, "rect", x=x, y=top, width=w, height=layout.box_h, rx=6,
        fill=STATE_FILL if index == 0 else STEP_FILL,
        stroke_dasharray=None if index == 0 else "4 2",
    )  # fmt: skip
    _text(g, x + w / 2, top + 17, shown, text_anchor="middle",
          font_weight="bold" if index == 0 else None)  # fmt: skip
    if notes is not None:
        count = notes.counts.get(label, 0)
        t = _text(g, x + w / 2, top + 17 + LINE, f"{count:,} · {share(count, notes.total)}",
                  size=SMALL, text_anchor="middle", class_="count")  # fmt: skip
        t.set("data-count", str(count))
