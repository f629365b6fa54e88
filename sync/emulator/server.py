"""The emulator as a real HTTP server, and the :class:`Emulator` handle tests hold.

Each request goes through the same gates as at Mailchimp, in this order:

1. the concurrency limit: more than ``max_connections`` requests in flight
   for one API key are answered 429 (counted honestly, so a client with too
   many threads sees it; ``service_delay`` keeps requests in flight longer
   to make that easy to provoke);
2. injected faults (``faults.py``), which model the infrastructure in front
   of the API and so come before authentication;
3. HTTP Basic authentication with the account's API key;
4. the route, and the store behind it.

Paths under ``/_emulator/`` bypass all of this: they are the inspection API
(``inspection.py``). Standard library only (``http.server``), one thread per
request, bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from sync.emulator import problems
from sync.emulator.api import ROUTES
from sync.emulator.calls import Call, CallLog
from sync.emulator.client import client_for
from sync.emulator.faults import FaultKind, FaultPlan
from sync.emulator.problems import ApiProblem
from sync.emulator.routes import Answer, Request
from sync.emulator.store import Audience, Clock, Store, utc_now

DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us21"
DEFAULT_LIST_ID = "a1b2c3d4e5"
API_PREFIX = "/3.0"
INSPECTION_PREFIX = "/_emulator"
MAX_CONNECTIONS = 10
JSON_TYPE = "application/json; charset=utf-8"
PROBLEM_TYPE = "application/problem+json; charset=utf-8"
UNAVAILABLE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The server is temporarily unable to "
    b"service your request. Please try again later.</p></body></html>\n"
)


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads are joined on close, so a test never leaks one; holds
    # and delays wake up early when the emulator stops, so joining is quick.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._resets: set[socket.socket] = set()
        self._resets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def reset_on_close(self, sock: socket.socket) -> None:
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._resets_lock:
            self._resets.add(sock)

    def shutdown_request(self, request: Any) -> None:
        with self._resets_lock:
            resetting = request in self._resets
            self._resets.discard(request)
        if resetting:
            # The usual shutdown(SHUT_WR) would send a FIN first: skip it.
            self.close_request(request)
        else:
            super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # A socket timeout, so a silent client cannot pin a thread forever.
    timeout = 30

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.emulator._serve(self, self.command, self.path, raw)

    def send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def send_answer(self, answer: Answer) -> None:
        if answer.body is None:
            # Mailchimp labels its empty 204s as JSON too.
            self.send(answer.status, b"", JSON_TYPE)
        else:
            self.send(answer.status, json.dumps(answer.body).encode(), JSON_TYPE)

    def send_problem(self, problem: ApiProblem) -> None:
        self.send(problem.status, json.dumps(problem.to_json()).encode(), PROBLEM_TYPE)


class Emulator:
    """A local Mailchimp: start it, point a client at :attr:`url`, inspect it.

    >>> with Emulator() as emulator:
    ...     client = emulator.client()
    ...     client.ping.get()["health_status"]
    "Everything's Chimpy!"
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        list_id: str = DEFAULT_LIST_ID,
        max_connections: int = MAX_CONNECTIONS,
        service_delay: float = 0.0,
        timeout_hold: float = 1.0,
        clock: Clock = utc_now,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.list_id = list_id
        self.max_connections = max_connections
        self.service_delay = service_delay
        self.timeout_hold = timeout_hold
        self.verbose = verbose
        self._defaults = (max_connections, service_delay, timeout_hold)
        self.store = Store(list_id, clock=clock)
        self.faults = FaultPlan()
        self.calls = CallLog()
        # Tracebacks of emulator bugs met while answering: a test should
        # fail on them rather than on the 500 a client sees.
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._server = _HTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mailchimp-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until :meth:`interrupt` or :meth:`stop` is called from elsewhere."""
        self._stopping.wait()

    def interrupt(self) -> None:
        """Wake :meth:`wait`; safe in a signal handler (the server keeps running)."""
        self._stopping.set()

    # -- what tests use ------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a client takes as its host, e.g. ``http://127.0.0.1:8123/3.0``."""
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    @property
    def root_url(self) -> str:
        """The server's root; the inspection API lives at ``root_url + "/_emulator"``."""
        return f"http://{self.host}:{self.port}"

    @property
    def audience(self) -> Audience:
        """The default audience (``list_id``)."""
        return self.store.audience(self.list_id)

    def client(self, timeout: float = 10.0) -> Any:
        """An official ``mailchimp_marketing.Client`` pointed at this emulator."""
        return client_for(self.url, self.api_key, timeout=timeout)

    def reset(self) -> None:
        """Empty audiences, no faults, no recorded calls, settings as constructed."""
        self.store.reset()
        self.faults.clear()
        self.calls.reset()
        self.errors.clear()
        self.max_connections, self.service_delay, self.timeout_hold = self._defaults

    def settings(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "service_delay": self.service_delay,
            "timeout_hold": self.timeout_hold,
        }

    # -- answering -----------------------------------------------------------

    def _serve(self, handler: _Handler, method: str, target: str, raw: bytes) -> None:
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if path == INSPECTION_PREFIX or path.startswith(INSPECTION_PREFIX + "/"):
            from sync.emulator.inspection import serve_inspection

            handler.send_answer(serve_inspection(self, method, path, query, raw))
            return
        api_path = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX + "/") else None
        route, params, known = (
            ROUTES.resolve(method, api_path) if api_path is not None else (None, {}, False)
        )
        endpoint = route.endpoint if route is not None else f"{method} (unknown)"
        key = _presented_key(handler.headers.get("Authorization"))
        in_flight = self.calls.enter(key or "")
        outcome = "500"
        fault: FaultKind | None = None
        try:
            if in_flight > self.max_connections:
                outcome = self._problem(handler, problems.too_many_requests(self.max_connections))
                return
            fault = self.faults.draw(method, api_path or path)
            if fault is not None:
                outcome = self._fault(handler, fault)
                return
            if key is None:
                outcome = self._problem(handler, problems.api_key_missing())
                return
            if key != self.api_key:
                outcome = self._problem(handler, problems.api_key_invalid())
                return
            if self.service_delay:
                self._stopping.wait(self.service_delay)
            if route is None:
                failure = problems.method_not_allowed() if known else problems.not_found()
                outcome = self._problem(handler, failure)
                return
            outcome = self._route(
                handler, route.handler, method, api_path or "", params, query, raw
            )
        finally:
            self.calls.leave(key or "")
            self.calls.record(
                Call(method, path, endpoint, outcome, fault.value if fault is not None else None)
            )

    def _route(
        self,
        handler: _Handler,
        func: Any,
        method: str,
        path: str,
        params: dict[str, str],
        query: dict[str, str],
        raw: bytes,
    ) -> str:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return self._problem(handler, problems.bad_json())
        try:
            answer: Answer = func(self.store, Request(method, path, params, query, body))
        except ApiProblem as problem:
            return self._problem(handler, problem)
        except Exception:
            self.errors.append(traceback.format_exc())
            return self._problem(handler, problems.internal_error())
        handler.send_answer(answer)
        return str(answer.status)

    def _problem(self, handler: _Handler, problem: ApiProblem) -> str:
        handler.send_problem(problem)
        return str(problem.status)

    def _fault(self, handler: _Handler, kind: FaultKind) -> str:
        if kind is FaultKind.TOO_MANY_REQUESTS:
            return self._problem(handler, problems.too_many_requests(self.max_connections))
        if kind is FaultKind.TOO_MANY_REQUESTS_EMPTY:
            handler.send(429)
            return "429"
        if kind is FaultKind.FORBIDDEN_EMPTY:
            handler.send(403)
            return "403"
        if kind is FaultKind.FORBIDDEN_JSON:
            return self._problem(handler, problems.forbidden())
        if kind is FaultKind.SERVER_ERROR:
            return self._problem(handler, problems.internal_error())
        if kind is FaultKind.UNAVAILABLE_HTML:
            handler.send(503, UNAVAILABLE_PAGE, "text/html")
            return "503"
        if kind is FaultKind.TIMEOUT:
            # Hold on to the request past the client's patience, then hang up.
            self._stopping.wait(self.timeout_hold)
            return "timeout"
        handler.server.reset_on_close(handler.connection)
        return "reset"


def _presented_key(header: str | None) -> str | None:
    """The password of an HTTP Basic ``Authorization`` header (any user name)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None
