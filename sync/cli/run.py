"""``mailsync run``: the daemon operators leave running for months."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from sync.cli._common import config_option, handle_errors, parse_backfill
from sync.config import load_config
from sync.daemon import build_runtime, clock_from_env, serve
from sync.exceptions import ConfigurationError
from sync.lock import leader_lock
from sync.logs import configure_logging
from sync.metrics import Metrics, MetricsServer, parse_address
from sync.webhooks import PREFIX, WebhookReceiver


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
    runtime = build_runtime(config, dry_run=dry_run, out=sys.stdout, clock=clock_from_env())
    runtime.backfill_events = parse_backfill(backfill_events)

    def stop(signum: int, _frame: FrameType | None) -> None:
        runtime.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metrics = Metrics(config.daemon.interval.total_seconds())
    server = None
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
        server = MetricsServer(metrics, host, port, webhooks=receiver).start()
        click.echo(f"metrics on http://{host}:{server.address[1]}/metrics", err=True)
        if receiver is not None:
            click.echo(
                f"Mailchimp webhooks on http://{host}:{server.address[1]}{PREFIX}<secret>",
                err=True,
            )
    lock = leader_lock(
        runtime.state, config.mailchimp.list_id or "dry-run", ttl=config.daemon.lease_ttl
    )
    try:
        serve(runtime, lock, metrics)
    finally:
        if server is not None:
            server.stop()
        runtime.close()
