"""``mailsync run``: the daemon operators leave running for months."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click

from sync.cli._common import config_option, handle_errors, parse_backfill
from sync.daemon.clock import clock_from_env
from sync.daemon.config import load_config
from sync.daemon.lock import leader_lock
from sync.daemon.logs import configure_logging
from sync.daemon.metrics import Metrics, MetricsServer, parse_address
from sync.daemon.runtime import Runtime
from sync.daemon.serve import build_runtime_patiently, serve
from sync.dashboard import app as dashboard
from sync.exceptions import ConfigurationError
from sync.mailchimp.webhooks import PREFIX, WebhookReceiver

log = logging.getLogger(__name__)

log = logging.getLogger("sync.daemon.runtime")


@click.command()
@config_option
@click.option(
    "--dry-run", is_flag=True, help="Write what would be sent as JSON lines; send nothing."
)
@click.option(
    "--metrics",
    "metrics_address",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve /healthz and /metrics here (default host 127.0.0.1).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log as text or JSON lines (default: from the settings, else text).",
)
@click.option(
    "--backfill-events",
    default=None,
    metavar="DURATION",
    help="Going live (a new state store): also send the events of this long before.",
)
@handle_errors
def run(
    config_path: str | None,
    dry_run: bool,
    metrics_address: str | None,
    log_format: str | None,
    backfill_events: str | None,
) -> None:
    """Poll for ever: one cycle per `daemon.interval`, a full re-scan at start
    and every `daemon.full_rescan`.

    Only one daemon per audience runs cycles (a leader lock in the state
    store); another one waits as a standby and takes over when the first
    dies. SIGTERM or SIGINT end the current batch and exit 0. When
    rules.yaml changes it is validated and, if valid, used from the next
    cycle; if not, the errors are logged and the previous rules stay in force.
    """
    config = load_config(config_path)
    configure_logging(log_format or config.log_format)
    if config.mailchimp.webhook_secret and not (metrics_address or config.metrics):
        raise ConfigurationError(
            "a webhook secret is set but the daemon has no HTTP port: the webhook "
            "receiver is served with the metrics (set --metrics or MAILSYNC_METRICS)"
        )
    backfill = parse_backfill(backfill_events)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A database that cannot be reached yet (a server still starting) is
    # waited for, with back-off; one that needs an operator ends the run.
    runtime = build_runtime_patiently(
        config, stopping, dry_run=dry_run, out=sys.stdout, clock=clock_from_env()
    )
    if runtime is None:
        return
    runtime.backfill_events = backfill
    # SIGTERM mid-query: the handler only sets the event (a signal handler
    # must not do I/O); this thread then cancels the running source query,
    # so that the daemon ends in seconds, not when the query does.
    threading.Thread(
        target=_cancel_on_stop, args=(stopping, runtime), name="cancel-on-stop", daemon=True
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
        pages = dashboard.for_daemon(config, runtime, host)  # the dashboard, beside /metrics
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
