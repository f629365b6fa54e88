"""The first cycle alone (going live), with the CPU time of mailsync's process.

    python benchmarks/first_cycle.py --users 100000 [--service-delay 0.25] [--runs 2]

The same set-up as ``benchmarks/daemon.py`` (its demo database, generated
once, and ``mailsync emulator`` in a process of its own), then, per run, a
new SQLite state store and ``run_once(full=True)`` through the daemon's own
``build_runtime``: what ``mailsync once`` does going live. Prints the wall
clock and the CPU seconds of this process (``time.process_time``, every
thread), which the emulator's own work does not blur, and the emulator's
CPU seconds (from ``/proc``), which share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import daemon as bench  # noqa: E402
import run as floor  # noqa: E402

from sync.daemon.config import Config, MailchimpConfig  # noqa: E402
from sync.daemon.once import run_once  # noqa: E402
from sync.daemon.runtime import build_runtime  # noqa: E402
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID  # noqa: E402
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields  # noqa: E402
from sync.mailchimp.client import MailchimpSettings, make_client  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--service-delay", type=float, default=0.25)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pg", default=floor.DEFAULT_PG)
    args = parser.parse_args(argv)
    app = floor.bench_database(args.pg, args.users, 1, prefix="mailsync_daemon")
    os.environ["MAILCHIMP_API_KEY"] = DEFAULT_API_KEY
    state = Path(tempfile.gettempdir()) / f"mailsync_first_cycle_{os.getpid()}.sqlite"
    for run in range(1, args.runs + 1):
        state.unlink(missing_ok=True)
        with bench.emulator_process(args.service_delay) as (url, emulator_pid):
            config = Config(
                rules=bench.ROOT / "rules.yaml",
                sources=bench.ROOT / "sources.yaml",
                database=app,
                state=f"sqlite:///{state}",
                mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=url),
            )
            runtime = build_runtime(config, clock=lambda: bench.T_FIRST)
            try:
                # As `mailsync check --fix` would, before the daemon starts.
                settings = MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=url)
                wanted = wanted_merge_fields(runtime.ruleset.entities.values())
                fix_merge_fields(make_client(settings), DEFAULT_LIST_ID, wanted)
                emulator_cpu = bench.process_cpu_s(emulator_pid)
                wall, cpu = time.perf_counter(), time.process_time()
                summary = run_once(runtime, now=bench.T_FIRST, full=True)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                emulator_cpu = bench.process_cpu_s(emulator_pid) - emulator_cpu
            finally:
                runtime.close()
        calls = sum(summary.push.calls.values())
        print(
            f"run {run}: {args.users} users, {summary.push.pushed} members pushed, "
            f"{calls} calls: {wall:.2f} s wall clock, {cpu:.2f} s CPU"
            f" (the emulator's process: {emulator_cpu:.2f} s CPU); pushing took"
            f" {summary.push_s:.2f} s, of which the cycle waited {summary.push_wait_s:.2f} s",
            flush=True,
        )
    state.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
