"""The emulator as a real HTTP server, and the :class:`Emulator` handle tests hold.

An :class:`Emulator` owns the account's state (the store, the ``/batches``
queue, the injected faults, the call log) and its settings, starts and stops
the HTTP server (``transport.py``, bound to 127.0.0.1 unless told otherwise)
and resets everything between tests. How a request is answered, through
Mailchimp's gates (concurrency limit, faults, authentication, then the
route), is ``gates.py``.
"""

from __future__ import annotations

import threading
from functools import partial
from types import TracebackType
from typing import Any, Self

from sync.emulator.api import perform
from sync.emulator.audience import Audience
from sync.emulator.batches import BatchQueue
from sync.emulator.calls import CallLog
from sync.emulator.client import client_for
from sync.emulator.faults import FaultPlan
from sync.emulator.gates import API_PREFIX, Holds
from sync.emulator.members import Clock, utc_now
from sync.emulator.store import Store
from sync.emulator.transport import EmulatorHTTPServer

DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us21"
DEFAULT_LIST_ID = "a1b2c3d4e5"
MAX_CONNECTIONS = 10


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
        connect_delay: float = 0.0,
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
        #: Seconds a new connection takes before its first request is read:
        #: the TCP and TLS handshakes' round trips to Mailchimp, which a
        #: client that keeps its connections alive pays once per connection.
        self.connect_delay = connect_delay
        self.timeout_hold = timeout_hold
        #: False answers 404 on ``/batches``, like a proxy that does not
        #: forward it: the sink must then fall back to direct calls.
        self.serve_batches = serve_batches
        self.verbose = verbose
        self._defaults = (
            max_connections,
            service_delay,
            connect_delay,
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
        # Cut short by reset() and stop(): no hold or delay in progress
        # outlives the test that caused it.
        self.holds = Holds(self._stopping)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._server = EmulatorHTTPServer((self.host, self.port), self)
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
        self.holds.interrupt()
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
    def connections(self) -> int:
        """TCP connections accepted since the server started (a client that
        keeps its connections alive opens a few; one that does not, one per
        call)."""
        return self._server.connections if self._server is not None else 0

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
        self.holds.interrupt()
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
            self.connect_delay,
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
            "connect_delay": self.connect_delay,
            "timeout_hold": self.timeout_hold,
            "batch_delay": self.batch_delay,
            "hold_batches": self.hold_batches,
            "serve_batches": self.serve_batches,
        }
