"""The daemon as a process: ``mailsync run`` from start to stop.

``run_daemon`` builds the runtime (waiting, with back-off, for a database
that cannot be reached yet), serves ``/healthz``, ``/metrics``, the
webhook receiver and the dashboard's pages on one HTTP port, takes part in
the leader election and runs ``serve`` until ``stop`` is set; then it
closes everything it opened. The dashboard's pages come from the layer
above (``sync.dashboard``) through ``pages_for``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Protocol

from sync.daemon.clock import clock_from_env
from sync.daemon.config import Config
from sync.daemon.lock import leader_lock
from sync.daemon.metrics import Metrics, MetricsServer, parse_address
from sync.daemon.runtime import Runtime
from sync.daemon.serve import build_runtime_patiently, serve
from sync.exceptions import ConfigurationError
from sync.mailchimp.webhooks import PREFIX, WebhookReceiver

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")


class Pages(Protocol):
    """Pages served beside ``/metrics`` (the dashboard)."""

    def get(
        self, target: str, headers: Mapping[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]: ...

    def close(self) -> None: ...


def check_http(config: Config, metrics_address: str | None) -> None:
    """The webhook receiver needs the daemon's HTTP port."""
    if config.mailchimp.webhook_secret and not (metrics_address or config.metrics):
        raise ConfigurationError(
            "a webhook secret is set but the daemon has no HTTP port: the webhook "
            "receiver is served with the metrics (set --metrics or MAILSYNC_METRICS)"
        )


def run_daemon(
    config: Config,
    stop: threading.Event,
    *,
    dry_run: bool = False,
    metrics_address: str | None = None,
    backfill: timedelta | None = None,
    pages_for: Callable[[Runtime, str], Pages | None] | None = None,
) -> None:
    """Run the daemon until ``stop`` is set (``check_http`` first)."""
    # A database that cannot be reached yet (a server still starting) is
    # waited for, with back-off; one that needs an operator ends the run.
    runtime = build_runtime_patiently(
        config, stop, dry_run=dry_run, out=sys.stdout, clock=clock_from_env()
    )
    if runtime is None:
        return
    runtime.backfill_events = backfill
    # SIGTERM mid-query: the handler only sets the event (a signal handler
    # must not do I/O); this thread then cancels the running source query,
    # so that the daemon ends in seconds, not when the query does.
    threading.Thread(
        target=_cancel_on_stop, args=(stop, runtime), name="cancel-on-stop", daemon=True
    ).start()
    metrics = Metrics(
        config.daemon.interval.total_seconds(), config.daemon.cycle_overrun.total_seconds()
    )
    server = None
    pages = None
    address = metrics_address or config.metrics
    receiver = None
    if config.mailchimp.webhook_secret:
        try:
            receiver = WebhookReceiver(
                runtime.state, config.mailchimp.webhook_secret, config.mailchimp.list_id
            )
        except ConfigurationError:
            runtime.close()
            raise
    if address:
        host, port = parse_address(address)
        # The dashboard, beside /metrics.
        pages = pages_for(runtime, host) if pages_for is not None else None
        server = MetricsServer(
            metrics, host, port, webhooks=receiver, pages=pages.get if pages else None
        ).start()
        # Through the log, not echoed: with --log-format json every line is JSON.
        log.info("metrics on http://%s:%s/metrics", host, server.address[1])
        if receiver is not None:
            log.info(
                "Mailchimp webhooks on http://%s:%s%s<secret>", host, server.address[1], PREFIX
            )
    lock = leader_lock(
        runtime.state, config.mailchimp.list_id or "dry-run", ttl=config.daemon.lease_ttl
    )
    try:
        serve(runtime, lock, metrics)
    finally:
        if server is not None:
            server.stop()
        if pages is not None:
            pages.close()
        runtime.close()


def _cancel_on_stop(stopping: threading.Event, runtime: Runtime) -> None:
    stopping.wait()
    if runtime.reader.cancel():
        log.info("stopping: the running source query was cancelled")
