"""What every subcommand shares: the error handler and common options.

One place maps exception classes to exit codes, so that no traceback ever
reaches a marketer unless they asked for it with ``mailsync -v``.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from sync.database_faults import database_fault
from sync.exceptions import ConfigurationError, MailsyncError, RulesError
from sync.mailchimp.redaction import redact
from sync.records import parse_instant
from sync.rules.durations import DurationError, parse_duration

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found something wrong (failing tests, fatal run error)
EXIT_INVALID = 2  # the input cannot be used (invalid rules, bad configuration)
EXIT_INTERNAL = 70  # a bug in mailsync itself
EXIT_PIPE = 141  # the reader of our output went away (`| head`), as for tools killed by SIGPIPE

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


def say(text: str) -> None:
    """One line on stderr, with any secret redacted (an exception's text may
    quote a request header, escaped or not)."""
    click.echo(redact(text), err=True)


def report(exc: BaseException) -> None:
    """Print ``exc`` for a human: each rule problem on its own line."""
    if isinstance(exc, RulesError):
        for problem in exc.problems:
            say(str(problem))
        errors = sum(not p.warning for p in exc.problems)
        say(f"{errors} error{'s' if errors != 1 else ''} found.")
    elif isinstance(exc, MailsyncError):
        say(f"Error: {exc}")
    else:
        say(f"Internal error: {type(exc).__name__}: {exc}")
        say("This is a bug in mailsync; rerun with -v for the traceback.")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file (a test's capture): nothing will flush into a pipe


def _unreadable_without_settings(exc: BaseException, ctx: click.Context | None) -> bool:
    """A file could not be read, and no settings file says where files are:
    the likely fix is --config (run from another directory, or a typo)."""
    if not isinstance(exc, RulesError) or ctx is None:
        return False
    if not any(p.message.startswith("cannot read file") for p in exc.problems):
        return False
    if "config_path" not in ctx.params or ctx.params["config_path"] is not None:
        return False
    return not Path("mailsync.yaml").exists()


def handle_errors(func: F) -> F:
    """Decorate a click command so that errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # Nobody reads what we print any more: that is the reader's choice,
            # not an error. Silence the final flush of stdout and leave.
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_PIPE) from None
        except Exception as raised:
            # A database fault (locked, refused, read-only, corrupt) becomes
            # one line naming the database and what to do.
            exc = database_fault(raised) or raised
            ctx = click.get_current_context(silent=True)
            if ctx is not None and (ctx.find_root().obj or {}).get("verbose"):
                say(traceback.format_exc())
            report(exc)
            if _unreadable_without_settings(exc, ctx):
                say(
                    "No mailsync.yaml in this directory: point at your settings with "
                    "--config FILE (or MAILSYNC_RULES / MAILSYNC_SOURCES), or run mailsync "
                    "where they are."
                )
            raise click.exceptions.Exit(exit_code_for(exc)) from raised

    return wrapper  # type: ignore[return-value]
