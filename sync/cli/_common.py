"""What every subcommand shares: the error handler and common options.

One place maps exception classes to exit codes, so that no traceback ever
reaches a marketer unless they asked for it with ``mailsync -v``.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sync.exceptions import ConfigurationError, FatalError, MailsyncError, RulesError

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found something wrong (failing tests, fatal run error)
EXIT_INVALID = 2  # the input cannot be used (invalid rules, bad configuration)
EXIT_INTERNAL = 70  # a bug in mailsync itself

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The exit status a command ends with when ``exc`` escapes it."""
    if isinstance(exc, ConfigurationError):
        return EXIT_INVALID
    if isinstance(exc, MailsyncError | FatalError):
        return EXIT_FAILED
    return EXIT_INTERNAL


def report(exc: BaseException) -> None:
    """Print ``exc`` for a human: each rule problem on its own line."""
    if isinstance(exc, RulesError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        errors = sum(not p.warning for p in exc.problems)
        click.echo(f"{errors} error{'s' if errors != 1 else ''} found.", err=True)
    elif isinstance(exc, MailsyncError):
        click.echo(f"Error: {exc}", err=True)
    else:
        click.echo(f"Internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("This is a bug in mailsync; rerun with -v for the traceback.", err=True)


def handle_errors(func: F) -> F:
    """Decorate a click command so that errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            ctx = click.get_current_context(silent=True)
            if ctx is not None and (ctx.find_root().obj or {}).get("verbose"):
                click.echo(traceback.format_exc(), err=True)
            report(exc)
            raise click.exceptions.Exit(exit_code_for(exc)) from exc

    return wrapper  # type: ignore[return-value]
