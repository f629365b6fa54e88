"""Events the engine says are due against events the emulator received, keyed
alike so that the two counters compare: what arrived, what is missing, what
arrived twice."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.addresses import normalise_email
from sync.daemon.runtime import Runtime
from sync.emulator import Emulator
from sync.evaluate.engine import evaluate
from sync.sources.reader import SourceReader

EVENT_WINDOW = timedelta(days=7)  # DaemonConfig.events_max_age


def expected_events(runtime: Runtime, since: datetime, now: datetime) -> Counter[tuple[str, ...]]:
    """(email, name, instant, properties) of every event due between ``since`` and ``now``."""
    entity = runtime.ruleset.entity("user")
    expected: Counter[tuple[str, ...]] = Counter()
    assert runtime.config.database is not None
    with SourceReader(runtime.sources, runtime.config.database) as reader:
        for record in reader.read_entities("user", now=now):
            result = evaluate(entity, record.facts, record.actions, now, events_since=since)
            for event in result.events:
                expected[
                    _event_key(
                        normalise_email(record.email or ""),
                        event.name,
                        event.occurred_at.isoformat(),
                        event.properties,
                    )
                ] += 1
    return expected


def _event_key(email: str, name: str, occurred_at: str, properties: Any) -> tuple[str, ...]:
    instant = datetime.fromisoformat(occurred_at).astimezone(UTC).replace(microsecond=0)
    return (email, name, instant.isoformat(), json.dumps(dict(properties), sort_keys=True))


def received_events(emulator: Emulator) -> Counter[tuple[str, ...]]:
    return Counter(
        _event_key(email.lower(), e.name, e.occurred_at or "", e.properties)
        for email, e in emulator.audience.received_events()
    )
