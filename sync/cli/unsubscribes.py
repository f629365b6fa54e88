"""``mailsync unsubscribes``: who opted out in Mailchimp, for the application.

mailsync never writes to the application's database; this command is how
the application learns who unsubscribed or was cleaned (hard bounce, abuse
report) in Mailchimp, from the webhooks and the reconciliation poll the
daemon recorded, so that it can honour it in its own mail.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from sync.cli._common import config_option, handle_errors
from sync.daemon.config import load_config
from sync.daemon.reports import opt_outs
from sync.records import parse_instant


@click.command()
@config_option
@click.option(
    "--since",
    default=None,
    metavar="INSTANT",
    help="Only those whose status changed at or after INSTANT (ISO 8601 with offset).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools.")
@handle_errors
def unsubscribes(config_path: str | None, since: str | None, as_json: bool) -> None:
    """List members now unsubscribed or cleaned in Mailchimp, oldest first,
    with the entities of the application that feed them."""
    after: datetime | None = None
    if since is not None:
        try:
            after = parse_instant(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    config = load_config(config_path)
    rows = opt_outs(config, since=after)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("nobody unsubscribed or was cleaned" + (f" since {since}" if since else ""))
    for row in rows:
        reason = f" ({row['reason']})" if row["reason"] else ""
        owners = ", ".join(f"{e['type']} {e['id']}" for e in row["entities"]) or "no entity"
        was = f" [was {', '.join(row['previous_emails'])}]" if row["previous_emails"] else ""
        click.echo(f"{row['at']}  {row['status']:<12} {row['email']}{was}{reason}  -> {owners}")
