"""Draw benchmarks/scaling.svg (time vs population) from results-*.json, no dependencies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
W, H, PAD = 520, 320, 50


def main() -> None:
    runs = sorted(
        (json.loads(p.read_text()) for p in HERE.glob("results-*.json")), key=lambda r: r["users"]
    )
    xs = [r["users"] for r in runs]
    series = {"full_s": "#c0392b", "scan_limit_s": "#2c3e50", "tick_1pct_s": "#27ae60"}

    def high(r: dict[str, Any], key: str) -> float:
        return float(r.get("spread", {}).get(key, [r[key], r[key]])[1])

    top = max(high(r, k) for r in runs for k in series) * 1.1

    def px(users: float, seconds: float) -> tuple[float, float]:
        return (PAD + (W - 2 * PAD) * users / max(xs), H - PAD - (H - 2 * PAD) * seconds / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"'
        ' font-family="sans-serif" font-size="11">',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">users</text>',
        f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})"'
        ' text-anchor="middle">seconds</text>',
        f'<text x="{W / 2}" y="20" text-anchor="middle">'
        "BlouseBrothers on PostgreSQL: median of 3 runs (bars: min to max)</text>",
    ]
    for x in xs:
        cx, _ = px(x, 0)
        parts.append(f'<text x="{cx}" y="{H - PAD + 15}" text-anchor="middle">{x // 1000}k</text>')
    for key, colour in series.items():
        points = [px(r["users"], r[key]) for r in runs]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), r in zip(points, runs, strict=True):
            low, up = r.get("spread", {}).get(key, [r[key], r[key]])
            _, y_low = px(r["users"], low)
            _, y_up = px(r["users"], up)
            # The spread of the runs (min to max) around the median.
            parts.append(
                f'<line x1="{x:.1f}" y1="{y_low:.1f}" x2="{x:.1f}" y2="{y_up:.1f}"'
                f' stroke="{colour}"/>'
            )
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
            parts.append(
                f'<text x="{x + 5:.1f}" y="{y - 5:.1f}" fill="{colour}">{r[key]:.1f}</text>'
            )
    for i, (key, colour) in enumerate(series.items()):
        parts.append(f'<text x="{PAD + 10}" y="{PAD + 14 * i}" fill="{colour}">{key}</text>')
    parts.append("</svg>")
    (HERE / "scaling.svg").write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
