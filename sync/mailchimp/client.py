"""The official client, configured: settings and ``make_client``.

- ``MailchimpSettings`` / ``make_client``: the API key from the environment or
  a file, the datacenter from its suffix, the base-URL override used for the
  emulator, the timeout.
- The key is checked and registered for redaction (``sync.mailchimp.redaction``).

Talking to Mailchimp goes through ``sync.mailchimp.caller.Caller`` (retries,
fencing), whose answers ``sync.mailchimp.answers.classify`` classifies;
``/batches`` jobs are in ``sync.mailchimp.batches``, the checks of
``mailsync check`` in ``sync.mailchimp.audience``.

Quirks of ``mailchimp-marketing`` 3.0.80 handled here: the host is rewritten
with ``str.replace('server', ...)`` unless ``server`` is empty; every call
opens a connection of its own unless its requests go through a pool of
sessions (``sync.mailchimp.connections``), which ``make_client`` installs;
its methods refuse the query parameters they do not list, so
``batch_subscribe`` and ``put_member`` send the same requests with the
partial-answer ones (``call_with_query``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailchimp_marketing import Client

from sync.exceptions import ConfigurationError
from sync.mailchimp.connections import reuse_connections
from sync.mailchimp.redaction import clean_api_key, install_redaction, register_secret

API_KEY_ENV = "MAILCHIMP_API_KEY"
API_KEY_FILE_ENV = "MAILCHIMP_API_KEY_FILE"
DEFAULT_TIMEOUT = 120.0


_DATACENTER = re.compile(r"^[a-z]{2,}\d+$")


def datacenter_of(api_key: str) -> str:
    """``us21`` from ``0123…-us21``; the key itself never appears in the error."""
    _, sep, suffix = api_key.rpartition("-")
    if not sep or not _DATACENTER.match(suffix):
        raise ConfigurationError(
            "Mailchimp API key: expected a datacenter suffix like '-us21' at its end"
        )
    return suffix


def load_api_key(env: Mapping[str, str] | None = None) -> str:
    """The key from ``MAILCHIMP_API_KEY``, else from the file named by
    ``MAILCHIMP_API_KEY_FILE`` (Docker/Kubernetes secrets)."""
    env = os.environ if env is None else env
    key = clean_api_key(env.get(API_KEY_ENV, ""), API_KEY_ENV)
    if not key and env.get(API_KEY_FILE_ENV):
        path = Path(env[API_KEY_FILE_ENV])
        try:
            raw = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"{API_KEY_FILE_ENV}={path}: cannot read the API key file ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(
                f"{API_KEY_FILE_ENV}={path}: the API key file is not UTF-8 text: "
                "save it again as plain text holding only the key"
            ) from None
        key = clean_api_key(raw, f"{API_KEY_FILE_ENV}={path}")
        if not key:
            raise ConfigurationError(f"{API_KEY_FILE_ENV}={path}: the API key file is empty")
    if not key:
        raise ConfigurationError(f"no Mailchimp API key: set {API_KEY_ENV} or {API_KEY_FILE_ENV}")
    register_secret(key)
    return key


@dataclass(frozen=True)
class MailchimpSettings:
    """How to reach one audience. The key is excluded from ``repr``."""

    api_key: str = field(repr=False)
    list_id: str
    host: str | None = None  # e.g. the emulator's "http://127.0.0.1:8080/3.0"
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        register_secret(self.api_key)
        if clean_api_key(self.api_key, "Mailchimp API key") != self.api_key:
            raise ConfigurationError(
                "Mailchimp API key: surrounded by spaces or a byte-order mark; remove them"
            )
        if self.host is None:
            datacenter_of(self.api_key)  # fail early on a key without a datacenter

    @classmethod
    def from_env(
        cls,
        list_id: str,
        *,
        host: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> MailchimpSettings:
        return cls(api_key=load_api_key(env), list_id=list_id, host=host, timeout=timeout)


def make_client(settings: MailchimpSettings) -> Any:
    """An official ``mailchimp_marketing.Client`` configured from ``settings``.

    Also installs log redaction of the key (idempotent), so that no log line of
    any library can carry it from here on."""
    install_redaction()
    if settings.host is None:
        config = {
            "api_key": settings.api_key,
            "server": datacenter_of(settings.api_key),
            "timeout": settings.timeout,
        }
        client = Client(config)
    else:
        client = Client({"api_key": settings.api_key, "timeout": settings.timeout})
        client.api_client.host = settings.host.rstrip("/")
        # An empty server disables the client's url.replace('server', dc), which
        # would otherwise mangle a host name containing "server".
        client.api_client.server = ""
    # Connections kept alive from call to call, not one per call.
    reuse_connections(client)
    return client


def call_with_query(
    client: Any,
    method: str,
    resource_path: str,
    path_params: Mapping[str, str],
    query: Mapping[str, str],
    body: Mapping[str, Any],
) -> Any:
    """One call as the official client's own methods make it, through its
    ``api_client.call_api`` (the same errors, the same connections), with
    any query parameter. Its methods refuse the parameters they do not list,
    whereas every call of the API also takes ``fields`` and
    ``exclude_fields`` (a partial answer)."""
    return client.api_client.call_api(
        resource_path,
        method,
        dict(path_params),
        list(query.items()),
        {"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
    )


def batch_subscribe(
    client: Any, list_id: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Any:
    """``POST /lists/{list_id}`` (batch subscribe): ``lists.batch_list_members``
    with any query parameter (it takes only ``skip_merge_validation`` and
    ``skip_duplicate_check``). A batch subscribe answers each new member
    whole, a few kilobytes each with its links, unless asked otherwise."""
    return call_with_query(client, "POST", "/lists/{list_id}", {"list_id": list_id}, query, body)


def put_member(
    client: Any, list_id: str, member_hash: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Any:
    """``PUT /lists/{list_id}/members/{subscriber_hash}``: ``lists.set_list_member``
    with any query parameter (it takes only ``skip_merge_validation``)."""
    return call_with_query(
        client,
        "PUT",
        "/lists/{list_id}/members/{subscriber_hash}",
        {"list_id": list_id, "subscriber_hash": member_hash},
        query,
        body,
    )
