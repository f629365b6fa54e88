"""The dashboard application: routes, access control, and the WSGI server.

``Dashboard.handle(method, target, headers)`` answers one request with a
``Response``; it is served two ways with the same code:

* by ``mailsync dashboard`` through ``serve`` (the standard library's WSGI
  server, one thread per request);
* by the daemon beside ``/metrics`` (``sync.daemon.metrics.MetricsServer`` hands it
  every other path).

Only GET (and HEAD) are answered; anything else is 405, and the state store is
open read-only anyway (``sync.dashboard.store``). The pages are for the
operator's own machine by default: binding to an address other than loopback
needs a secret from the environment (``MAILSYNC_DASHBOARD_TOKEN`` or
``MAILSYNC_DASHBOARD_PASSWORD``), checked on every request (HTTP basic
authentication with that password, or ``Authorization: Bearer TOKEN``), and
the server refuses to start without one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa

from sync.daemon import history
from sync.daemon.config import Config
from sync.daemon.runtime import Runtime
from sync.dashboard import pages
from sync.dashboard.charts import line_chart
from sync.dashboard.store import ReadOnlyStore
from sync.evaluate.explain import explain_entity, find_records
from sync.exceptions import ConfigurationError, MailsyncError
from sync.rules.graph_svg import Annotations, offsets, render_svg
from sync.rules.model import Entity, Ruleset
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources

log = logging.getLogger(__name__)

TOKEN_ENV = "MAILSYNC_DASHBOARD_TOKEN"
PASSWORD_ENV = "MAILSYNC_DASHBOARD_PASSWORD"
WINDOWS = (timedelta(hours=24), timedelta(days=7))
SAMPLE = 50
MAX_POINTS = 120


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error"}  # fmt: skip


# -- access --------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """The secrets a request may present; none configured means open (loopback only)."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Access:
        env = os.environ if env is None else env
        return cls(tuple(v for v in (env.get(TOKEN_ENV), env.get(PASSWORD_ENV)) if v))

    def allows(self, headers: Mapping[str, str]) -> bool:
        if not self.secrets:
            return True
        given = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        scheme, _, value = given.partition(" ")
        candidate = ""
        if scheme.lower() == "bearer":
            candidate = value.strip()
        elif scheme.lower() == "basic":
            try:
                candidate = base64.b64decode(value.strip()).decode().partition(":")[2]
            except ValueError:
                return False
        # Compared as digests, in constant time, so neither length nor content leaks.
        digest = hashlib.sha256(candidate.encode()).digest()
        return any(
            hmac.compare_digest(digest, hashlib.sha256(s.encode()).digest()) for s in self.secrets
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, access: Access) -> None:
    """Refuse to serve the pages beyond this machine without a secret."""
    if not is_loopback(host) and not access.secrets:
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host}: anyone who can reach it would see "
            f"your audience. Set {TOKEN_ENV} or {PASSWORD_ENV} in the environment (the "
            "browser asks for it as a password), or bind to 127.0.0.1"
        )


# -- person lookups ------------------------------------------------------------


class People:
    """Reads one entity's records from the application database, for ``explain``."""

    def __init__(self, sources: SourcesConfig, database: str, events_max_age: timedelta) -> None:
        self.sources = sources
        self.database = database
        self.events_max_age = events_max_age
        self._reader: SourceReader | None = None
        self._lock = threading.Lock()

    def reader(self) -> SourceReader:
        with self._lock:
            if self._reader is None:
                self._reader = SourceReader(self.sources, self.database)
            return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


# -- the application -------------------------------------------------------------


class Dashboard:
    def __init__(
        self,
        store: ReadOnlyStore,
        rules: Callable[[], Ruleset],
        *,
        clock: Callable[[], datetime],
        access: Access | None = None,
        people: People | None = None,
        rules_file: Path | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.clock = clock
        self.access = access or Access()
        self.people = people
        self.rules_file = rules_file

    def close(self) -> None:
        if self.people is not None:
            self.people.close()
        self.store.close()

    # The entry point of both servers.
    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"read-only: GET only\n", "text/plain", (("Allow", "GET, HEAD"),))
        if not self.access.allows(headers):
            return Response(
                401, b"authentication required\n", "text/plain",
                (("WWW-Authenticate", 'Basic realm="mailsync dashboard", charset="UTF-8"'),),
            )  # fmt: skip
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = {
            "/": self.lifecycle, "/lifecycle": self.lifecycle, "/status": self.status,
            "/trends": self.trends, "/person": self.person, "/operations": self.operations,
        }.get(url.path.rstrip("/") or "/")  # fmt: skip
        if route is None:
            return self._error(404, "No such page.")
        try:
            return route(query)
        except _NotFound as exc:
            return self._error(404, str(exc))
        except (MailsyncError, sa.exc.SQLAlchemyError) as exc:
            log.error("dashboard page %s failed: %s", url.path, exc)
            return self._error(500, f"This page could not be built: {exc}")

    def get(
        self, target: str, headers: Mapping[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """A GET as ``sync.daemon.metrics.MetricsServer`` hands it over."""
        response = self.handle("GET", target, headers)
        return response.status, self._headers(response), response.body

    @staticmethod
    def _headers(response: Response) -> list[tuple[str, str]]:
        return [("Content-Type", response.content_type),
                ("Content-Length", str(len(response.body))),
                ("Cache-Control", "no-store"), *response.headers]  # fmt: skip

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI."""
        target = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        headers = {"Authorization": environ.get("HTTP_AUTHORIZATION", "")}
        response = self.handle(environ["REQUEST_METHOD"], target, headers)
        start_response(f"{response.status} {REASONS.get(response.status, '')}",
                       self._headers(response))  # fmt: skip
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else response.body]

    # -- helpers

    def _page(self, title: str, current: str, body: str) -> Response:
        return Response(200, pages.page(title, current, body, now=self.clock()).encode())

    def _error(self, status: int, message: str) -> Response:
        title = "Not found" if status == 404 else "Error"
        body = pages.page(title, "", f"<p>{pages.h(message)}</p>", now=self.clock())
        return Response(status, body.encode())

    def _entity(self, query: Mapping[str, str]) -> Entity:
        ruleset = self.rules()
        name = query.get("entity") or next(iter(ruleset.entities))
        if name not in ruleset.entities:
            raise _NotFound(f"No entity type {name!r} in the rules.")
        return ruleset.entities[name]

    # -- pages

    def lifecycle(self, query: Mapping[str, str]) -> Response:
        entity = self._entity(query)
        ruleset = self.rules()
        counts = self._counts(entity.name)
        moves: dict[tuple[str, str], tuple[int, ...]] = {}
        if self.store.has_history:
            with self.store.engine.connect() as conn:
                moves = history.flows(conn, entity.name, self.clock(), WINDOWS)
        timed = set(offsets(entity))  # (from, to) of every ladder step, then, loop
        entered_all: dict[str, tuple[int, int]] = {}
        entered_otherwise: dict[str, tuple[int, int]] = {}
        for (source, target), (day, week) in moves.items():
            for into, keep in (
                (entered_all, True),
                (entered_otherwise, (source, target) not in timed),
            ):
                if keep:
                    before = into.get(target, (0, 0))
                    into[target] = (before[0] + day, before[1] + week)
        notes = Annotations(
            counts={k: v for k, v in counts.items() if k is not None},
            total=sum(counts.values()),
            flows={pair: (v[0], v[1]) for pair, v in moves.items() if pair in timed},
            entries=entered_otherwise,
            href=lambda status: pages.link("/status", entity=entity.name, status=status),
        )
        svg = render_svg(ruleset, entity.name, {entity.name: notes}, standalone=False)
        body = pages.lifecycle_body(
            list(ruleset.entities), entity.name, svg, counts, entity.status_names,
            entered_all, self.store.has_history,
        )  # fmt: skip
        return self._page(f"Lifecycle: {entity.name}", "lifecycle", body)

    def _counts(self, entity_type: str) -> dict[str | None, int]:
        """Entities per status. Only a cycle changes statuses, and the daemon
        records the counts after each one: when the newest cycle finished and
        its counts are recorded, they are the live counts, read in a
        millisecond; otherwise (a cycle running or failed, no history) they
        are counted now, which at a million entities takes a while."""
        if self.store.has_history:
            newest = self.store.cycles(limit=1)
            with self.store.engine.connect() as conn:
                recorded = history.latest_counts(conn, entity_type)
            if (
                recorded is not None
                and newest
                and newest[0].finished_at is not None
                and newest[0].counts.get("now") == recorded[0]
            ):
                return {status or None: n for status, n in recorded[1].items()}
        return self.store.status_counts(entity_type)

    def status(self, query: Mapping[str, str]) -> Response:
        entity = self._entity(query)
        status = query.get("status") or None
        if status is not None and status not in entity.status_names:
            raise _NotFound(f"No status {status!r} for {entity.name}.")
        sample = self.store.sample(entity.name, status, SAMPLE)
        count = self.store.count_in(entity.name, status)
        body = pages.status_body(entity.name, status, count, sample)
        return self._page(f"{entity.name} in {status or '(no status)'}", "lifecycle", body)

    def person(self, query: Mapping[str, str]) -> Response:
        who = query.get("q", "").strip()
        if not who:
            return self._page("Person", "person", pages.person_form(""))
        ruleset = self.rules()
        wanted = query.get("entity", "")
        stored = [s for s in self.store.find(who) if not wanted or s.entity_type == wanted]
        if self.people is None:
            note = "The application database is not configured: only the stored state is shown."
            return self._page("Person", "person", pages.stored_body(who, stored, note))
        types = [wanted] if wanted in ruleset.entities else (
            sorted({s.entity_type for s in stored}) or list(ruleset.entities))  # fmt: skip
        now = self.clock()
        found = find_records(who, types, self.people.sources, self.people.reader(), self.store, now)
        explanations = [
            explain_entity(
                ruleset.entity(name), record, now, self.store, limit=50,
                events_since=now - self.people.events_max_age,
            )
            for name, record in found
            if name in ruleset.entities
        ]  # fmt: skip
        message = None if explanations else f"No entity {who!r} in the sources."
        return self._page("Person", "person", pages.person_body(who, explanations, message))

    def operations(self, query: Mapping[str, str]) -> Response:
        now = self.clock()
        body = pages.operations_body(
            self.store.cycles(limit=50),
            self.store.failure_counts(),
            self.store.recent_failures(permanent=True, limit=100),
            self.store.count_due(now),
            [(leader.holder, leader.until) for leader in self.store.leaders()],
            self._rules_info(),
        )
        return self._page("Operations", "operations", body)

    def _rules_info(self) -> list[tuple[str, str]]:
        ruleset = self.rules()
        info = [("file", ruleset.file)]
        if self.rules_file is not None and self.rules_file.is_file():
            data = self.rules_file.read_bytes()
            stamp = datetime.fromtimestamp(self.rules_file.stat().st_mtime, UTC)
            info += [("sha256 of the file", hashlib.sha256(data).hexdigest()[:16]),
                     ("file modified", pages.when(stamp))]  # fmt: skip
        info += [
            (f"{name} statuses", f"{len(e.status_names)} ({e.mode.value} mode)")
            for name, e in ruleset.entities.items()
        ]
        return info

    def trends(self, query: Mapping[str, str]) -> Response:
        entity = self._entity(query)
        ruleset = self.rules()
        days = query.get("days", "30")
        if days != "all" and days not in ("1", "7", "30", "90", "365"):
            days = "30"
        now = self.clock()
        since = None if days == "all" else now - timedelta(days=int(days))
        charts: list[str] = []
        points: list[history.Point] = []
        if self.store.has_history:
            with self.store.engine.connect() as conn:
                # A chart is a few hundred pixels wide: more points draw nothing more.
                points = history.series(conn, entity.name, since, max_points=MAX_POINTS)
        if points:
            times = [p.at for p in points]
            start = max(since, times[0]) if since else times[0]
            for state in entity.states.values():
                lines = [(s, [p.counts.get(s, 0) for p in points]) for s in state.status_names]
                charts.append(line_chart(state.name, times, lines, start, max(now, times[-1])))
        body = pages.trends_body(list(ruleset.entities), entity.name, days, charts, len(points))
        return self._page(f"Trends: {entity.name}", "trends", body)


class _NotFound(Exception):
    pass


# -- serving -------------------------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: " + format, *args)


def serve(dashboard: Dashboard, host: str, port: int) -> WSGIServer:
    """A started-on-demand WSGI server for ``dashboard`` (call ``serve_forever``)."""
    check_bind(host, dashboard.access)
    return make_server(host, port, dashboard, server_class=_ThreadingServer,
                       handler_class=_QuietHandler)  # fmt: skip


def from_config(
    config: Config,
    rules: Callable[[], Ruleset],
    clock: Callable[[], datetime],
    sources: SourcesConfig | None = None,
    access: Access | None = None,
) -> Dashboard:
    """The dashboard over the state store and sources of ``config``."""
    people = None
    if config.database:
        sources = sources or load_sources(config.sources)
        people = People(sources, config.database, config.daemon.events_max_age)
    return Dashboard(
        ReadOnlyStore(config.state, schema=config.state_schema),
        rules,
        clock=clock,
        access=access or Access.from_env(),
        people=people,
        rules_file=config.rules,
    )


def for_daemon(config: Config, runtime: Runtime, host: str) -> Dashboard | None:
    """The pages the daemon serves beside ``/metrics``, on a read-only store of
    its own; None (logged) when the address is public and no secret is set:
    the metrics stay served, the audience's details are not."""
    access = Access.from_env()
    try:
        check_bind(host, access)
    except ConfigurationError as exc:
        log.warning("dashboard pages not served: %s", exc)
        return None
    # The rules in force, also after a reload; the daemon's clock (simulated in demos).
    return from_config(config, lambda: runtime.ruleset, runtime.clock, runtime.sources, access)


class Background:
    """A dashboard served from a thread while the process does something else
    (``mailsync demo --serve`` runs its cycles meanwhile)."""

    def __init__(self, dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0) -> None:
        self.dashboard = dashboard
        self.host = host
        self.server = serve(dashboard, host, port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.dashboard.close()
