"""The HTTP side of the emulator: the threading server and its request handler.

Standard library only (``http.server``), one thread per connection. The
handler reads a request and hands it to :func:`sync.emulator.gates.serve`,
which decides the answer; it then writes the answer (with an
``X-Request-Id``), or, for a ``reset`` fault, has the server close the
connection with a TCP RST.

Connections are kept alive, as HTTP/1.1 servers do by default and as
Mailchimp's API does (clients that keep a ``requests.Session`` measure the
difference: docs/emulator.md), until the client closes them, they stay
idle for ``RequestHandler.timeout`` seconds, a fault leaves an answer
unsent, or the emulator stops. The server counts the connections it
accepted (``connections`` in ``/_emulator/calls``).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sync.emulator.gates import JSON_TYPE, serve
from sync.emulator.routes import Answer

if TYPE_CHECKING:
    from sync.emulator.server import Emulator


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its emulator, and can reset a connection."""

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
        # Open connections, and whether each is between requests (idle):
        # closing the server shuts the idle ones, whose handler threads
        # would otherwise wait for a next request until their timeout.
        self._open: dict[socket.socket, bool] = {}
        self._open_lock = threading.Lock()
        self._closing = False
        #: Connections accepted since the server started.
        self.connections = 0
        super().__init__(address, RequestHandler)

    def opened(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open[sock] = True
            self.connections += 1

    def busy(self, sock: socket.socket, busy: bool) -> bool:
        """Mark a connection busy (a request is being served) or idle; False
        when the server is closing and the connection must close."""
        with self._open_lock:
            self._open[sock] = not busy
            return not self._closing

    def closed(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.pop(sock, None)

    def server_close(self) -> None:
        with self._open_lock:
            self._closing = True
            idle = [sock for sock, is_idle in self._open.items() if is_idle]
        for sock in idle:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed by the client meanwhile
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer was written (a killed
        # daemon, a client timeout) is not the emulator's error: a server
        # drops the connection and says nothing, as Mailchimp's would.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

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


class RequestHandler(BaseHTTPRequestHandler):
    """One request: read its body, hand it to :func:`~sync.emulator.gates.serve`."""

    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # A socket timeout, so a silent client cannot pin a thread forever; it
    # also closes a connection left idle that long.
    timeout = 30
    #: Whether the request being served got an answer.
    _answered = False

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

    def setup(self) -> None:
        super().setup()
        self.server.opened(self.connection)
        emulator = self.server.emulator
        if emulator.connect_delay:
            # The handshakes of a new connection, before its first request.
            emulator.holds.wait(emulator.connect_delay)

    def finish(self) -> None:
        self.server.closed(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        self.server.busy(self.connection, True)
        self._answered = False
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        serve(self.server.emulator, self, self.command, self.path, raw)
        # No answer (a timeout or reset fault): the connection ends here.
        if not self.server.busy(self.connection, False) or not self._answered:
            self.close_connection = True

    def send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self._answered = True

    def send_answer(self, answer: Answer) -> None:
        body = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send(answer.status, body, JSON_TYPE)
