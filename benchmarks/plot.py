"""Draw benchmarks/scaling.svg (cost vs population, log-log), no dependencies.

Two sources, each drawn if present:

* ``results-<N>.json`` (``run.py`` folded by ``median.py``): the compiled SQL,
  its floor and the SQL tick, medians with their min-max bars;
* ``daemon-<label>-<N>.json`` (``daemon.py``): the daemon's cycles through
  ``run_once``, one line per label (``before``, ...), figure and state store
  (solid: SQLite, dashed: PostgreSQL), single runs.

Log scales on both axes: the populations span two decades, the costs five
(a tick of 0.04 s, a first cycle of minutes), and a straight line of slope 1
is a cost proportional to the population.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
W, H, PAD, LEGEND = 860, 420, 55, 300
SQL_SERIES = {"full_s": "#c0392b", "scan_limit_s": "#2c3e50", "tick_1pct_s": "#27ae60"}
DAEMON_SERIES = {
    "first_cycle_s": "#8e44ad",
    "full_nochange_s": "#d35400",
    "tick_1pct_s": "#16a085",
}
DASHES = {"sqlite": "", "postgres": ' stroke-dasharray="6 3"'}
DAEMON_FILE = re.compile(r"daemon-(?P<label>[\w.]+)-(?P<users>\d+)\.json")


def load_daemon() -> dict[str, list[dict[str, Any]]]:
    """Daemon runs by label, in population order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in HERE.glob("daemon-*.json"):
        match = DAEMON_FILE.fullmatch(path.name)
        if match:
            found.setdefault(match["label"], []).append(json.loads(path.read_text()))
    return {label: sorted(runs, key=lambda r: r["users"]) for label, runs in sorted(found.items())}


def main() -> None:
    runs = sorted(
        (json.loads(p.read_text()) for p in HERE.glob("results-*.json")), key=lambda r: r["users"]
    )
    daemon = load_daemon()
    # (label, colour, dash, [(users, seconds, low, high)])
    lines: list[tuple[str, str, str, list[tuple[int, float, float, float]]]] = []
    for key, colour in SQL_SERIES.items():
        points = []
        for r in runs:
            low, high = r.get("spread", {}).get(key, [r[key], r[key]])
            points.append((r["users"], float(r[key]), float(low), float(high)))
        lines.append((f"SQL: {key}", colour, "", points))
    for label, daemon_runs in daemon.items():
        for key, colour in DAEMON_SERIES.items():
            for state, dash in DASHES.items():
                points = [
                    (r["users"], v, v, v)
                    for r in daemon_runs
                    if (v := r.get("states", {}).get(state, {}).get(key)) is not None
                ]
                if points:
                    lines.append((f"daemon {label}: {key} ({state})", colour, dash, points))
    everything = [p for _, _, _, points in lines for p in points]
    users = [p[0] for p in everything]
    x_low, x_high = math.log10(min(users) / 1.5), math.log10(max(users) * 1.5)
    y_low = math.floor(math.log10(min(p[2] for p in everything)))
    y_high = math.ceil(math.log10(max(p[3] for p in everything)))
    right = W - LEGEND

    def px(n: float, seconds: float) -> tuple[float, float]:
        x = PAD + (right - PAD) * (math.log10(n) - x_low) / (x_high - x_low)
        y = H - PAD - (H - 2 * PAD) * (math.log10(seconds) - y_low) / (y_high - y_low)
        return x, y

    # The legend, one line per series, may run below the plot: the picture
    # grows to hold it.
    height = max(H, PAD + 16 * len(lines))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}"'
        ' font-family="sans-serif" font-size="11">',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{right}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{(PAD + right) / 2}" y="{H - 12}" text-anchor="middle">users (log)</text>',
        f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})"'
        ' text-anchor="middle">seconds (log)</text>',
        f'<text x="{W / 2}" y="20" text-anchor="middle">BlouseBrothers on PostgreSQL: SQL'
        " (median of 3 runs, bars min to max) and daemon cycles (single runs)</text>",
    ]
    for decade in range(y_low, y_high + 1):
        _, y = px(10**x_low, 10.0**decade)
        parts.append(
            f'<line x1="{PAD}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{PAD - 5}" y="{y + 4:.1f}" text-anchor="end">{10.0**decade:g}</text>'
        )
    for n in sorted(set(users)):
        x, _ = px(n, 10.0**y_low)
        parts.append(
            f'<text x="{x:.1f}" y="{H - PAD + 15}" text-anchor="middle">{n // 1000}k</text>'
        )
    for i, (name, colour, dash, points) in enumerate(lines):
        xy = [px(n, s) for n, s, _, _ in points]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for (x, y), (n, seconds, low, high) in zip(xy, points, strict=True):
            if low != high:
                _, y_min = px(n, low)
                _, y_max = px(n, high)
                parts.append(
                    f'<line x1="{x:.1f}" y1="{y_min:.1f}" x2="{x:.1f}" y2="{y_max:.1f}"'
                    f' stroke="{colour}"/>'
                )
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
            parts.append(
                f'<text x="{x + 5:.1f}" y="{y - 5:.1f}" fill="{colour}">{seconds:.3g}</text>'
            )
        y = PAD + 16 * i
        parts.append(
            f'<line x1="{right + 10}" y1="{y - 4}" x2="{right + 30}" y2="{y - 4}"'
            f' stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{right + 35}" y="{y}" fill="{colour}">{name}</text>'
        )
    parts.append("</svg>")
    (HERE / "scaling.svg").write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
