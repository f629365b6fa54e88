"""Where the time of one ``mailsync plan`` goes, by part.

Runs ``plan_rules`` (what ``mailsync plan [--rules NEW.yaml]`` runs) with
timers around the parts of a full pass that cost the most at 1M users, and
prints the seconds and calls of each::

    python benchmarks/plan_parts.py --config /tmp/planbench/mailsync.yaml \\
        --rules new-rules.yaml --at 2026-03-01T00:05:00Z

The parts nest: the diff includes the push planning when the buffer fills,
and the push planning includes ``member_states``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sync.daemon import diff, plan, settled
from sync.daemon.config import load_config
from sync.state import entities, ledger

#: (owner, method, label) of the parts timed.
PARTS: tuple[tuple[type, str, str], ...] = (
    (settled.Settled, "merge", "merge of digests (or its sample)"),
    (entities.EntityStore, "stored_rows", "stored rows looked up"),
    (settled.Settled, "decode_unsettled", "settled test and decoding"),
    (diff.Differ, "settle", "diff (and push planning when the buffer fills)"),
    (plan.PlanSink, "push", "push planning"),
    (ledger.LedgerStore, "member_states", "members' accepted values and tags"),
)


def timed(
    seconds: dict[str, float], calls: Counter[str], label: str, method: Callable[..., Any]
) -> Any:
    """``method`` with its time and calls counted under ``label``."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
            calls[label] += 1

    return wrapper


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the mailsync.yaml of the audience")
    parser.add_argument("--rules", type=Path, help="the rules to preview (default: in force)")
    parser.add_argument("--at", required=True, help="ISO 8601 instant with offset")
    args = parser.parse_args(argv)
    seconds: dict[str, float] = {}
    calls: Counter[str] = Counter()
    for owner, name, label in PARTS:
        setattr(owner, name, timed(seconds, calls, label, getattr(owner, name)))
    config = load_config(args.config)
    started = time.perf_counter()
    report = plan.plan_rules(config, rules=args.rules, now=datetime.fromisoformat(args.at))
    total = time.perf_counter() - started
    print(f"plan_rules: {total:.2f} s, {sum(report.entities_read.values())} entities read")
    for label, spent in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"{spent:8.2f} s {calls[label]:7d} calls  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
