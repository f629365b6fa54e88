"""Time bounds and honest health (issue 13, rows 6 and 7).

A source query that hangs (``pg_sleep``) used to stall the daemon silently:
``/healthz`` said 200, SIGTERM waited for the query, and there was no
statement timeout unless the operator put one in the URL. A cycle whose
every Mailchimp call answered 503 was counted ``outcome="ok"``. Now source
sessions carry ``daemon.statement_timeout``, SIGTERM cancels the running
query, ``/healthz`` answers 503 ``overrun`` while a cycle runs too long, and
a cycle whose writes Mailchimp did not accept is ``degraded`` in the log,
the metrics and ``/healthz``. The hanging queries run on the real PostgreSQL.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from sync.cli import main
from sync.daemon.config import DaemonConfig, load_config
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.metrics import Metrics
from sync.demo import load_demo
from sync.emulator.faults import FaultKind
from sync.exceptions import RulesError
from sync.mailchimp.ledger import PushFailure
from sync.sources.reader import SourceReader
from sync.sources.schema import parse_sources
from sync.sources.sessions import SourceUnavailableError
from tests.support.cycle import NOW
from tests.support.daemon_process import Daemon, write_settings

ROOT = Path(__file__).resolve().parent.parent
SIGNUP = "signup: SELECT id, date_joined AS at FROM users"
#: The same action, after a long sleep in the database (only when rows are read:
#: ``mailsync check``'s probe for no rows does not wait).
SLOW_SIGNUP = "signup: SELECT u.id, u.date_joined AS at FROM users u, pg_sleep(120)"


def slow_settings(tmp_path: Path, database: str, daemon: str, sleep: int = 120) -> Path:
    sources = (ROOT / "sources.yaml").read_text()
    assert SIGNUP in sources
    slow = SLOW_SIGNUP.replace("pg_sleep(120)", f"pg_sleep({sleep})")
    (tmp_path / "sources.yaml").write_text(sources.replace(SIGNUP, slow))
    path = tmp_path / "mailsync.yaml"
    path.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {tmp_path / 'sources.yaml'}\n"
        f"database: {database}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
        f"daemon: {{{daemon}}}\n"
    )
    return path


@pytest.fixture
def slow_app(pg_url, monkeypatch):
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.delenv("MAILCHIMP_LIST_ID", raising=False)
    load_demo(pg_url, "blousebrothers", users=5, seed=1, now=NOW)
    return pg_url


@pytest.mark.postgres
def test_a_hanging_source_query_is_cancelled_by_the_statement_timeout(slow_app, tmp_path, capsys):
    # (A source query inside the compiled evaluation has its own, longer bound.)
    config = slow_settings(tmp_path, slow_app, "statement_timeout: 1s, evaluation_timeout: 1s")
    code = main(["once", "--config", str(config), "--at", NOW.isoformat()])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "sources.yaml" in err
    assert "statement timeout" in err
    assert "This is a bug" not in err


@pytest.mark.postgres
def test_a_compiled_evaluation_is_bounded_by_its_own_longer_limit(
    slow_app, tmp_path, capsys, caplog
):
    """A full pass streams the compiled SQL while it diffs and pushes, so the
    statement lasts as long as the pass: ``statement_timeout`` (1 s here)
    does not cut it, ``evaluation_timeout`` (1 h by default) bounds it."""
    config = slow_settings(tmp_path, slow_app, "statement_timeout: 1s", sleep=2)
    code = main(["once", "--config", str(config), "--at", NOW.isoformat()])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "read 5 user" in err
    # The full pass's check of the action rows runs as any source query does,
    # under statement_timeout: stopped, it is a warning, never a failed cycle.
    assert any(
        "the action rows the SQL leaves out were not checked" in r.getMessage()
        for r in caplog.records
    )


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read().decode()


def wait_health(port: int, daemon: Daemon, status: int, word: str) -> str:
    seen: tuple[int, str] = (0, "")
    for _ in range(300):
        seen = healthz(port)
        if seen[0] == status and word in seen[1]:
            return seen[1]
        assert daemon.process.poll() is None, daemon.text()
        threading.Event().wait(0.2)
    raise AssertionError(f"/healthz stayed {seen}:\n{daemon.text()}")


@pytest.mark.postgres
def test_healthz_reports_an_overrun_and_sigterm_cancels_the_query(slow_app, tmp_path):
    config = slow_settings(tmp_path, slow_app, "interval: 1s, cycle_overrun: 1s")
    daemon = Daemon(config, NOW, "--metrics", "127.0.0.1:0")
    port = int(daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    # The first cycle sleeps in the database for 120 s; after 3 intervals:
    reason = wait_health(port, daemon, 503, "overrun")
    assert "the current cycle has run for" in reason
    # SIGTERM ends it long before the query would have (the wait is a bound
    # against hanging, far below the query's 120 s, not a speed measurement).
    assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    text = daemon.text()
    assert "the running source query was cancelled" in text
    assert "This is a bug" not in text


def test_a_cycle_whose_writes_mailchimp_refused_is_degraded(daemon_demo):
    tmp_path, database, state, emulator = daemon_demo
    settings = write_settings(tmp_path, database, state, emulator)
    # Each call is retried as in production (5 attempts), on a back-off
    # scaled down from 1 s: the first cycle gives up after a second, not ~30.
    text = settings.read_text()
    settings.write_text(text.replace("mailchimp:\n", "mailchimp:\n  retry_wait: 0.01\n", 1))
    emulator.faults.set_random(1.0, seed=1, kinds=[FaultKind.SERVER_ERROR])
    daemon = Daemon(settings, NOW, "--metrics", "127.0.0.1:0")
    port = int(daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    daemon.wait_for("cycle degraded: Mailchimp did not accept", timeout=120)
    reason = wait_health(port, daemon, 503, "degraded")
    assert "Mailchimp did not accept" in reason
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'mailsync_cycles_total{outcome="degraded"}' in metrics
    # Mailchimp answers again: the next cycles push, and health is ok again.
    emulator.faults.clear()
    wait_health(port, daemon, 200, "ok")
    assert daemon.stop() == 0


SLOW_BY_DIALECT = {
    "postgresql": SLOW_SIGNUP,
    # An uncorrelated subquery counting to a billion: minutes of work.
    "sqlite": SIGNUP + " WHERE (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
    " WHERE x < 1000000000) SELECT count(*) FROM c) > 0",
}


def test_cancel_ends_a_running_source_query(db_url):
    load_demo(db_url, "blousebrothers", users=3, seed=1, now=NOW)
    dialect = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    sources = parse_sources(
        (ROOT / "sources.yaml").read_text().replace(SIGNUP, SLOW_BY_DIALECT[dialect])
    )
    failure: list[BaseException] = []

    def read() -> None:
        try:
            list(reader.read_entities("user", now=NOW))
        except BaseException as exc:
            failure.append(exc)

    with SourceReader(sources, db_url) as reader:
        worker = threading.Thread(target=read)
        worker.start()
        for _ in range(300):  # until the read's session is open
            if reader._busy:
                break
            worker.join(0.05)
        worker.join(1.0)  # its slow query is running now (the others are quick)
        assert reader.cancel() == 1
        worker.join(60)  # a bound against hanging, far below the query's length
        assert not worker.is_alive(), "the query was not cancelled"
    assert len(failure) == 1
    assert isinstance(failure[0], SourceUnavailableError), failure[0]


def test_time_bound_settings_have_defaults_a_file_key_and_an_environment_override(tmp_path):
    assert DaemonConfig().statement_timeout == timedelta(minutes=5)
    assert DaemonConfig().cycle_overrun == timedelta(minutes=15)
    path = tmp_path / "mailsync.yaml"
    path.write_text("daemon: {statement_timeout: 30s, cycle_overrun: 1h}\n")
    config = load_config(path, env={})
    assert config.daemon.statement_timeout == timedelta(seconds=30)
    assert config.daemon.cycle_overrun == timedelta(hours=1)
    config = load_config(path, env={"MAILSYNC_STATEMENT_TIMEOUT": "2min"})
    assert config.daemon.statement_timeout == timedelta(minutes=2)
    path.write_text("daemon: {statement_timeout: soon}\n")
    with pytest.raises(RulesError, match="statement_timeout"):
        load_config(path, env={})


def test_health_reasons_in_order_of_urgency():
    metrics = Metrics(interval_s=60, overrun_s=1)
    assert metrics.health() == (True, "ok: standby")
    metrics.leader = True
    assert metrics.health() == (True, "ok")
    metrics.cycle_started()
    metrics.cycle_since = time.time() - 181  # 3 intervals is the floor of the limit
    ok, reason = metrics.health()
    assert not ok
    assert reason.startswith("overrun: the current cycle has run for ")
    assert reason.endswith("s (limit 180s)")
    metrics.cycle_ended()
    summary = CycleSummary(now=NOW, full=False)
    summary.push.considered = 3
    summary.push.failures = [
        PushFailure("a@example.com", "PUT: HTTP 503", False, NOW, "f", 1, NOW),
        PushFailure("b@example.com", "fake address", True, NOW, "f", 1, NOW),
    ]
    metrics.observe(summary, ok=True)
    assert metrics.health() == (
        False,
        "degraded: Mailchimp did not accept 1 of 3 members (e.g. PUT: HTTP 503); "
        "retried next cycle",
    )
    assert 'mailsync_cycles_total{outcome="degraded"} 1' in metrics.render()
    summary.push.failures = summary.push.failures[1:]  # only a permanent refusal
    metrics.observe(summary, ok=True)
    assert metrics.health() == (True, "ok")
    # A merge field deleted in the audience (issue 12): its values are dropped.
    summary.push.missing_merge_tags = {"MMERGE25": 3}
    metrics.observe(summary, ok=True)
    assert metrics.health() == (
        False,
        "degraded: the audience lacks the merge tags MMERGE25: their values are not kept "
        "(re-create them: mailsync check --fix)",
    )
