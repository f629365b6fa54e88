"""Connections kept alive across calls of the official client.

``mailchimp-marketing`` 3.0.80 sends every call with ``requests.post(...)``
and the like, which build a new ``requests.Session`` per call: a new TCP
connection (and, against Mailchimp, a new TLS handshake) for every call,
closed once it is answered. Going live at a million members is two
thousand calls; each one paid the connection set-up before its request
could leave.

``reuse_connections`` keeps the client and everything it does (the
endpoints, the bodies, the errors it raises) and changes only how its
requests travel: through a small pool of ``requests.Session`` objects, one
lent per call in flight, so that each keeps its connection alive for the
next call. A session keeps at most one idle connection per host, is used by
one thread at a time, and is closed once more than ``size`` are idle (the
sink's connections never exceed Mailchimp's limit of 10 per key) or when it
sat idle longer than ``max_idle`` (a server drops idle connections; a
request sent on a connection the server is closing fails). A session keeps
no cookies: each request carries what the client's own request would, and
nothing an earlier answer set.

The results archives of ``/batches`` jobs are downloaded through the same
pool (``sessions_of``), without the client's authentication.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests

#: Sessions kept idle at most: the sink's connections (``MAX_CONNECTIONS``).
POOL_SIZE = 9
#: A session idle longer than this is closed rather than used again: servers
#: close idle keep-alive connections after some seconds (the emulator after
#: 30), and a request written on a connection being closed fails.
MAX_IDLE_S = 15.0

#: The client's methods that send a JSON body (``ApiClient.request``).
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class SessionPool:
    """``requests.Session`` objects lent one per request."""

    def __init__(
        self,
        size: int = POOL_SIZE,
        *,
        max_idle: float = MAX_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.max_idle = max_idle
        self.clock = clock
        self._idle: list[tuple[requests.Session, float]] = []
        self._lock = threading.Lock()
        #: Sessions created so far (each opens its own connection).
        self.created = 0

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        session = self._take()
        try:
            return session.request(method, url, **kwargs)
        finally:
            self._give_back(session)

    def _take(self) -> requests.Session:
        stale: list[requests.Session] = []
        try:
            with self._lock:
                now = self.clock()
                while self._idle:
                    session, since = self._idle.pop()
                    if now - since <= self.max_idle:
                        return session
                    stale.append(session)
                self.created += 1
            return _session()
        finally:
            for session in stale:
                session.close()

    def _give_back(self, session: requests.Session) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append((session, self.clock()))
                return
        session.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for session, _ in idle:
            session.close()


def _session() -> requests.Session:
    session = requests.Session()
    # No domain is allowed to set a cookie: none is stored, none sent back.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def sessions_of(client: Any) -> SessionPool | None:
    """The pool ``reuse_connections`` gave ``client``, if any."""
    pool = getattr(client.api_client, "mailsync_sessions", None)
    return pool if isinstance(pool, SessionPool) else None


def reuse_connections(client: Any, pool: SessionPool | None = None) -> SessionPool:
    """Make the official ``client`` send its requests through ``pool`` (a
    new one by default); returns the pool. The request sent is the one the
    client's own ``ApiClient.request`` sends: the same JSON body, query,
    headers, authentication and timeout."""
    pool = pool or SessionPool()
    api_client = client.api_client

    def request(
        method: str,
        url: str,
        query_params: Any = None,
        headers: Any = None,
        body: Any = None,
    ) -> requests.Response:
        auth = ("user", api_client.api_key) if api_client.is_basic_auth else None
        if api_client.is_oauth:
            headers.update({"Authorization": "Bearer " + api_client.access_token})
        options: dict[str, Any] = {
            "params": query_params,
            "headers": headers,
            "auth": auth,
            "timeout": api_client.timeout,
        }
        if method in _WITH_BODY:
            options["data"] = json.dumps(body)
        elif method == "HEAD":
            options["allow_redirects"] = False  # as ``requests.head``
        elif method not in _WITHOUT_BODY:
            raise ValueError(
                "http method must be `GET`, `HEAD`, `OPTIONS`, `POST`, `PATCH`, `PUT` or `DELETE`."
            )
        return pool.request(method, url, **options)

    # An attribute of this client only: ``ApiClient.call_api`` calls
    # ``self.request``, and nothing else of the client changes.
    api_client.request = request
    api_client.mailsync_sessions = pool
    return pool
