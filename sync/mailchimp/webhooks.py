"""The webhook receiver: Mailchimp tells mailsync what changed on its side.

Served by the daemon's HTTP server (``sync.daemon.metrics``, beside ``/metrics``)
under ``/mailchimp/webhook/<secret>``: Mailchimp signs nothing, so the
unguessable path is what keeps strangers from unsubscribing people. The
operator registers that URL as a webhook of the audience (README,
"Changes made in Mailchimp").

* ``GET`` answers 200: Mailchimp checks the URL that way when the webhook is
  saved.
* ``POST`` carries one event, form-encoded (``type``, ``fired_at``,
  ``data[...]``, see ``sync.mailchimp.changes``). It is recorded in the state store
  and answered 200; a delivery repeated by Mailchimp is recognised and
  answered 200 without applying it twice. A body that is not a Mailchimp
  event is answered 400 and logged with the field at fault; a state store
  that cannot be written is answered 503, so Mailchimp delivers it again.

Any other path is a 404 that says nothing about the secret.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from sync.exceptions import ConfigurationError
from sync.mailchimp.changes import WebhookError, parse_webhook
from sync.mailchimp.ledger import PushLedger

log = logging.getLogger(__name__)

PREFIX = "/mailchimp/webhook/"
#: Shorter secrets could be guessed; 16 characters of a random token are plenty.
MIN_SECRET = 16


class WebhookReceiver:
    """Parses webhook requests and records them in ``ledger``."""

    def __init__(self, ledger: PushLedger, secret: str, list_id: str | None = None) -> None:
        if len(secret) < MIN_SECRET or not secret.isascii() or "/" in secret:
            raise ConfigurationError(
                f"webhook secret: expected at least {MIN_SECRET} ASCII characters without '/' "
                "(for example the output of `python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))'`)"
            )
        self.ledger = ledger
        self.list_id = list_id
        self._path = PREFIX + secret
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handles(self, target: str) -> bool:
        """Whether a request for ``target`` is a webhook (the right secret)."""
        path = urlsplit(target).path.rstrip("/")
        return hmac.compare_digest(path.encode(), self._path.encode())

    def answer_get(self) -> tuple[int, bytes]:
        return 200, b"ok\n"

    def answer_post(self, body: bytes) -> tuple[int, bytes]:
        try:
            form = dict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            )
            change = parse_webhook(form)
        except (WebhookError, UnicodeDecodeError, ValueError) as exc:
            self._count("refused")
            log.warning("webhook refused: not a Mailchimp event: %s", exc)
            return 400, f"not a Mailchimp webhook event: {exc}\n".encode()
        if change is None:
            self._count("ignored")  # campaign events are not about members
            return 200, b"ignored\n"
        listed = form.get("data[list_id]")
        if self.list_id and listed and listed != self.list_id:
            self._count("ignored")
            log.warning("webhook for another audience (%s) ignored", listed)
            return 200, b"ignored\n"
        try:
            applied = self.ledger.record_mailchimp_changes([change])
        except sa.exc.SQLAlchemyError as exc:
            self._count("failed")
            log.error("webhook %s for %s not recorded: %s", change.kind, change.email, exc)
            return 503, b"state store unavailable, deliver again\n"
        self._count("applied" if applied else "duplicate")
        log.info(
            "webhook %s for %s%s",
            change.kind,
            change.email,
            "" if applied else " (already recorded)",
            extra={"webhook": {"type": change.kind, "email": change.email}},
        )
        return 200, b"ok\n"

    def _count(self, result: str) -> None:
        with self._lock:
            self.counts[result] += 1
