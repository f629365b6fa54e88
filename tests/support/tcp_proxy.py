"""A loopback TCP proxy that cuts, stalls and refuses: a flaky network to a database.

Put between mailsync and PostgreSQL (``proxy.url(pg_url)`` rewrites a URL's
host and port to go through it), it forwards bytes both ways until told to:

* ``cut()``: every open connection is reset (``SO_LINGER`` 0, so the other
  ends see a reset, as when a server restarts or a NAT forgets the flow);
* ``stall(seconds)``: nothing moves either way for that long; the
  connections stay open and go on afterwards (a saturated link, a stopped VM);
* ``refuse(seconds)``: the listening socket is closed for that long, so new
  connections are refused (``ECONNREFUSED``), as when the server is down; open
  connections are cut too, since a server that is down has none.

``chaos(rate, seed)`` does one of the three at random, about ``rate`` times a
second, from a thread, until ``calm()``. Counts of what was done are in
``done``. Used by ``tests/test_chaos_database.py``.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter

import sqlalchemy as sa

CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.done: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._calm = threading.Event()
        self._calm.set()
        self._refuse_until = 0.0
        self._listener: socket.socket | None = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- what the tests call ---------------------------------------------

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        return (
            sa.make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def cut(self) -> None:
        with self._lock:
            victims = list(self._sockets)
            self._sockets.clear()
        for sock in victims:
            _reset(sock)
        self.done["cut"] += 1

    def stall(self, seconds: float) -> None:
        self._flowing.clear()
        self.done["stall"] += 1
        threading.Timer(seconds, self._flowing.set).start()

    def refuse(self, seconds: float) -> None:
        with self._lock:
            self._refuse_until = time.monotonic() + seconds
        self._open.clear()
        self.cut()
        self.done["cut"] -= 1  # counted as a refusal, not a cut
        self.done["refuse"] += 1

    def chaos(self, rate: float, seed: int, longest: float = 1.0) -> None:
        """Faults at random, ``rate`` a second on average, until ``calm()``."""
        self._calm.clear()
        rng = random.Random(seed)

        def loop() -> None:
            while not self._calm.wait(rng.expovariate(rate)):
                fault = rng.choice(("cut", "stall", "refuse"))
                if fault == "cut":
                    self.cut()
                elif fault == "stall":
                    self.stall(rng.uniform(0.05, longest))
                elif self._open.is_set():
                    self.refuse(rng.uniform(0.05, longest))

        threading.Thread(target=loop, daemon=True).start()

    def calm(self) -> None:
        """No more faults: the chaos thread stops and the proxy lets everything through."""
        self._calm.set()
        deadline = time.monotonic() + 5
        while not (self._open.is_set() and self._flowing.is_set()):
            if time.monotonic() > deadline:
                raise AssertionError("the proxy did not recover from its last fault")
            time.sleep(0.01)

    def close(self) -> None:
        self._calm.set()
        self._closed.set()
        self._flowing.set()
        self.cut()

    # -- the plumbing ------------------------------------------------------

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.05)
        return listener

    def _accept_loop(self) -> None:
        # This thread alone owns the listening socket: a socket closed while
        # another thread waits in accept() would keep its port a while.
        while not self._closed.is_set():
            with self._lock:
                refuse_until = self._refuse_until
            if time.monotonic() < refuse_until:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                time.sleep(0.01)
                continue
            if self._listener is None:
                self._listener = self._listen(self.port)
                self._open.set()
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()
        if self._listener is not None:
            self._listener.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                pair = {source, sink} & self._sockets
                self._sockets.difference_update(pair)
            for sock in (source, sink):
                _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with a reset rather than an orderly FIN, as a broken link looks.

    ``shutdown(SHUT_RD)`` first wakes the pump thread blocked reading this
    socket (closing alone would not) without sending anything.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
