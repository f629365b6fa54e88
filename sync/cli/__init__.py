"""Command-line interface: ``mailsync COMMAND``.

``main`` only dispatches; each subcommand lives in its own module and is
registered on the ``cli`` group below. Exceptions become exit codes in
``run_command``; a traceback is printed only with ``-v``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from sync import __version__
from sync.cli.emulator import emulator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailsync")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Derive lifecycle statuses from your database and sync them to Mailchimp."""
    ctx.obj = {"verbose": verbose}


# Subcommands register themselves here, one module each.
cli.add_command(emulator)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailsync`` console script; returns the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
