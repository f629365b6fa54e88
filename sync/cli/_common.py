"""What every subcommand shares: the error handler and common options.

One place maps exception classes to exit codes, so that no traceback ever
reaches a marketer unless they asked for it with ``mailsync -v``.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from sync.durations import DurationError, parse_duration
from sync.exceptions import ConfigurationError, MailsyncError, RulesError
from sync.records import parse_instant

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found something wrong (failing tests, fatal run error)
EXIT_INVALID = 2  # the input cannot be used (invalid rules, bad configuration)
EXIT_INTERNAL = 70  # a bug in mailsync itself

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The exit status a command ends with when ``exc`` escapes it."""
    if isinstance(exc, ConfigurationError):
        return EXIT_INVALID
    if isinstance(exc, MailsyncError):
        return EXIT_FAILED
    return EXIT_INTERNAL


def config_option(func: F) -> F:
    """``--config FILE``: the operator's settings (default ./mailsync.yaml if present)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Settings file (default: mailsync.yaml if present; environment overrides it).",
    )(func)


def at_option(func: F) -> F:
    """``--at INSTANT``: evaluate as if it were this instant (ISO 8601 with offset)."""
    return click.option(
        "--at",
        "at",
        default=None,
        metavar="INSTANT",
        help="Act as if now were INSTANT (ISO 8601 with offset, e.g. 2026-03-01T09:00:00Z).",
    )(func)


def parse_at(text: str | None) -> datetime | None:
    """The ``--at`` value, or None for the real clock."""
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


def parse_backfill(text: str | None) -> timedelta | None:
    """The ``--backfill-events`` value, or None for the setting."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--backfill-events") from None


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
