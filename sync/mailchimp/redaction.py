"""Secrets: the API key is checked when it is read and never written anywhere.

``clean_api_key`` turns what the operator gave (an environment variable, a
file saved by an editor) into a key or refuses it; its messages describe the
problem without echoing the key. ``register_secret`` remembers a value, and
the ways it can be spelled in text (Python ``repr``, JSON, ``unicode_escape``,
bytes), so that ``redact`` finds it even inside an escaped exception message
or a JSON log line. ``install_redaction`` applies it to every log record of
every logger; the log formatters and the CLI's error printer apply it to
their final text too, so that structured fields (``extra=``) and exception
texts are covered as well.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import unicodedata
from typing import Any

from sync.exceptions import ConfigurationError

#: Mailchimp keys are 32 hexadecimal digits, a dash and a datacenter: only
#: printable ASCII can be sent in an HTTP header anyway.
_KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))
_BOM = "\ufeff"

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_FACTORY_INSTALLED = False


def spellings(secret: str) -> set[str]:
    """``secret`` as it may appear in text: itself, escaped by ``repr``, by
    JSON, by ``unicode_escape``, as UTF-8 bytes' ``repr``; and its part before
    the datacenter suffix, which is the secret part of a Mailchimp key."""
    forms = {secret}
    forms.add(repr(secret)[1:-1])
    forms.add(json.dumps(secret)[1:-1])
    forms.add(secret.encode("unicode_escape").decode("ascii"))
    forms.add(repr(secret.encode("utf-8"))[2:-1])
    head, sep, _datacenter = secret.rpartition("-")
    if sep and len(head) >= 8:
        forms |= spellings(head)
    # Whitespace or a BOM around the key is not secret; the key inside it is.
    core = secret.strip().strip(_BOM).strip()
    if core and core != secret:
        forms |= spellings(core)
    return {form for form in forms if len(form) >= 8}


def register_secret(secret: str) -> None:
    """Remember a value that must never be written anywhere (the API key)."""
    if secret:
        forms = spellings(secret)
        with _SECRETS_LOCK:
            _SECRETS.update(forms)


def redact(text: str) -> str:
    """``text`` with every registered secret, in every spelling, replaced by ``***``."""
    if not _SECRETS:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact_value(value: Any) -> Any:
    """A copy of a structured log field (dicts, lists, text) with secrets redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _redact_record(record: logging.LogRecord) -> None:
    if not _SECRETS:
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return  # logging reports the bad format string itself, later
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class SecretFilter(logging.Filter):
    """A handler/logger filter that redacts registered secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def install_redaction() -> None:
    """Redact registered secrets from every log record, whatever its logger or
    handler (handlers added later included), by wrapping the record factory."""
    global _FACTORY_INSTALLED
    with _SECRETS_LOCK:
        if _FACTORY_INSTALLED:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _FACTORY_INSTALLED = True


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def clean_api_key(raw: str, source: str) -> str:
    """The key in ``raw`` without surrounding whitespace or a byte-order mark,
    or ``ConfigurationError`` saying what is wrong with it, never what it is.

    ``source`` names where it came from (``MAILCHIMP_API_KEY`` or the file)."""
    # Registered first: whatever happens next, no spelling of it gets out.
    register_secret(raw)
    key = raw.strip().lstrip(_BOM).strip()
    bad = sorted({c for c in key if c not in _KEY_CHARACTERS}, key=ord)
    if bad:
        # Quotes, spaces and invisible marks are named; letters and digits
        # could be part of the key itself, so they are only counted.
        named = [_describe(c) for c in bad if unicodedata.category(c)[0] not in "LN"]
        others = len(bad) - len(named)
        what = ", ".join(named[:3] + ([f"{others} non-ASCII letters or digits"] if others else []))
        raise ConfigurationError(
            f"{source}: the API key contains {len(bad)} character"
            f"{'s' if len(bad) != 1 else ''} a Mailchimp key cannot have ({what}); "
            "keys are ASCII letters, digits and '-': copy it again from Mailchimp "
            "(Account > Extras > API keys) as plain text"
        )
    return key
