"""The dashboard without a browser: read-only store, access rules, pages, history.

Pages are requested through ``Dashboard.handle`` (the code both servers
call) and through real HTTP servers (``mailsync dashboard``'s WSGI server and
the daemon's metrics server), on a state store written by ``mailsync demo``.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync.cli import cli
from sync.daemon import history
from sync.daemon.config import load_config
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.metrics import Metrics, MetricsServer
from sync.dashboard import Access, Dashboard, ReadOnlyStore, check_bind, serve
from sync.exceptions import ConfigurationError
from sync.mailchimp.changes import MailchimpChange
from sync.rules.schema import load_rules
from sync.state.entities import EntityEvaluation
from sync.state.store import StateStore
from sync.state.tables import status_history, transition_history
from tests.support.dashboard import Demo, dashboard_for, make_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return make_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def app(demo: Demo) -> Iterator[Dashboard]:
    dashboard = dashboard_for(demo)
    yield dashboard
    dashboard.close()


def get(app: Dashboard, target: str) -> str:
    response = app.handle("GET", target, {})
    assert response.status == 200, response.body.decode()[:500]
    return response.body.decode()


# -- read-only -------------------------------------------------------------------


def test_sqlite_store_is_opened_read_only(demo: Demo) -> None:
    store = ReadOnlyStore(f"sqlite:///{demo.folder / 'state.sqlite'}")
    try:
        assert store.status_counts("user")
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            store.upsert_evaluations([EntityEvaluation("user", "x", None, "registered")])
        with pytest.raises(ConfigurationError, match="read-only"):
            store.migrate()
    finally:
        store.close()


def test_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        ReadOnlyStore(f"sqlite:///{tmp_path / 'nothing.sqlite'}")
    assert not (tmp_path / "nothing.sqlite").exists()


@pytest.mark.postgres
def test_postgres_store_is_opened_read_only(pg_url: str) -> None:
    schema = f"dash_{uuid.uuid4().hex[:8]}"  # a schema of its own, as operators may set
    writer = StateStore(pg_url, schema=schema)
    try:
        writer.migrate()
        writer.upsert_evaluations([EntityEvaluation("user", "1", "a@example.com", "registered")])
        store = ReadOnlyStore(pg_url, schema=schema)
        try:
            assert store.status_counts("user") == {"registered": 1}
            assert store.has_history
            with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                store.upsert_evaluations([EntityEvaluation("user", "2", None, "registered")])
            assert [s.entity_id for s in store.find("A@example.com")] == ["1"]
        finally:
            store.close()
    finally:
        with writer.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        writer.close()


# -- access ----------------------------------------------------------------------


def test_binding_beyond_loopback_needs_a_secret() -> None:
    check_bind("127.0.0.1", Access())
    check_bind("::1", Access())
    check_bind("localhost", Access())
    with pytest.raises(ConfigurationError, match="MAILSYNC_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", Access())
    check_bind("0.0.0.0", Access(("s3cret",)))


def test_cli_refuses_a_public_address_without_a_secret(demo: Demo) -> None:
    result = CliRunner(
        env={"MAILSYNC_DASHBOARD_TOKEN": "", "MAILSYNC_DASHBOARD_PASSWORD": ""}
    ).invoke(cli, ["dashboard", "--config", str(demo.config), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "refusing to serve the dashboard on 0.0.0.0" in result.output


def test_secret_is_required_on_every_request(demo: Demo) -> None:
    app = dashboard_for(demo, Access.from_env({"MAILSYNC_DASHBOARD_PASSWORD": "s3cret"}))
    try:
        assert app.handle("GET", "/operations", {}).status == 401
        wrong = base64.b64encode(b"me:nope").decode()
        assert app.handle("GET", "/operations", {"Authorization": f"Basic {wrong}"}).status == 401
        right = base64.b64encode(b"me:s3cret").decode()
        assert app.handle("GET", "/operations", {"Authorization": f"Basic {right}"}).status == 200
        assert app.handle("GET", "/operations", {"Authorization": "Bearer s3cret"}).status == 200
    finally:
        app.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_is_answered(app: Dashboard, method: str) -> None:
    response = app.handle(method, "/lifecycle", {})
    assert response.status == 405
    assert ("Allow", "GET, HEAD") in response.headers


# -- pages -----------------------------------------------------------------------


def test_lifecycle_counts_match_mailsync_status(app: Dashboard, demo: Demo) -> None:
    page = get(app, "/lifecycle")
    expected = {k: v for k, v in demo.status()["statuses"]["user"].items() if v}
    drawn = dict(
        re.findall(
            r'data-status="([^"]+)"[^>]*>\s*<title>[^<]*</title>\s*<rect[^>]*/>'
            r'\s*<text[^>]*>[^<]*</text>\s*<text[^>]*data-count="(\d+)"',
            page,
        )
    )
    assert {k: int(v) for k, v in drawn.items() if int(v)} == expected
    assert f"{sum(expected.values()):,} user entities" in page


def test_recorded_counts_are_the_live_counts(app: Dashboard) -> None:
    live = app.store.status_counts("user")
    with app.store.engine.connect() as conn:
        recorded = history.latest_counts(conn, "user")
    assert recorded is not None  # the demo's daemon cycles recorded them
    assert app._counts("user") == live
    app.store.has_history = False  # an older store: counted on the spot
    try:
        assert app._counts("user") == live
    finally:
        app.store.has_history = True


def test_lifecycle_shows_flows_from_the_history(app: Dashboard, demo: Demo) -> None:
    page = get(app, "/lifecycle")
    # In three simulated days some users reached the 7-day step of a ladder.
    assert re.search(r"24h \d+ · 7d [1-9]", page)
    store = app.store
    with store.engine.connect() as conn:
        moves = history.moves_since(conn, "user", demo.at - timedelta(days=7))
    assert sum(moves.values()) > 0


def test_status_lists_its_latest_entrants(app: Dashboard) -> None:
    counts = app.store.status_counts("user")
    status = max((s for s in counts if s), key=lambda s: counts[s] or 0)
    page = get(app, f"/status?entity=user&status={status}")
    links = re.findall(r'href="/person\?q=([^&"]+)&amp;entity=user"', page)
    assert len(links) == min(50, counts[status])
    assert f"{counts[status]:,} entities in <strong>{status}</strong>" in page
    assert app.handle("GET", "/status?entity=user&status=nope", {}).status == 404
    assert app.handle("GET", "/lifecycle?entity=nope", {}).status == 404


def test_person_page_explains_by_email_and_by_id(app: Dashboard) -> None:
    sample = next(s for s in app.store.sample("user", "registered_H24", 5) if s.email)
    by_email = get(app, f"/person?q={sample.email}")
    assert "Timeline" in by_email
    assert f"user {sample.entity_id}" in by_email
    assert "registered_H24" in by_email
    by_id = get(app, f"/person?q={sample.entity_id}&entity=user")
    assert sample.email is not None
    assert sample.email in by_id
    unknown = get(app, "/person?q=nobody@example.com")
    assert "No entity" in unknown


def test_person_page_shows_what_changed_in_mailchimp(app: Dashboard, demo: Demo) -> None:
    sample = next(s for s in app.store.sample("user", "registered_H24", 5) if s.email)
    assert sample.email is not None
    config = load_config(demo.config)
    writer = StateStore(config.state, schema=config.state_schema)
    try:
        writer.record_mailchimp_changes(
            [
                MailchimpChange(
                    "unsubscribe",
                    sample.email,
                    demo.at,
                    "webhook",
                    status="unsubscribed",
                    reason="manual",
                    key=f"test-{uuid.uuid4().hex}",
                )
            ]
        )
    finally:
        writer.close()
    page = get(app, f"/person?q={sample.email}")
    assert "In Mailchimp: <strong>unsubscribed</strong>" in page
    assert "reason manual" in page
    assert "<td>unsubscribe</td>" in page


def test_person_page_without_the_application_database(app: Dashboard) -> None:
    sample = next(s for s in app.store.sample("user", "registered_H24", 5) if s.email)
    people, app.people = app.people, None
    try:
        page = get(app, f"/person?q={sample.email}")
    finally:
        app.people = people
    assert "only the stored state is shown" in page
    assert f"<td>{sample.entity_id}</td>" in page
    assert "registered_H24" in page


def test_operations_page(app: Dashboard, demo: Demo) -> None:
    page = get(app, "/operations")
    assert page.count("<td>full</td>") == 4  # the demo's first cycle and three days
    assert "success" in page  # API calls by answer class
    assert "sha256 of the file" in page


def test_trends_page_draws_a_chart_per_state(app: Dashboard) -> None:
    page = get(app, "/trends?entity=user&days=7")
    assert page.count('class="chart"') == len(load_rules(app.rules().file).entity("user").states)
    assert "4 points" in page


def test_daemon_serves_the_pages_beside_metrics(demo: Demo) -> None:
    app = dashboard_for(demo)
    server = MetricsServer(Metrics(60), "127.0.0.1", 0, pages=app.get).start()
    try:
        base = f"http://127.0.0.1:{server.address[1]}"
        with urllib.request.urlopen(f"{base}/operations") as answer:
            assert answer.status == 200
            assert "Recent cycles" in answer.read().decode()
        with urllib.request.urlopen(f"{base}/metrics") as answer:
            assert "mailsync_cycles_total" in answer.read().decode()
    finally:
        server.stop()
        app.close()


def test_standalone_server_answers_over_http(app: Dashboard) -> None:
    server = serve(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{base}/lifecycle") as answer:
            assert answer.headers["Content-Type"].startswith("text/html")
        request = urllib.request.Request(f"{base}/lifecycle", method="POST", data=b"x")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 405
        refused.value.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- history ---------------------------------------------------------------------


def test_moves_are_exact_per_target_and_scaled_when_truncated() -> None:
    summary = CycleSummary(now=datetime(2026, 1, 1, tzinfo=UTC), full=False)
    summary.status_changes = Counter({("user", "b"): 10, ("user", "c"): 3})
    # Only 4 of the 10 changes into b were kept: 3 from a, 1 new.
    summary.changed = [("user", "1", "a", "b"), ("user", "2", "a", "b"), ("user", "3", "a", "b"),
                       ("user", "4", None, "b")]  # fmt: skip
    moves = history.moves_of(summary)
    assert moves[("user", "a", "b")] + moves[("user", "", "b")] == 10
    assert moves[("user", "a", "b")] in (7, 8)
    assert moves[("user", "?", "c")] == 3


def test_history_is_hourly_then_daily(db_url: str) -> None:
    store = StateStore(db_url)
    store.migrate()
    ruleset = load_rules(Path(__file__).resolve().parent.parent / "rules.yaml")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store.upsert_evaluations([EntityEvaluation("user", "1", None, "registered")])
    for hours in range(0, 48, 6):  # two days of cycles every 6 hours
        summary = CycleSummary(now=start + timedelta(hours=hours), full=False)
        summary.status_changes = Counter({("user", "registered"): 1})
        summary.changed = [("user", "1", None, "registered")]
        history.record_cycle(store, ruleset, summary)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(status_history)).scalar() == 8
    # 91 days later the old hours fold into one point per day.
    history.record_cycle(store, ruleset, CycleSummary(now=start + timedelta(days=92), full=False))
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(status_history.c.resolution)).all()
        assert sorted(r.resolution for r in rows) == ["day", "day", "hour"]
        daily = conn.execute(
            sa.select(transition_history).where(transition_history.c.resolution == "day")
        ).all()
        assert sorted(r._mapping["count"] for r in daily) == [4, 4]
        points = history.series(conn, "user")
    assert [p.at for p in points][:2] == [start, start + timedelta(days=1)]
    with store.engine.connect() as conn:
        thinned = history.series(conn, "user", max_points=2)
    assert [p.at for p in thinned] == [points[1].at, points[-1].at]
    store.close()


def test_demo_serve_keeps_the_dashboard_up_while_days_advance(tmp_path: Path) -> None:
    """`mailsync demo --serve`: the pages answer during the simulated days and
    after them, until Ctrl-C (SIGINT), which ends the demo cleanly."""
    command = [sys.executable, "-m", "sync", "demo", "--dir", str(tmp_path / "d"),
               "--users", "150", "--days", "2", "--start", "2026-03-01T09:00:00Z",
               "--serve", "--port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    url = None
    try:
        for line in process.stdout:
            seen.append(line)
            found = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                with urllib.request.urlopen(url + "lifecycle") as answer:
                    assert "2026-03-01 09:00:00 UTC" in answer.read().decode()
            if "stays up" in line:
                break
        assert url is not None, "".join(seen)
        with urllib.request.urlopen(url + "operations") as answer:
            page = answer.read().decode()
        assert "as of 2026-03-03 09:00:00 UTC" in page  # the simulated clock, two days on
        assert "Recent cycles (3)" in page
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(seen) + output
