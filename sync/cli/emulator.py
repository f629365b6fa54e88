"""``mailsync emulator``: run the local Mailchimp for demos and end-to-end tests.

A thin shell over :class:`sync.emulator.Emulator`: options become its
settings, the first lines printed tell a client where to go, and the
process serves until interrupted (Ctrl-C or SIGTERM), then exits 0.
"""

from __future__ import annotations

import signal
from types import FrameType

import click

from sync.cli._common import handle_errors
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator, FaultKind
from sync.exceptions import ConfigurationError, FatalError


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=int, default=8123, show_default=True, help="Port to bind; 0 picks a free one."
)
@click.option("--api-key", default=DEFAULT_API_KEY, show_default=True, help="The key to accept.")
@click.option("--list-id", default=DEFAULT_LIST_ID, show_default=True, help="The audience id.")
@click.option(
    "--fault-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Probability that any API call fails (0 to 1).",
)
@click.option("--fault-seed", type=int, default=None, help="Seed of the random faults.")
@click.option(
    "--fault-kind",
    "fault_kinds",
    multiple=True,
    type=click.Choice([k.value for k in FaultKind]),
    help="Kind of random fault; repeat for several (default: all).",
)
@click.option(
    "--max-connections",
    type=int,
    default=10,
    show_default=True,
    help="Simultaneous requests per key before answering 429.",
)
@click.option(
    "--service-delay",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds each API call takes to answer.",
)
@click.option(
    "--connect-delay",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds a new connection takes before its first request (TCP and TLS handshakes).",
)
@click.option(
    "--timeout-hold",
    type=float,
    default=130.0,
    show_default=True,
    help="Seconds a 'timeout' fault holds a request before hanging up.",
)
@click.option("--log-requests", is_flag=True, help="Log every request on stderr.")
@click.option(
    "--webhook-url",
    default=None,
    metavar="URL",
    help="Send list webhooks (unsubscribe, cleaned, upemail, profile, subscribe) here.",
)
@handle_errors
def emulator(
    host: str,
    port: int,
    api_key: str,
    list_id: str,
    fault_rate: float,
    fault_seed: int | None,
    fault_kinds: tuple[str, ...],
    max_connections: int,
    service_delay: float,
    connect_delay: float,
    timeout_hold: float,
    log_requests: bool,
    webhook_url: str | None,
) -> None:
    """Run a local emulator of the Mailchimp Marketing API v3."""
    server = Emulator(
        host=host,
        port=port,
        api_key=api_key,
        list_id=list_id,
        max_connections=max_connections,
        service_delay=service_delay,
        connect_delay=connect_delay,
        timeout_hold=timeout_hold,
        verbose=log_requests,
        webhook_url=webhook_url,
    )
    if fault_rate:
        try:
            server.faults.set_random(fault_rate, fault_seed, fault_kinds or None)
        except ValueError as exc:
            raise ConfigurationError(f"--fault-rate: {exc}") from exc
    try:
        server.start()
    except OSError as exc:
        raise FatalError(f"cannot listen on {host}:{port}: {exc}") from exc

    def interrupt(signum: int, frame: FrameType | None) -> None:
        server.interrupt()

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        click.echo(f"Mailchimp emulator listening on {server.url}")
        click.echo(f"API key:    {server.api_key}")
        click.echo(f"Audience:   {server.list_id}")
        click.echo(f"Inspection: {server.root_url}/_emulator/")
        click.echo("Press Ctrl-C to stop.")
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
