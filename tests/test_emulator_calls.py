"""Call accounting: a client holding its answer can trust the call log.

The emulator records a call, and frees its concurrency slot, before it
writes the first byte of the answer; a ``timeout`` is recorded when its hold
starts; a reset cuts holds short and lets them settle before clearing the
log, so nothing of one test lands in the next.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sync.emulator import Emulator, FaultKind
from sync.emulator.transport import RequestHandler


@pytest.fixture
def at_send(monkeypatch: pytest.MonkeyPatch, mailchimp_emulator: Emulator) -> list[tuple[int, int]]:
    """(calls recorded, requests in flight) seen at the moment each answer is sent."""
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    original = RequestHandler.send

    def send(self: RequestHandler, *args: Any, **kwargs: Any) -> None:
        if not self.path.startswith("/_emulator"):
            with lock:
                seen.append(
                    (mailchimp_emulator.calls.count(), mailchimp_emulator.calls.in_flight())
                )
        original(self, *args, **kwargs)

    monkeypatch.setattr(RequestHandler, "send", send)
    return seen


def test_a_call_is_recorded_and_its_slot_freed_before_the_answer(
    mailchimp_emulator, mailchimp_client, at_send
):
    mailchimp_emulator.faults.script("/ping", FaultKind.TOO_MANY_REQUESTS_EMPTY)
    mailchimp_client.ping.get()  # the fault
    mailchimp_client.ping.get()
    with pytest.raises(ApiClientError):
        mailchimp_client.lists.get_list("nope")
    assert at_send == [(1, 0), (2, 0), (3, 0)]


def test_counts_are_exact_as_soon_as_concurrent_clients_return(
    mailchimp_emulator, mailchimp_client
):
    for _ in range(30):
        mailchimp_emulator.calls.reset()
        with ThreadPoolExecutor(9) as pool:
            list(pool.map(lambda _: mailchimp_client.ping.get(), range(9)))
        assert mailchimp_emulator.calls.count() == 9
        assert mailchimp_emulator.calls.in_flight() == 0


def test_a_timeout_is_recorded_when_the_client_gives_up(mailchimp_emulator):
    mailchimp_emulator.timeout_hold = 10.0
    mailchimp_emulator.faults.script("/ping", FaultKind.TIMEOUT)
    client = mailchimp_emulator.client(timeout=0.2)
    with pytest.raises(ApiClientError):
        client.ping.get()
    assert mailchimp_emulator.calls.by_outcome() == {"timeout": 1}
    assert mailchimp_emulator.calls.calls()[0].fault == "timeout"
    # Still held, so still taking a slot, as a hung request would at Mailchimp.
    assert mailchimp_emulator.calls.in_flight(mailchimp_emulator.api_key) == 1


def test_reset_cuts_holds_short_and_nothing_lands_after_it(mailchimp_emulator):
    mailchimp_emulator.timeout_hold = 10.0
    mailchimp_emulator.service_delay = 10.0
    mailchimp_emulator.faults.script("/ping", FaultKind.TIMEOUT)
    slow = threading.Thread(
        target=lambda: requests.get(
            mailchimp_emulator.url + "/lists/" + mailchimp_emulator.list_id,
            auth=("u", mailchimp_emulator.api_key),
            timeout=20,
        )
    )
    slow.start()
    with pytest.raises(ApiClientError):
        mailchimp_emulator.client(timeout=0.2).ping.get()
    while mailchimp_emulator.calls.in_flight() < 2:
        time.sleep(0.01)
    begun = time.monotonic()
    mailchimp_emulator.reset()
    assert time.monotonic() - begun < 2.0
    slow.join(timeout=5)
    assert not slow.is_alive()
    assert mailchimp_emulator.calls.count() == 0
    assert mailchimp_emulator.calls.in_flight() == 0
    assert mailchimp_emulator.calls.peak_in_flight == 0
