"""A sink against the Mailchimp emulator, through the official client over HTTP,
with retries that do not wait, and the instant its clock starts at."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync.emulator import Emulator
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from tests.support.clock import Clock

#: Where the sink tests' clock starts.
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: ``/batches`` polled briskly: the emulator finishes a job in milliseconds,
#: and the production default (a first wait of 1 s, doubling) made every
#: whole-audience push of a test sleep a second or more.
BRISK_POLLING = BatchPolling(first_wait=0.01, max_wait=0.1, deadline=60)


def make_sink(
    emulator: Emulator,
    ledger: PushLedger,
    clock: Clock,
    timeout: float = 5.0,
    *,
    warm: bool = True,
    **config: Any,
) -> MailchimpSink:
    settings = MailchimpSettings(
        api_key=emulator.api_key, list_id=emulator.list_id, host=emulator.url, timeout=timeout
    )
    caller = Caller(
        make_client(settings),
        emulator.list_id,
        RetryPolicy(attempts=6, initial_wait=0.0, max_wait=0.0, sleep=lambda _: None),
    )
    config.setdefault("polling", BRISK_POLLING)
    sink = MailchimpSink(caller, ledger, SinkConfig(**config), clock=clock)
    if warm:
        # The sink reads the audience's merge tags once per `merge_fields_ttl`:
        # read them now, so that the call counts below are those of the pushes.
        sink.audience.read(clock())
        emulator.calls.reset()
    return sink
