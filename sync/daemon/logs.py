"""Logging set-up for the daemon: readable text, or JSON lines for machines.

Every record goes through the secret filter of ``sync.mailchimp.redaction`` first, and
each formatted line is redacted again (structured fields and exception texts
included, in every escaped spelling), so the API key cannot reach a log
line, whatever the format. Then HTML error pages (an edge proxy's answer,
quoted whole in a failure reason) are cut to a one-line excerpt: the page's
title and the start of its text. Structured data
passed as ``extra={"cycle": {...}}`` or ``extra={"failure": {...}}`` becomes
fields of the JSON object (and a compact suffix in text mode).
"""

from __future__ import annotations

import html
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from sync.mailchimp.redaction import SecretFilter, install_redaction, redact, redact_value

STRUCTURED = ("cycle", "failure")
#: Longest value kept whole in a log line; longer ones become an excerpt.
EXCERPT_CHARS = 200
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_PAGE = re.compile(r"<(html|body|!doctype|h1|p|title)\b", re.I)
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """One line saying what ``text`` says, its quoted HTML page cut to ``limit``.

    An HTML page is reduced to its title and the start of its visible text;
    what comes before and after it is kept. Runs of white space, line breaks
    included, become one space. Text with no page is cut to ``limit``."""
    page = _PAGE.search(text)
    if page is None:
        flat = " ".join(text.split())
        return _cut(flat, limit)
    end = text.lower().rfind("</html>")
    end = len(text) if end < page.start() else end + len("</html>")
    before, body, after = text[: page.start()], text[page.start() : end], text[end:]
    title = _TITLE.search(body)
    visible = " ".join(html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", body))).split())
    named = f"an HTML page ({' '.join(title.group(1).split())})" if title else "an HTML page"
    return " ".join(f"{before}{named}: {_cut(visible, limit)}{after}".split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _short(value: Any) -> Any:
    # Only quoted HTML pages: other multi-line values (the list of problems in
    # a rules file, say) are meant to be read whole.
    if isinstance(value, str | BaseException):
        text = str(value)
        return excerpt(text) if _PAGE.search(text) else value
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


class ExcerptFilter(logging.Filter):
    """Cuts long or multi-line arguments and structured values to an excerpt."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_short(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = _short(record.args)
        if isinstance(record.msg, str) and not record.args and _PAGE.search(record.msg):
            # Already formatted (the secret redaction formats records as they are
            # made): excerpt the quoted page inside the message itself.
            record.msg = excerpt(record.msg, EXCERPT_CHARS)
        for key in STRUCTURED:
            if key == "failure" and hasattr(record, key):
                setattr(record, key, _short(getattr(record, key)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in STRUCTURED:
            if hasattr(record, key):
                data[key] = redact_value(getattr(record, key))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        # Redacted twice: the fields above as values, the line as JSON text
        # (where a key with non-ASCII characters is spelled with \u escapes).
        return redact(json.dumps(redact_value(data), default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for key in STRUCTURED:
            if hasattr(record, key):
                text += f" {key}={json.dumps(getattr(record, key), default=str)}"
        return redact(text)


def configure_logging(
    fmt: str = "text", *, stream: IO[str] | None = None, level: int = logging.INFO
) -> None:
    """Send mailsync's logs to ``stream`` (stderr) in ``fmt`` (text or json)."""
    install_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    handler.addFilter(ExcerptFilter())
    root = logging.getLogger("sync")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


#: The logger of a long cycle's progress lines (``pushing: N members pushed
#: so far this cycle``), which ``mailsync once`` shows too.
PROGRESS_LOGGER = "sync.daemon.progress"


@contextmanager
def progress_to(stream: IO[str]) -> Iterator[None]:
    """While inside, a long cycle's progress lines go to ``stream``, plain,
    whether or not logging was configured (``mailsync once`` does not
    configure it: its summary is printed at the end)."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(SecretFilter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
