"""Logging set-up for the daemon: readable text, or JSON lines for machines.

Every record goes through the secret filter of ``sync.redaction`` first, and
each formatted line is redacted again (structured fields and exception texts
included, in every escaped spelling), so the API key cannot reach a log
line, whatever the format. Structured data
passed as ``extra={"cycle": {...}}`` or ``extra={"failure": {...}}`` becomes
fields of the JSON object (and a compact suffix in text mode).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from sync.redaction import SecretFilter, install_redaction, redact, redact_value

STRUCTURED = ("cycle", "failure")


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
    root = logging.getLogger("sync")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
