"""Every error mailsync raises on purpose.

    MailsyncError
    ├── ConfigurationError   a file the user wrote is wrong: fix it and rerun (exit 2)
    │   └── RulesError       rules.yaml or a rules-test file; carries every Problem found
    ├── FatalError           the run cannot go on: bad API key, unknown audience (exit 1)
    │   └── AudienceMissing  the audience does not exist (deleted, or a wrong id)
    ├── RetriableError       a transient failure: retry later with back-off
    └── SkippableError       one record is bad: report it, carry on with the others

The CLI maps these classes to exit codes in one place (``sync.cli``); a
traceback is shown only with ``-v``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, located as precisely as we can.

    ``path`` is the chain of keys from the top of the document, so that the
    message reads like ``rules.yaml:12: entities ==> user ==> statuses ==>
    buyer_ok ==> then ==> enter: unknown status 'mony_ok' (did you mean 'money_ok'?)``.
    """

    file: str
    line: int | None
    path: tuple[str | int, ...]
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        kind = "warning: " if self.warning else ""
        trail = " ==> ".join(str(part) for part in self.path)
        return f"{where}: {kind}{trail + ': ' if trail else ''}{self.message}"


class MailsyncError(Exception):
    """Base class of every error raised on purpose by mailsync."""


class ConfigurationError(MailsyncError):
    """A file or setting written by the user is invalid."""


class RulesError(ConfigurationError):
    """A rule file (or rules-test file) is invalid; ``problems`` lists all errors."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FatalError(MailsyncError):
    """The run cannot continue (bad credentials, missing audience, ...)."""


class AudienceMissing(FatalError):
    """Mailchimp does not know the audience (deleted, or a wrong id): what the
    ledger says was accepted there is gone with it."""


class RetriableError(MailsyncError):
    """A transient failure; the operation may succeed if retried later."""


class SkippableError(MailsyncError):
    """One record cannot be processed; the others can."""
