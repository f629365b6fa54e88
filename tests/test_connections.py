"""Connections kept alive: the official client's calls through a pool of
sessions (``sync.mailchimp.connections``), and the emulator keeping them open
as Mailchimp does."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses
from mailchimp_marketing import Client
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator import Emulator, FaultKind
from sync.emulator.transport import RequestHandler
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.connections import SessionPool, reuse_connections
from sync.mailchimp.memory import MemoryLedger
from sync.records import DesiredMember
from tests.support.clock import Clock
from tests.support.sink import T0, make_sink


def members(n: int) -> list[DesiredMember]:
    return [
        DesiredMember(email=f"user{i}@example.com", merge_fields={"STATUS": "new", "SCORE": i})
        for i in range(n)
    ]


def settings_for(emulator: Emulator) -> MailchimpSettings:
    return MailchimpSettings(
        api_key=emulator.api_key, list_id=emulator.list_id, host=emulator.url, timeout=5.0
    )


def test_calls_in_a_row_share_one_connection(mailchimp_emulator: Emulator) -> None:
    client = make_client(settings_for(mailchimp_emulator))
    before = mailchimp_emulator.connections
    for _ in range(12):
        assert client.lists.get_list(mailchimp_emulator.list_id)["id"]
    assert mailchimp_emulator.calls.count() == 12
    assert mailchimp_emulator.connections - before == 1


def test_the_official_client_alone_opens_one_connection_per_call(
    mailchimp_emulator: Emulator,
) -> None:
    # What the pool is for: the same calls without it.
    client = Client({"api_key": mailchimp_emulator.api_key, "timeout": 5.0})
    client.api_client.host = mailchimp_emulator.url
    client.api_client.server = ""
    before = mailchimp_emulator.connections
    for _ in range(5):
        client.lists.get_list(mailchimp_emulator.list_id)
    assert mailchimp_emulator.connections - before == 5


def test_a_push_opens_at_most_one_connection_per_worker(mailchimp_emulator: Emulator) -> None:
    for tag, kind in (("STATUS", "text"), ("SCORE", "number")):
        mailchimp_emulator.audience.add_merge_field({"tag": tag, "name": tag, "type": kind})
    sink = make_sink(mailchimp_emulator, MemoryLedger(), Clock(T0))
    before = mailchimp_emulator.connections
    summary = sink.push(members(6000))
    assert summary.pushed == 6000
    calls = mailchimp_emulator.calls.count()
    assert calls == 12  # 500 members per batch subscribe
    # Nine workers, each keeping its connection for its next call.
    assert mailchimp_emulator.connections - before <= 9 < calls


@responses.activate
def test_the_pool_sends_the_request_the_client_would() -> None:
    seen: list[requests.PreparedRequest] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        seen.append(request)
        return 200, {}, json.dumps({"id": "m1"})

    url = "https://us21.api.mailchimp.com/3.0/lists/abc/members/h"
    responses.add_callback(responses.PUT, url, callback=answer)
    responses.add_callback(responses.GET, url, callback=answer)
    key = "0123456789abcdef0123456789abcdef-us21"
    plain = Client({"api_key": key, "server": "us21"})
    pooled = Client({"api_key": key, "server": "us21"})
    reuse_connections(pooled)
    body = {"email_address": "a@example.com", "merge_fields": {"SCORE": 1}}
    for client in (plain, pooled):
        client.lists.set_list_member("abc", "h", body, skip_merge_validation="true")
        client.lists.get_list_member("abc", "h", fields=["id"])
    first, second = seen[:2], seen[2:]
    for a, b in zip(first, second, strict=True):
        assert (a.method, a.url, a.body) == (b.method, b.url, b.body)
        for header in ("Authorization", "Content-Type", "User-Agent", "Accept"):
            assert a.headers.get(header) == b.headers.get(header)
    assert json.loads(second[0].body or b"") == body


def test_a_session_idle_too_long_is_closed_not_reused() -> None:
    now = [0.0]
    pool = SessionPool(size=2, max_idle=10.0, clock=lambda: now[0])
    first = pool._take()
    pool._give_back(first)
    now[0] = 5.0
    assert pool._take() is first  # idle 5 s: kept
    pool._give_back(first)
    now[0] = 16.0
    second = pool._take()  # idle 11 s: closed, a new one made
    assert second is not first
    assert pool.created == 2


def test_the_pool_keeps_at_most_size_sessions_idle() -> None:
    pool = SessionPool(size=2)
    taken = [pool._take() for _ in range(4)]
    for session in taken:
        pool._give_back(session)
    again = [pool._take() for _ in range(4)]
    assert pool.created == 6  # two kept, two closed and made again
    assert sum(1 for s in again if s in taken) == 2


def test_stopping_the_emulator_closes_idle_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long idle timeout: without closing the idle connections, stopping
    # would wait for it.
    monkeypatch.setattr(RequestHandler, "timeout", 600)
    emulator = Emulator().start()
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=30)
    try:
        connection.request("GET", "/_emulator/settings")
        assert connection.getresponse().read()
        stopper = threading.Thread(target=emulator.stop)
        stopper.start()
        stopper.join(timeout=20)
        assert not stopper.is_alive(), "stop() waits for the idle connection"
        assert connection.sock is not None
        assert connection.sock.recv(1) == b""  # closed by the server
    finally:
        connection.close()
        if stopper.is_alive():
            stopper.join()


@pytest.mark.parametrize("kind", [FaultKind.RESET, FaultKind.TIMEOUT])
def test_after_a_fault_that_sends_no_answer_the_next_call_is_answered(
    mailchimp_emulator: Emulator, kind: FaultKind
) -> None:
    emulator = mailchimp_emulator
    emulator.timeout_hold = 0.3
    settings = MailchimpSettings(
        api_key=emulator.api_key, list_id=emulator.list_id, host=emulator.url, timeout=0.1
    )
    client = make_client(settings)
    before = emulator.connections
    assert client.lists.get_list(emulator.list_id)["id"]  # a connection kept alive
    emulator.faults.script("/lists/*", kind, method="GET")
    with pytest.raises(ApiClientError):
        client.lists.get_list(emulator.list_id)
    # The connection the fault broke is not used again.
    assert client.lists.get_list(emulator.list_id)["id"]
    assert emulator.connections - before == 2


def test_concurrent_calls_each_get_a_session(mailchimp_emulator: Emulator) -> None:
    client = make_client(settings_for(mailchimp_emulator))
    before = mailchimp_emulator.connections
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda _: client.lists.get_list("a1b2c3d4e5")["id"], range(40)))
    assert ids == ["a1b2c3d4e5"] * 40
    assert mailchimp_emulator.connections - before <= 4


def test_connect_delay_holds_new_connections_only(mailchimp_emulator: Emulator) -> None:
    emulator = mailchimp_emulator
    settings = MailchimpSettings(
        api_key=emulator.api_key, list_id=emulator.list_id, host=emulator.url, timeout=0.5
    )
    kept = make_client(settings)
    assert kept.lists.get_list(emulator.list_id)["id"]  # its connection is open
    emulator.connect_delay = 30.0
    # The open connection is past its handshakes: answered at once.
    assert kept.lists.get_list(emulator.list_id)["id"]
    # A new connection is held before its request is read: the client,
    # which waits 0.5 s for an answer, gives up.
    with pytest.raises(ApiClientError):
        make_client(settings).lists.get_list(emulator.list_id)
    assert emulator.settings()["connect_delay"] == 30.0


@responses.activate
def test_a_session_sends_back_no_cookie_an_answer_set() -> None:
    url = "https://us21.api.mailchimp.com/3.0/ping"
    responses.add(
        responses.GET,
        url,
        json={"health_status": "Everything's Chimpy!"},
        headers={"Set-Cookie": "ak_bmsc=abc; Domain=.mailchimp.com; Path=/"},
    )
    client = Client({"api_key": "0123456789abcdef0123456789abcdef-us21", "server": "us21"})
    reuse_connections(client, SessionPool(size=1))
    client.ping.get()
    client.ping.get()  # the same session: the client's own calls carry no cookie
    assert [c.request.headers.get("Cookie") for c in responses.calls] == [None, None]


def test_batch_results_are_downloaded_on_a_kept_connection(mailchimp_emulator: Emulator) -> None:
    for tag, kind in (("STATUS", "text"), ("SCORE", "number")):
        mailchimp_emulator.audience.add_merge_field({"tag": tag, "name": tag, "type": kind})
    sink = make_sink(mailchimp_emulator, MemoryLedger(), Clock(T0))
    sink.push(members(40))
    changed = [
        DesiredMember(email=m.email, merge_fields={**m.merge_fields, "STATUS": "changed"})
        for m in members(40)
    ]
    before = mailchimp_emulator.connections
    sink.push(changed)  # a /batches job: start, poll, download of its results
    assert set(mailchimp_emulator.calls.by_endpoint()) >= {
        "POST /batches",
        "GET /batch-results/{batch_id}.tar.gz",
    }
    assert mailchimp_emulator.connections == before  # all on the connection already open


def test_a_client_that_hangs_up_before_its_answer_is_no_error(
    mailchimp_emulator: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # A daemon killed mid-call, or a client whose timeout ran out, leaves
    # the emulator an answer to write on a connection reset by the peer.
    emulator = mailchimp_emulator
    emulator.service_delay = 0.3
    key = base64.b64encode(f"anystring:{emulator.api_key}".encode()).decode()
    port = urllib.parse.urlsplit(emulator.url).port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = f"GET /3.0/lists/{emulator.list_id} HTTP/1.1\r\nHost: x\r\n"
    sock.sendall(f"{head}Authorization: Basic {key}\r\n\r\n".encode())
    threading.Event().wait(0.1)  # read and held by the emulator
    # SO_LINGER 0: close() sends a TCP RST, so the answer's write fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    threading.Event().wait(0.5)  # the delay is over, the answer written
    emulator.service_delay = 0.0
    assert make_client(settings_for(emulator)).lists.get_list(emulator.list_id)["id"]
    assert emulator.calls.count() == 2
    assert "Traceback" not in capfd.readouterr().err
