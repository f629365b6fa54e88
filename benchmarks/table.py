"""Print the Markdown tables of benchmarks/README.md from results-*.json.

    python benchmarks/table.py > /tmp/tables.md

One table per population: each field's median and its spread over the runs,
then the targets judged on the medians and in how many runs each was met.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TIMES, DASH = "\u00d7", "\u2013"  # the README's typography
FIELDS = [
    ("scan_limit_s", "s"),
    ("full_s", "s"),
    ("full_over_scan", ""),
    ("full_per_user_us", "µs"),
    ("naive_per_user_ms", "ms"),
    ("naive_s", "s"),
    ("naive_over_full_per_user", TIMES),
    ("peak_rss_mb", "MB"),
    ("tick_1pct_s", "s"),
    ("tick_changed_ids_s", "s"),
    ("tick_warmup_s", "s"),
    ("tick_over_full", ""),
    ("tick_push_s", "s"),
    ("api_calls_per_tick", ""),
    ("api_calls_expected_max", ""),
    ("changed_per_tick", ""),
    ("tick_changed_ids", ""),
    ("tick_due_ids", ""),
    ("tick_evaluated", ""),
    ("tick_status_changes", ""),
    ("tick_pushed", ""),
    ("tick_failed", ""),
]


def number(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}".replace(",", " ")
    if abs(value) >= 100:
        return f"{value:,.0f}".replace(",", " ")
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    runs = result.get("runs", 1)
    lines = [
        f"#### {number(result['users'])} users",
        "",
        f"| field | median | min {DASH} max ({runs} runs) |",
        "|---|---:|---:|",
    ]
    for key, unit in FIELDS:
        if key not in result:
            continue
        low, high = result.get("spread", {}).get(key, [result[key], result[key]])
        suffix = f" {unit}" if unit else ""
        spread = f"{number(low)} {DASH} {number(high)}"
        lines.append(f"| `{key}` | {number(result[key])}{suffix} | {spread} |")
    met = result.get("targets_met_in_runs", {})
    judged = [
        f"`{name}` {'met' if ok else '**missed**'} ({met.get(name, int(ok))}/{runs})"
        for name, ok in result["targets"].items()
    ]
    lines += ["", "Targets (on the medians; runs meeting it): " + "; ".join(judged) + "."]
    return "\n".join(lines)


def main() -> None:
    results = sorted(
        (json.loads(p.read_text()) for p in HERE.glob("results-*.json")), key=lambda r: r["users"]
    )
    print("\n\n".join(table(r) for r in results))


if __name__ == "__main__":
    main()
