"""Fold several runs of ``run.py`` into one ``results-<N>.json``: the median of
every number, with its spread (min, max) under ``spread``.

    python benchmarks/median.py benchmarks/runs/1000000-*.json --out benchmarks/results-1000000.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = [json.loads(p.read_text()) for p in args.runs]
    merged: dict[str, Any] = dict(runs[0])
    spread: dict[str, list[float]] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "users":
            merged[key] = round(statistics.median(values), 4)
            spread[key] = [min(values), max(values)]
    merged["runs"] = len(runs)
    merged["spread"] = spread
    # The targets, judged on the medians; and in how many runs each was met.
    merged["targets"] = {
        "full_over_scan<=2.0": merged["full_over_scan"] <= 2.0,
        "naive_over_full>=50": merged["naive_over_full_per_user"] >= 50,
        "peak_rss_mb<=500": merged["peak_rss_mb"] <= 500,
        "tick_over_full<=0.05": merged["tick_over_full"] <= 0.05,
        "api_calls<=ceil(changed/500)+3": merged["api_calls_per_tick"]
        <= merged["api_calls_expected_max"],
    }
    merged["targets_met_in_runs"] = {
        k: sum(bool(r["targets"][k]) for r in runs) for k in runs[0]["targets"]
    }
    args.out.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
