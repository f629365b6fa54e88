"""The daemon benchmark (benchmarks/daemon.py) runs end to end at a tiny population.

Figures only, never timings against thresholds: speed is judged by running
the benchmark itself. What is checked is that every figure is there and
sane, so that the benchmark cannot rot between the runs that matter.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
USERS = 300

STATE_FIGURES = {
    "first_cycle_s",
    "first_cycle_bound_s",
    "first_cycle_calls_needed",
    "first_cycle_cpu_s",
    "first_cycle_emulator_cpu_s",
    "emulator_cpu_s",
    "full_nochange_s",
    "state_rows_written_nochange",
    "full_1pct_s",
    "changed_full_1pct",
    "api_calls_full_1pct",
    "api_calls_full_1pct_max",
    "tick_1pct_s",
    "tick_1pct_cpu_s",
    "changed_tick_1pct",
    "api_calls_tick_1pct",
    "api_calls_tick_1pct_max",
    "peak_rss_mb",
    "targets",
    "cycles",
}
TARGETS = {
    "full_nochange_s<=3*scan_floor_s",
    "tick_1pct_s<=0.05*full_nochange_s",
    "api_calls_full_1pct<=bound",
    "api_calls_tick_1pct<=bound",
    "first_cycle_s<=1.3*first_cycle_bound_s",
    "peak_rss_mb<=500",
}


@pytest.mark.postgres
def test_daemon_benchmark_writes_every_figure(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "daemon.json"
    state_schema = f"bench_state_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "daemon.py"),
                *("--users", str(USERS), "--service-delay", "0", "--state", "both"),
                *("--app-db", pg_url, "--state-schema", state_schema, "--json", str(out)),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{state_schema}" CASCADE')
        engine.dispose()
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())

    assert figures["users"] == USERS
    assert figures["service_delay_s"] == 0
    # The emulator finishes jobs at once; cycles wait up to a minute, back to back.
    assert (figures["batch_delay_s"], figures["batch_wait_s"], figures["pause_s"]) == (0, 60, 0)
    assert figures["scan_floor_s"] > 0
    assert figures["sql_eval_s"] > 0
    assert set(figures["states"]) == {"sqlite", "postgres"}
    # The table and a verdict per target and state store are printed.
    assert "first_cycle_s" in done.stdout
    assert done.stdout.count("PASS") + done.stdout.count("FAIL") == 2 * len(TARGETS)

    sample = math.ceil(USERS * 0.01)
    for state, result in figures["states"].items():
        assert STATE_FIGURES <= set(result), state
        assert set(result["targets"]) == TARGETS
        assert all(isinstance(met, bool) for met in result["targets"].values())
        for key in ("first_cycle_s", "full_nochange_s", "full_1pct_s", "tick_1pct_s"):
            assert result[key] > 0, (state, key)
        # Each cycle's CPU: mailsync's process worked, the emulator's too
        # when there was something to push; the figures are the cycles'.
        for name, cycle in result["cycles"].items():
            assert cycle["cpu_s"] > 0, (state, name)
            assert cycle["emulator_cpu_s"] >= 0, (state, name)
        # The emulator's CPU is read from its own process: it started up and
        # served the cycles (each cycle's share is in 10 ms clock ticks and
        # can round to zero at this population).
        cycles_cpu = sum(c["emulator_cpu_s"] for c in result["cycles"].values())
        assert result["emulator_cpu_s"] > 0
        assert result["emulator_cpu_s"] >= cycles_cpu - 0.01
        assert result["first_cycle_cpu_s"] == result["cycles"]["first"]["cpu_s"]
        assert result["tick_1pct_cpu_s"] == result["cycles"]["tick_1pct"]["cpu_s"]
        # A cycle waits for its pushes at most as long as they take.
        for name, cycle in result["cycles"].items():
            assert 0 <= cycle["push_wait_s"] <= cycle["push_s"] < cycle["s"], (state, name)
            # No job outlived the wait: none left running, none to collect.
            assert (cycle["left_running"], cycle["collected"]) == (0, 0), (state, name)
        assert result["cycles"]["first"]["push_s"] > 0
        # Without latency the bound is the SQL evaluation alone.
        assert result["first_cycle_bound_s"] == figures["sql_eval_s"]
        first = result["cycles"]["first"]
        # Every demo user has an address: all of them are new members.
        assert first["members_new"] == USERS
        assert first["pushed"] == USERS
        assert 1 <= result["first_cycle_calls_needed"] <= first["api_calls"]
        # Nothing changed: nothing to push, and the counter saw the state
        # store (at least the cycle's own record).
        nochange = result["cycles"]["full_nochange"]
        assert nochange["pushed"] == 0
        assert nochange["api_calls"] == 0
        assert result["state_rows_written_nochange"] >= 1
        assert nochange["state_rows_by_table"]
        # PostgreSQL's own count of live row versions agrees: never more than
        # the rows the statements reported (a row inserted then updated is one).
        xmin = result["state_rows_written_nochange_xmin"]
        if state == "postgres":
            assert 1 <= xmin <= result["state_rows_written_nochange"]
        else:
            assert xmin is None
        # The 1 % scenarios changed a few members, at a bounded cost.
        assert result["users_with_new_actions"] == {"full_1pct": sample, "tick_1pct": sample}
        assert result["backdated_actions"] == {"full_1pct": 1, "tick_1pct": 1}
        assert 1 <= result["changed_full_1pct"] <= sample + 5
        assert 1 <= result["api_calls_full_1pct"] <= result["api_calls_full_1pct_max"]
        assert 0 <= result["changed_tick_1pct"] <= sample + 5
        assert result["api_calls_tick_1pct_max"] >= 3
        # The cycles ran in a child process of realistic size.
        assert 20 < result["peak_rss_mb"] < 2000

    # The inserted rows were removed: the database is as generated.
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        late = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM credits WHERE credited_at > :now)"
                " + (SELECT count(*) FROM transfers WHERE received_at > :now)"
            ),
            {"now": figures["now"]},
        ).scalar_one()
    engine.dispose()
    assert late == 0
