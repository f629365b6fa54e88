"""The emulator as a real HTTP server, and the :class:`Emulator` handle tests hold.

Each request goes through the same gates as at Mailchimp, in this order:

1. the concurrency limit: more than ``max_connections`` requests in flight
   for one API key are answered 429 (counted honestly, so a client with too
   many threads sees it; ``service_delay`` keeps requests in flight longer
   to make that easy to provoke);
2. injected faults (``faults.py``), which model the infrastructure in front
   of the API and so come before authentication (the ``process-then-*``
   kinds let an authenticated request through to step 4 first, then lose
   its answer);
3. HTTP Basic authentication with the account's API key;
4. the route, and the store behind it (``api.py``), or the account's
   ``/batches`` queue (``batches.py``).

The results archives of ``/batches`` (``/batch-results/{id}.tar.gz``) stand
for Mailchimp's pre-signed S3 links: they meet the faults and are recorded
as calls, but need no key and take no slot of the key's connections.
Paths under ``/_emulator/`` bypass all of this: they are the inspection API
(``inspection.py``). Standard library only (``http.server``), one thread per
request, bound to 127.0.0.1 unless told otherwise.

Every call is recorded, and its concurrency slot freed, before the first
byte of its answer is written, so a client holding its answer can trust
the call log. A ``timeout`` fault is recorded as soon as the hold starts
(the client gives up before the hold ends); :meth:`Emulator.reset` cuts
holds and delays short, so that a request of one test cannot land in the
next test's log.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from sync.emulator import problems
from sync.emulator.api import ROUTES, Outcome, perform, run_handler
from sync.emulator.audience import Audience
from sync.emulator.batches import BATCH_ROUTES, RESULTS_PREFIX, BatchQueue
from sync.emulator.calls import Call, CallLog
from sync.emulator.client import client_for
from sync.emulator.faults import FaultKind, FaultPlan
from sync.emulator.members import Clock, utc_now
from sync.emulator.problems import ApiProblem
from sync.emulator.routes import Answer, Request
from sync.emulator.store import Store

DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us21"
DEFAULT_LIST_ID = "a1b2c3d4e5"
API_PREFIX = "/3.0"
INSPECTION_PREFIX = "/_emulator"
MAX_CONNECTIONS = 10
# Downloads of batch results share one slot namespace of their own: at
# Mailchimp they go to S3, not to the API, so they never use the key's 10.
RESULTS_SLOT = "(batch results)"
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
    # socketserver's default backlog of 5 makes the kernel drop extra SYNs,
    # which clients retry a second later: concurrency would be throttled
    # before our own limit could ever be seen.
    request_queue_size = 128

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
        body = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send(answer.status, body, JSON_TYPE)


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
        batch_delay: float = 0.0,
        hold_batches: bool = False,
        serve_batches: bool = True,
        clock: Clock = utc_now,
        verbose: bool = False,
        webhook_url: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.list_id = list_id
        self.max_connections = max_connections
        self.service_delay = service_delay
        self.timeout_hold = timeout_hold
        #: False answers 404 on ``/batches``, like a proxy that does not
        #: forward it: the sink must then fall back to direct calls.
        self.serve_batches = serve_batches
        self.verbose = verbose
        self._defaults = (
            max_connections,
            service_delay,
            timeout_hold,
            batch_delay,
            hold_batches,
            serve_batches,
        )
        self.store = Store(list_id, clock=clock)
        #: A webhook registered on the default audience from the start (every
        #: member event, every source), as if the marketer had set it up; it
        #: is not validated, as the receiver may not be up yet.
        self.webhook_url = webhook_url
        self._register_webhook()
        self.faults = FaultPlan()
        self.calls = CallLog()
        # Tracebacks of emulator bugs met while answering: a test should
        # fail on them rather than on the 500 a client sees.
        self.errors: list[str] = []
        self.batches = BatchQueue(
            partial(perform, self.store, errors=self.errors),
            self.calls,
            clock,
            lambda: self.root_url,
            delay=batch_delay,
            hold=hold_batches,
        )
        self._stopping = threading.Event()
        # Set (and replaced) by reset() and stop(): wakes every hold and
        # delay in progress, so none outlives the test that caused it.
        self._interrupt = threading.Event()
        self._interrupt_lock = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._server = _HTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self.batches.start(name=f"mailchimp-emulator-{self.port}-batches")
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
        self._interrupt_holds()
        self.batches.stop()
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

    @property
    def batch_delay(self) -> float:
        """Seconds a ``/batches`` job stays pending, then stays started."""
        return self.batches.delay

    @batch_delay.setter
    def batch_delay(self, seconds: float) -> None:
        self.batches.delay = seconds

    @property
    def hold_batches(self) -> bool:
        """While true, ``/batches`` jobs stay pending."""
        return self.batches.hold

    @hold_batches.setter
    def hold_batches(self, value: bool) -> None:
        self.batches.hold = value

    def reset(self) -> None:
        """Empty audiences, no batches, faults or recorded calls, settings as constructed.

        Requests still held or delayed (a ``timeout`` fault, ``service_delay``)
        are cut short first, and a running batch stops before its next
        operation, so nothing from before the reset lands after it.
        """
        self._interrupt_holds()
        # Let interrupted requests record themselves now rather than in the
        # fresh log; bounded, as a client elsewhere may keep calling.
        self.calls.wait_idle(timeout=2.0)
        self.batches.reset()
        self.store.reset()
        self._register_webhook()
        self.faults.clear()
        self.calls.reset()
        self.errors.clear()
        (
            self.max_connections,
            self.service_delay,
            self.timeout_hold,
            self.batch_delay,
            self.hold_batches,
            self.serve_batches,
        ) = self._defaults

    def _register_webhook(self) -> None:
        if self.webhook_url:
            self.store.webhooks.register(
                self.list_id,
                {"url": self.webhook_url, "sources": {"user": True, "admin": True, "api": True}},
                validate=False,
            )

    def settings(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "service_delay": self.service_delay,
            "timeout_hold": self.timeout_hold,
            "batch_delay": self.batch_delay,
            "hold_batches": self.hold_batches,
            "serve_batches": self.serve_batches,
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
        if path.startswith(RESULTS_PREFIX + "/") and method == "GET":
            name = path.removeprefix(RESULTS_PREFIX + "/")
            self._gated(
                handler,
                method,
                path,
                fault_path=path,
                endpoint=f"GET {RESULTS_PREFIX}/{{batch_id}}.tar.gz",
                slot=RESULTS_SLOT,
                api_call=False,
                answer=lambda: _Reply.download(*self.batches.download(name, query)),
            )
            return
        api_path = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX + "/") else None
        bound, endpoint, params, known = self._resolve(method, api_path)

        def answer() -> _Reply:
            self._delay()
            if bound is None:
                failure = problems.method_not_allowed() if known else problems.not_found()
                return _Reply.problem(failure)
            outcome = run_handler(bound, method, api_path or "", params, query, raw, self.errors)
            return _Reply.of(outcome)

        self._gated(
            handler,
            method,
            path,
            fault_path=api_path or path,
            endpoint=endpoint,
            slot=_presented_key(handler.headers.get("Authorization")) or "",
            api_call=True,
            answer=answer,
        )

    def _resolve(
        self, method: str, api_path: str | None
    ) -> tuple[Callable[[Request], Answer] | None, str, dict[str, str], bool]:
        """The handler bound to its context, the endpoint name, path parameters,
        and whether the path exists for some method (405 rather than 404)."""
        if api_path is None:
            return None, f"{method} (unknown)", {}, False
        route, params, known = ROUTES.resolve(method, api_path)
        if route is not None:
            return partial(route.handler, self.store), route.endpoint, params, True
        if self.serve_batches:
            bulk, params, bulk_known = BATCH_ROUTES.resolve(method, api_path)
            if bulk is not None:
                return partial(bulk.handler, self.batches), bulk.endpoint, params, True
            known = known or bulk_known
        return None, f"{method} (unknown)", {}, known

    def _gated(
        self,
        handler: _Handler,
        method: str,
        path: str,
        *,
        fault_path: str,
        endpoint: str,
        slot: str,
        api_call: bool,
        answer: Callable[[], _Reply],
    ) -> None:
        """The concurrency limit, faults, authentication, then ``answer``;
        records the call before anything is sent back.

        ``api_call`` False (a results download) skips the key's limit and
        authentication; faults still apply, as S3 fails too.
        """
        key = _presented_key(handler.headers.get("Authorization"))
        in_flight = self.calls.enter(slot)
        fault: FaultKind | None = None
        try:
            if api_call and in_flight > self.max_connections:
                reply = _Reply.problem(problems.too_many_requests(self.max_connections))
            else:
                fault = self.faults.draw(method, fault_path)
                authorised = not api_call or key == self.api_key
                if fault is not None and fault.processes and authorised:
                    # Carried out for real; only the answer is lost on the way back.
                    answer()
                if fault is not None:
                    reply = self._fault(fault, Call(method, path, endpoint, "timeout", fault.value))
                elif api_call and key is None:
                    reply = _Reply.problem(problems.api_key_missing())
                elif api_call and key != self.api_key:
                    reply = _Reply.problem(problems.api_key_invalid())
                else:
                    reply = answer()
        except BaseException:
            self.calls.leave(slot)
            raise
        # Recorded and the slot freed before answering, so that a client that
        # has its answer can rely on the call log and on the slot being free.
        # (A timeout was recorded when its hold began.)
        self.calls.finish(
            slot,
            None
            if reply.outcome == "timeout"
            else Call(method, path, endpoint, reply.outcome, fault.value if fault else None),
        )
        if reply.outcome == "reset":
            handler.server.reset_on_close(handler.connection)
        elif reply.outcome != "timeout":
            handler.send(reply.status, reply.body, reply.content_type)

    def _interrupt_holds(self) -> None:
        with self._interrupt_lock:
            self._interrupt.set()
            self._interrupt = threading.Event()

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the emulator is reset or stopped."""
        with self._interrupt_lock:
            interrupt = self._interrupt
        if not self._stopping.is_set():
            interrupt.wait(seconds)

    def _delay(self) -> None:
        if self.service_delay:
            self._wait(self.service_delay)

    def _fault(self, kind: FaultKind, held: Call) -> _Reply:
        if kind is FaultKind.TOO_MANY_REQUESTS:
            return _Reply.problem(problems.too_many_requests(self.max_connections))
        if kind is FaultKind.TOO_MANY_REQUESTS_EMPTY:
            return _Reply("429", 429)
        if kind is FaultKind.FORBIDDEN_EMPTY:
            return _Reply("403", 403)
        if kind is FaultKind.FORBIDDEN_JSON:
            return _Reply.problem(problems.forbidden())
        if kind is FaultKind.SERVER_ERROR:
            return _Reply.problem(problems.internal_error())
        if kind is FaultKind.UNAVAILABLE_HTML:
            return _Reply("503", 503, UNAVAILABLE_PAGE, "text/html")
        if kind in (FaultKind.TIMEOUT, FaultKind.PROCESS_THEN_TIMEOUT):
            # Recorded now: the client gives up before the hold ends, and
            # must find the call in the log when it does. The slot stays
            # taken while held, as a hung request's would at Mailchimp.
            self.calls.record(held)
            self._wait(self.timeout_hold)
            return _Reply("timeout")
        return _Reply("reset")


@dataclass(frozen=True)
class _Reply:
    """What to send; ``outcome`` "timeout" or "reset" means send nothing."""

    outcome: str
    status: int = 0
    body: bytes = b""
    content_type: str | None = None

    @classmethod
    def problem(cls, problem: ApiProblem) -> _Reply:
        return cls.of(Outcome.of(problem))

    @classmethod
    def of(cls, outcome: Outcome) -> _Reply:
        payload = b"" if outcome.body is None else json.dumps(outcome.body).encode()
        # Mailchimp labels its empty 204s as JSON too.
        content_type = PROBLEM_TYPE if outcome.problem else JSON_TYPE
        return cls(str(outcome.status), outcome.status, payload, content_type)

    @classmethod
    def download(cls, status: int, body: bytes, content_type: str) -> _Reply:
        return cls(str(status), status, body, content_type)


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
