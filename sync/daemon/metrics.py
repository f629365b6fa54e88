"""What an operator watches: ``/healthz`` and ``/metrics`` on 127.0.0.1.

``Metrics`` accumulates counters and gauges from each cycle; ``MetricsServer``
serves them in the Prometheus text format (version 0.0.4) from a stdlib HTTP
server in a background thread. It binds to 127.0.0.1 unless told otherwise:
the numbers say how big the audience is and how the daemon fares, which is
nobody else's business.

The same server receives Mailchimp's webhooks when a secret is configured
(``sync.mailchimp.webhooks``): they need an HTTP port, and this is the daemon's one.

``/healthz`` answers 200 "ok" while the last successful cycle is recent
(within three poll intervals, or the daemon is a standby waiting for the
lock), and 503 with the reason otherwise: ``stale`` (no successful cycle for
too long), ``overrun`` (the cycle running now has run longer than
``daemon.cycle_overrun`` or three intervals, say a hanging query) or
``degraded`` (the last cycle ran, but Mailchimp did not accept some of its
writes: answers 5xx, 429 or timeouts until the retries gave up; or the
audience lacks merge tags the rules push, whose values Mailchimp drops). A
supervisor can restart a daemon that is stuck, and an alert can say why.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.daemon.cycle_summary import CycleSummary
from sync.mailchimp.webhooks import WebhookReceiver


def degraded_reasons(summary: CycleSummary) -> list[str]:
    """Why a cycle that ran is ``degraded``: Mailchimp did not accept writes
    for a transient reason (they are retried next cycle), or the audience
    lacks merge tags (an audience configuration error, until fixed).
    Permanent refusals (a fake address) are the data's business, not the
    daemon's health."""
    reasons = []
    transient = [f for f in summary.push.failures if not f.permanent]
    if transient:
        example = transient[0].reason
        reasons.append(
            f"Mailchimp did not accept {len(transient)} of {summary.push.considered} members "
            f"(e.g. {example}); retried next cycle"
        )
    missing = summary.push.missing_merge_tags
    if missing:
        # A field deleted or renamed in the audience: its values are dropped
        # by Mailchimp until someone re-creates it (`mailsync check --fix`).
        reasons.append(
            f"the audience lacks the merge tags {', '.join(sorted(missing))}: their values "
            "are not kept (re-create them: mailsync check --fix)"
        )
    return reasons


class Metrics:
    def __init__(self, interval_s: float, overrun_s: float = 900.0) -> None:
        self.interval_s = interval_s
        #: A cycle running longer than this makes /healthz answer 503.
        self.overrun_s = max(3 * interval_s, overrun_s)
        self.cycle_since: float | None = None
        self.degraded: list[str] = []
        self.lock = threading.Lock()
        self.cycles: Counter[str] = Counter()  # by outcome
        self.entities = Counter[str]()
        self.pushes = Counter[str]()
        self.api_calls = Counter[str]()
        self.failures = Counter[str]()
        # Values not kept because the audience lacks their merge tag, by tag.
        self.missing_tags = Counter[str]()
        self.last_duration_s = 0.0
        self.backlog = 0
        #: Members waiting for /batches jobs left running, after the last cycle.
        self.waiting_for_jobs = 0
        self.last_success: float | None = None
        self.started = time.time()
        self.leader = False
        #: Set when the webhook receiver runs: its counts are rendered too.
        self.webhooks: WebhookReceiver | None = None
        #: Members the reconciliation poll read.
        self.polled = 0

    def cycle_started(self) -> None:
        with self.lock:
            self.cycle_since = time.time()

    def cycle_ended(self) -> None:
        with self.lock:
            self.cycle_since = None

    def observe(self, summary: CycleSummary, ok: bool) -> None:
        trouble = degraded_reasons(summary) if ok else []
        with self.lock:
            self.degraded = trouble
            self.cycles["failed" if not ok else "degraded" if trouble else "ok"] += 1
            self.entities.update(summary.entities_read)
            self.pushes["pushed"] += summary.push.pushed
            self.pushes["unchanged"] += summary.push.unchanged
            self.pushes["failed"] += summary.push.failed
            self.pushes["archived"] += summary.push.archived
            self.pushes["events"] += summary.push.events_sent
            self.pushes["not_json"] += summary.push.invalid_values
            self.missing_tags.update(summary.push.missing_merge_tags)
            self.api_calls.update(summary.push.calls)
            self.failures.update(summary.entities_failed)
            self.last_duration_s = summary.duration_s
            self.backlog = summary.backlog
            self.waiting_for_jobs = summary.members_in_running_jobs
            if ok:
                self.last_success = time.time()

    def failed_cycle(self) -> None:
        with self.lock:
            self.cycles["failed"] += 1

    def healthy(self) -> bool:
        return self.health()[0]

    def health(self) -> tuple[bool, str]:
        """(healthy, the reason in one line) for ``/healthz``."""
        with self.lock:
            if not self.leader:
                return True, "ok: standby"  # a standby is healthy while it waits
            now = time.time()
            if self.cycle_since is not None and now - self.cycle_since > self.overrun_s:
                return False, (
                    f"overrun: the current cycle has run for {now - self.cycle_since:.0f}s "
                    f"(limit {self.overrun_s:.0f}s)"
                )
            reference = self.last_success or self.started
            if now - reference > 3 * self.interval_s + 60:
                return False, f"stale: no successful cycle for {now - reference:.0f}s"
            if self.degraded:
                return False, "degraded: " + "; ".join(self.degraded)
            return True, "ok"

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
                "mailsync_merge_values_not_kept_total",
                "counter",
                "Merge values not sent or dropped by Mailchimp because the audience lacks "
                "their merge tag (deleted or renamed), by tag.",
                {f'{{tag="{k}"}}': v for k, v in sorted(self.missing_tags.items())} or {"": 0},
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
                "mailsync_members_in_running_batches",
                "gauge",
                "Members waiting for /batches jobs left running (mailchimp.batch_wait), "
                "after the last cycle.",
                {"": self.waiting_for_jobs},
            )
            family(
                "mailsync_seconds_since_last_success",
                "gauge",
                "Lag since the last successful cycle (since start if none).",
                {"": round(lag, 3)},
            )
            if self.webhooks is not None:
                counts = dict(self.webhooks.counts)
                family(
                    "mailsync_webhooks_total",
                    "counter",
                    "Mailchimp webhooks received, by result.",
                    {f'{{result="{k}"}}': v for k, v in sorted(counts.items())} or {"": 0},
                )
            family(
                "mailsync_poll_members_total",
                "counter",
                "Members read by the reconciliation poll (GET members?since_last_changed).",
                {"": self.polled},
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
        webhooks: WebhookReceiver | None = None,
        pages: Pages | None = None,
    ) -> None:
        outer = metrics
        metrics.webhooks = webhooks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if webhooks is not None and webhooks.handles(self.path):
                    self._send(*webhooks.answer_get(), "text/plain")
                elif self.path == "/metrics":
                    body = outer.render().encode()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif self.path == "/healthz":
                    ok, reason = outer.health()
                    self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")
                elif pages is not None:
                    status, headers, body = pages(self.path, dict(self.headers))
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if webhooks is not None and webhooks.handles(self.path):
                    self._send(*webhooks.answer_post(body), "text/plain")
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
