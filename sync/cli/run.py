"""``mailsync run``: the daemon operators leave running for months."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from sync.cli._common import config_option, handle_errors, parse_backfill
from sync.daemon.config import load_config
from sync.daemon.logs import configure_logging
from sync.daemon.service import check_http, run_daemon
from sync.dashboard import app as dashboard


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
    check_http(config, metrics_address)
    backfill = parse_backfill(backfill_events)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_daemon(
        config,
        stopping,
        dry_run=dry_run,
        metrics_address=metrics_address,
        backfill=backfill,
        pages_for=lambda runtime, host: dashboard.for_daemon(config, runtime, host),
    )
