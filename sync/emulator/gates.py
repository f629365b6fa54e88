"""How the emulator answers a request: Mailchimp's gates, in Mailchimp's order.

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
(``inspection.py``).

Every call is recorded, and its concurrency slot freed, before the first
byte of its answer is written, so a client holding its answer can trust
the call log. A ``timeout`` fault is recorded as soon as the hold starts
(the client gives up before the hold ends); :class:`Holds` lets
:meth:`Emulator.reset <sync.emulator.server.Emulator.reset>` cut holds and
delays short, so that a request of one test cannot land in the next test's
log.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from sync.emulator import problems
from sync.emulator.api import ROUTES, Outcome, run_handler
from sync.emulator.batches import BATCH_ROUTES, RESULTS_PREFIX
from sync.emulator.calls import Call
from sync.emulator.faults import FaultKind
from sync.emulator.problems import ApiProblem
from sync.emulator.routes import Answer, Request

if TYPE_CHECKING:
    from sync.emulator.server import Emulator
    from sync.emulator.transport import RequestHandler

API_PREFIX = "/3.0"
INSPECTION_PREFIX = "/_emulator"
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


class Holds:
    """The waits a request may be held for: a ``timeout`` fault, ``service_delay``.

    :meth:`interrupt` (called by ``reset()`` and ``stop()``) wakes every
    hold and delay in progress, so none outlives the test that caused it.
    """

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        # Set (and replaced) by interrupt(): wakes every hold and delay in progress.
        self._interrupt = threading.Event()
        self._interrupt_lock = threading.Lock()

    def interrupt(self) -> None:
        with self._interrupt_lock:
            self._interrupt.set()
            self._interrupt = threading.Event()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the emulator is reset or stopped."""
        with self._interrupt_lock:
            interrupt = self._interrupt
        if not self._stopping.is_set():
            interrupt.wait(seconds)


def serve(
    emulator: Emulator, handler: RequestHandler, method: str, target: str, raw: bytes
) -> None:
    """Answer one request through ``handler``: inspection, a results download, or the API."""
    split = urlsplit(target)
    path = split.path
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    if path == INSPECTION_PREFIX or path.startswith(INSPECTION_PREFIX + "/"):
        from sync.emulator.inspection import serve_inspection

        handler.send_answer(serve_inspection(emulator, method, path, query, raw))
        return
    if path.startswith(RESULTS_PREFIX + "/") and method == "GET":
        name = path.removeprefix(RESULTS_PREFIX + "/")
        _gated(
            emulator,
            handler,
            method,
            path,
            fault_path=path,
            endpoint=f"GET {RESULTS_PREFIX}/{{batch_id}}.tar.gz",
            slot=RESULTS_SLOT,
            api_call=False,
            answer=lambda: _Reply.download(*emulator.batches.download(name, query)),
        )
        return
    api_path = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX + "/") else None
    bound, endpoint, params, known = _resolve(emulator, method, api_path)

    def answer() -> _Reply:
        _delay(emulator)
        if bound is None:
            failure = problems.method_not_allowed() if known else problems.not_found()
            return _Reply.problem(failure)
        outcome = run_handler(bound, method, api_path or "", params, query, raw, emulator.errors)
        return _Reply.of(outcome)

    _gated(
        emulator,
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
    emulator: Emulator, method: str, api_path: str | None
) -> tuple[Callable[[Request], Answer] | None, str, dict[str, str], bool]:
    """The handler bound to its context, the endpoint name, path parameters,
    and whether the path exists for some method (405 rather than 404)."""
    if api_path is None:
        return None, f"{method} (unknown)", {}, False
    route, params, known = ROUTES.resolve(method, api_path)
    if route is not None:
        return partial(route.handler, emulator.store), route.endpoint, params, True
    if emulator.serve_batches:
        bulk, params, bulk_known = BATCH_ROUTES.resolve(method, api_path)
        if bulk is not None:
            return partial(bulk.handler, emulator.batches), bulk.endpoint, params, True
        known = known or bulk_known
    return None, f"{method} (unknown)", {}, known


def _gated(
    emulator: Emulator,
    handler: RequestHandler,
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
    in_flight = emulator.calls.enter(slot)
    fault: FaultKind | None = None
    try:
        if api_call and in_flight > emulator.max_connections:
            reply = _Reply.problem(problems.too_many_requests(emulator.max_connections))
        else:
            fault = emulator.faults.draw(method, fault_path)
            authorised = not api_call or key == emulator.api_key
            if fault is not None and fault.processes and authorised:
                # Carried out for real; only the answer is lost on the way back.
                answer()
            if fault is not None:
                reply = _fault(
                    emulator, fault, Call(method, path, endpoint, "timeout", fault.value)
                )
            elif api_call and key is None:
                reply = _Reply.problem(problems.api_key_missing())
            elif api_call and key != emulator.api_key:
                reply = _Reply.problem(problems.api_key_invalid())
            else:
                reply = answer()
    except BaseException:
        emulator.calls.leave(slot)
        raise
    # Recorded and the slot freed before answering, so that a client that
    # has its answer can rely on the call log and on the slot being free.
    # (A timeout was recorded when its hold began.)
    emulator.calls.finish(
        slot,
        None
        if reply.outcome == "timeout"
        else Call(method, path, endpoint, reply.outcome, fault.value if fault else None),
    )
    if reply.outcome == "reset":
        handler.server.reset_on_close(handler.connection)
    elif reply.outcome != "timeout":
        handler.send(reply.status, reply.body, reply.content_type)


def _delay(emulator: Emulator) -> None:
    if emulator.service_delay:
        emulator.holds.wait(emulator.service_delay)


def _fault(emulator: Emulator, kind: FaultKind, held: Call) -> _Reply:
    if kind is FaultKind.TOO_MANY_REQUESTS:
        return _Reply.problem(problems.too_many_requests(emulator.max_connections))
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
        emulator.calls.record(held)
        emulator.holds.wait(emulator.timeout_hold)
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
