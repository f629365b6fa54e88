"""``mailsync run``: the daemon operators leave running for months."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from sync.cli._common import config_option, handle_errors
from sync.config import load_config
from sync.daemon import build_runtime, clock_from_env, serve
from sync.dashboard import app as dashboard
from sync.lock import leader_lock
from sync.logs import configure_logging
from sync.metrics import Metrics, MetricsServer, parse_address


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
@handle_errors
def run(
    config_path: str | None, dry_run: bool, metrics_address: str | None, log_format: str | None
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
    runtime = build_runtime(config, dry_run=dry_run, out=sys.stdout, clock=clock_from_env())

    def stop(signum: int, _frame: FrameType | None) -> None:
        runtime.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metrics = Metrics(config.daemon.interval.total_seconds())
    server = None
    pages = None
    address = metrics_address or config.metrics
    if address:
        host, port = parse_address(address)
        pages = dashboard.for_daemon(config, runtime, host)  # the dashboard, beside /metrics
        server = MetricsServer(metrics, host, port, pages.get if pages else None).start()
        click.echo(f"metrics on http://{host}:{server.address[1]}/metrics", err=True)
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
