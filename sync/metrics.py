"""What an operator watches: ``/healthz`` and ``/metrics`` on 127.0.0.1.

``Metrics`` accumulates counters and gauges from each cycle; ``MetricsServer``
serves them in the Prometheus text format (version 0.0.4) from a stdlib HTTP
server in a background thread. It binds to 127.0.0.1 unless told otherwise:
the numbers say how big the audience is and how the daemon fares, which is
nobody else's business.

``/healthz`` answers 200 while the last successful cycle is recent (within
three poll intervals, or the daemon is a standby waiting for the lock), else
503, so a supervisor can restart a daemon that is stuck.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.cycle import CycleSummary


class Metrics:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.cycles: Counter[str] = Counter()  # by outcome
        self.entities = Counter[str]()
        self.pushes = Counter[str]()
        self.api_calls = Counter[str]()
        self.failures = Counter[str]()
        self.last_duration_s = 0.0
        self.backlog = 0
        self.last_success: float | None = None
        self.started = time.time()
        self.leader = False

    def observe(self, summary: CycleSummary, ok: bool) -> None:
        with self.lock:
            self.cycles["ok" if ok else "failed"] += 1
            self.entities.update(summary.entities_read)
            self.pushes["pushed"] += summary.push.pushed
            self.pushes["unchanged"] += summary.push.unchanged
            self.pushes["failed"] += summary.push.failed
            self.pushes["events"] += summary.push.events_sent
            self.api_calls.update(summary.push.calls)
            self.failures.update(summary.entities_failed)
            self.last_duration_s = summary.duration_s
            self.backlog = summary.backlog
            if ok:
                self.last_success = time.time()

    def failed_cycle(self) -> None:
        with self.lock:
            self.cycles["failed"] += 1

    def healthy(self) -> bool:
        with self.lock:
            if not self.leader:
                return True  # a standby is healthy while it waits
            reference = self.last_success or self.started
            return time.time() - reference <= 3 * self.interval_s + 60

    def render(self) -> str:
        with self.lock:
            lag = time.time() - (self.last_success or self.started)
            lines: list[str] = []

            def family(name: str, kind: str, help_text: str, samples: dict[str, Any]) -> None:
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in samples.items():
                    lines.append(f"{name}{labels} {value}")

            family(
                "mailsync_cycles_total",
                "counter",
                "Cycles run, by outcome.",
                {f'{{outcome="{k}"}}': v for k, v in sorted(self.cycles.items())} or {"": 0},
            )
            family(
                "mailsync_cycle_duration_seconds",
                "gauge",
                "Duration of the last cycle.",
                {"": round(self.last_duration_s, 3)},
            )
            family(
                "mailsync_entities_evaluated_total",
                "counter",
                "Entities read and evaluated, by entity type.",
                {f'{{entity="{k}"}}': v for k, v in sorted(self.entities.items())} or {"": 0},
            )
            family(
                "mailsync_pushes_total",
                "counter",
                "Members pushed, unchanged or failed, and events sent.",
                {f'{{result="{k}"}}': v for k, v in sorted(self.pushes.items())} or {"": 0},
            )
            family(
                "mailsync_api_calls_total",
                "counter",
                "Mailchimp API calls, by answer class.",
                {f'{{answer="{k}"}}': v for k, v in sorted(self.api_calls.items())} or {"": 0},
            )
            family(
                "mailsync_evaluation_failures_total",
                "counter",
                "Records that could not be evaluated, by entity type.",
                {f'{{entity="{k}"}}': v for k, v in sorted(self.failures.items())} or {"": 0},
            )
            family(
                "mailsync_backlog",
                "gauge",
                "Due entities left for the next cycle.",
                {"": self.backlog},
            )
            family(
                "mailsync_seconds_since_last_success",
                "gauge",
                "Lag since the last successful cycle (since start if none).",
                {"": round(lag, 3)},
            )
            family(
                "mailsync_leader",
                "gauge",
                "1 when this instance holds the leader lock.",
                {"": int(self.leader)},
            )
            return "\n".join(lines) + "\n"


#: Answers every other GET (the dashboard's pages, sync.dashboard):
#: (path with query, request headers) -> (status, headers, body).
Pages = Callable[[str, Mapping[str, str]], tuple[int, list[tuple[str, str]], bytes]]


class MetricsServer:
    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 9464,
        pages: Pages | None = None,
    ) -> None:
        outer = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = outer.render().encode()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif self.path == "/healthz":
                    ok = outer.healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stale\n", "text/plain")
                elif pages is not None:
                    status, headers, body = pages(self.path, dict(self.headers))
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the daemon's own log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def parse_address(text: str) -> tuple[str, int]:
    """``9464`` or ``127.0.0.1:9464`` or ``0.0.0.0:9464`` (explicitly public)."""
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1"), int(port)
