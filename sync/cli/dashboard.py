"""``mailsync dashboard``: the lifecycle, trends, people and operations in a browser."""

from __future__ import annotations

import click

from sync.cli._common import at_option, config_option, handle_errors, parse_at
from sync.daemon.clock import system_clock
from sync.daemon.config import load_config
from sync.dashboard import from_config, serve
from sync.rules.schema import load_rules


@click.command()
@config_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs a secret (see below).",
)
@click.option("--port", default=8465, show_default=True, help="Port to listen on (0: any free).")
@at_option
@handle_errors
def dashboard(config_path: str | None, host: str, port: int, at: str | None) -> None:
    """Serve the dashboard: read-only pages over the state store.

    Lifecycle (live counts on the ladder drawing), Trends, Person (the
    explain timeline) and Operations. The state store is opened read-only:
    no page can change anything. Bound to 127.0.0.1 by default; to listen
    elsewhere set MAILSYNC_DASHBOARD_TOKEN or MAILSYNC_DASHBOARD_PASSWORD,
    which every request must then give (as the basic-auth password, or as a
    Bearer token). Stop with Ctrl-C.
    """  # fmt: skip
    config = load_config(config_path)
    ruleset = load_rules(config.rules)
    fixed = parse_at(at)
    app = from_config(config, lambda: ruleset, (lambda: fixed) if fixed else system_clock)
    try:
        server = serve(app, host, port)
        click.echo(f"dashboard on http://{host}:{server.server_port}/ (read-only; Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        app.close()
