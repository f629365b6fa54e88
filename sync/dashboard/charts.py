"""Line charts in SVG for the Trends page, drawn here: no script, no library.

One small chart per state (its ladder's statuses as lines) reads better than
fifty lines on one chart; all charts of a page share the time axis so they
can be compared by eye.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime

from sync.rules.graph_svg import SMALL, SVG_NS, add

# Distinct hues, each with at least 4.5:1 contrast on white (legend text uses them).
PALETTE = ("#0072b2", "#b34700", "#007a5a", "#a8437f", "#6b5500", "#5a3e99", "#1f2328")
WIDTH, HEIGHT = 520.0, 150.0
LEFT, RIGHT, TOP, BOTTOM = 54.0, 180.0, 20.0, 24.0


def _nice_max(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def line_chart(
    title: str,
    times: Sequence[datetime],
    lines: Sequence[tuple[str, Sequence[int]]],
    start: datetime,
    end: datetime,
) -> str:
    """An SVG chart of ``lines`` (label, one value per time) from ``start`` to ``end``."""
    root = ET.Element(
        "svg",
        {"xmlns": SVG_NS, "role": "img", "width": str(WIDTH), "height": str(HEIGHT),
         "viewBox": f"0 0 {WIDTH:.0f} {HEIGHT:.0f}", "class": "chart"},
    )  # fmt: skip
    add(root, "title", f"{title}: entities per status over time")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = _nice_max(max([max(v, default=0) for _, v in lines] + [1]))
    span = max((end - start).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return LEFT + plot_w * (at - start).total_seconds() / span

    def y(value: int) -> float:
        return TOP + plot_h * (1 - value / top_value)

    add(root, "text", title, x=4, y=13, font_size=12, font_weight="bold")
    add(root, "line", x1=LEFT, x2=LEFT + plot_w, y1=TOP + plot_h, y2=TOP + plot_h,
        stroke="#57606a")  # fmt: skip
    add(root, "line", x1=LEFT, x2=LEFT, y1=TOP, y2=TOP + plot_h, stroke="#57606a")
    for value in (0, top_value // 2, top_value):
        add(root, "text", f"{value:,}", x=LEFT - 4, y=y(value) + 4, font_size=SMALL,
            text_anchor="end")  # fmt: skip
    for at, anchor in ((start, "start"), (end, "end")):
        add(root, "text", f"{at:%Y-%m-%d %H:%M}", x=x(at), y=HEIGHT - 6, font_size=SMALL,
            text_anchor=anchor)  # fmt: skip
    for i, (label, values) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        group = add(root, "g", class_="series")
        group.set("data-status", label)
        points = [(x(t), y(v)) for t, v in zip(times, values, strict=True)]
        if len(points) == 1:
            add(group, "circle", cx=points[0][0], cy=points[0][1], r=3, fill=colour)
        elif points:
            d = " ".join(f"{'M' if j == 0 else 'L'} {px:.1f} {py:.1f}" for j, (px, py) in
                         enumerate(points))  # fmt: skip
            add(group, "path", d=d, fill="none", stroke=colour, stroke_width=2)
        last = values[-1] if values else 0
        add(group, "title", f"{label}: {last:,} now")
        add(group, "text", f"{label} {last:,}", x=LEFT + plot_w + 8, y=TOP + 12 + 14 * i,
            font_size=SMALL, fill=colour)  # fmt: skip
    return ET.tostring(root, encoding="unicode")
