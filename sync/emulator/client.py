"""The official ``mailchimp_marketing`` client, pointed somewhere else.

The client builds every URL as ``api_client.host + path`` and then replaces
the word ``server`` in the *whole* URL with the datacenter taken from the
key (``…-us21`` → ``us21``); its default host is
``https://server.api.mailchimp.com/3.0``. So pointing it at the emulator is
only a matter of overwriting ``api_client.host`` after construction, with a
base URL that must not contain the word "server" itself.
"""

from __future__ import annotations

from typing import Any


def client_for(base_url: str, api_key: str, timeout: float = 120.0) -> Any:
    """An official ``mailchimp_marketing.Client`` whose calls go to ``base_url`` (e.g. ``http://127.0.0.1:8123/3.0``).

    ``timeout`` is the client's per-request timeout in seconds (its own
    default is 120, like Mailchimp's).
    """
    host = base_url.rstrip("/")
    if "server" in host:
        # The client would rewrite it into the datacenter name.
        raise ValueError(f"base URL {host!r} contains 'server', which the client rewrites")
    # Imported here: the generated client is large, and `mailsync --help`
    # should not pay for it.
    from mailchimp_marketing import Client

    client = Client({"api_key": api_key, "timeout": timeout})
    client.api_client.host = host
    return client
