"""Print the Markdown table of benchmarks/README.md from daemon-<label>-<N>.json.

    python benchmarks/daemon_table.py before > /tmp/before.md

One column per population and state store, one row per figure, then the
targets met or missed in each column.
"""

from __future__ import annotations

import sys
from typing import Any

from daemon import ROWS as STATE_ROWS
from plot import load_daemon

# The figures of one state store, in the order the benchmark prints them.
ROWS = ["scan_floor_s", "sql_eval_s", *STATE_ROWS]


def cell(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    return f"{value:g}"


def main(label: str) -> None:
    runs = load_daemon()[label]
    columns = [(r, state) for r in runs for state in r["states"]]
    heads = [f"{r['users'] // 1000}k, {state}" for r, state in columns]
    print("| figure | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in ROWS:
        values = [r.get(row, r["states"][state].get(row)) for r, state in columns]
        print(f"| `{row}` | " + " | ".join(cell(v) for v in values) + " |")
    targets = list(columns[0][0]["states"][columns[0][1]]["targets"])
    for target in targets:
        met = [r["states"][state]["targets"][target] for r, state in columns]
        print(f"| {target} | " + " | ".join("met" if m else "**missed**" for m in met) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "before")
