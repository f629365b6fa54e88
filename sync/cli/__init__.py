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
from sync.cli import check as check_cmd
from sync.cli import dashboard as dashboard_cmd
from sync.cli import demo as demo_cmd
from sync.cli import demo_data as demo_data_cmd
from sync.cli import emulator as emulator_cmd
from sync.cli import explain as explain_cmd
from sync.cli import graph as graph_cmd
from sync.cli import once as once_cmd
from sync.cli import plan as plan_cmd
from sync.cli import reinit as reinit_cmd
from sync.cli import ruletest as ruletest_cmd
from sync.cli import run as run_cmd
from sync.cli import status as status_cmd
from sync.cli import unsubscribes as unsubscribes_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailsync")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Derive lifecycle statuses from your database and sync them to Mailchimp."""
    ctx.obj = {"verbose": verbose}


# Subcommands register themselves here, one module each.
cli.add_command(check_cmd.check)
cli.add_command(dashboard_cmd.dashboard)
cli.add_command(demo_cmd.demo)
cli.add_command(demo_data_cmd.demo_data)
cli.add_command(emulator_cmd.emulator)
cli.add_command(explain_cmd.explain)
cli.add_command(graph_cmd.graph)
cli.add_command(once_cmd.once)
cli.add_command(plan_cmd.plan)
cli.add_command(reinit_cmd.reinit)
cli.add_command(run_cmd.run)
cli.add_command(status_cmd.status)
cli.add_command(unsubscribes_cmd.unsubscribes)
cli.add_command(ruletest_cmd.test)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailsync`` console script; returns the exit status."""
    try:
        # Without standalone mode, click returns the code of a raised Exit
        # (and a command's return value otherwise) instead of calling sys.exit.
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
