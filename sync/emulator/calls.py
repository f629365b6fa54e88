"""What the emulator saw: every API call and how it was answered.

Tests assert on this to prove retries happened (two calls, a 429 then a
200), that nothing was sent twice, or that the client never had more than
the allowed number of requests in flight. Inspection requests under
``/_emulator/`` are not recorded.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    """One API request: ``endpoint`` is its route template, ``outcome`` its answer.

    ``outcome`` is the status code as text, or ``"timeout"`` / ``"reset"``
    when no answer was sent at all.
    """

    method: str
    path: str
    endpoint: str
    outcome: str
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "outcome": self.outcome,
            "fault": self.fault,
        }


class CallLog:
    """Thread-safe record of calls plus the in-flight gauge per API key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._in_flight: Counter[str] = Counter()
        self.peak_in_flight = 0

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(self, endpoint: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if endpoint is None or c.endpoint == endpoint]

    def by_endpoint(self) -> dict[str, int]:
        """``{"PUT /lists/{list_id}/members/{subscriber_hash}": 3, ...}``."""
        with self._lock:
            return dict(Counter(c.endpoint for c in self._calls))

    def by_outcome(self) -> dict[str, int]:
        """``{"200": 5, "429": 1, "reset": 1}``."""
        with self._lock:
            return dict(Counter(c.outcome for c in self._calls))

    def count(self, endpoint: str | None = None, outcome: str | int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for c in self._calls
                if (endpoint is None or c.endpoint == endpoint)
                and (outcome is None or c.outcome == str(outcome))
            )

    def enter(self, key: str) -> int:
        """Count one more request in flight for ``key``; returns the new count."""
        with self._lock:
            self._in_flight[key] += 1
            now = self._in_flight[key]
            self.peak_in_flight = max(self.peak_in_flight, now)
            return now

    def leave(self, key: str) -> None:
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self.peak_in_flight = sum(self._in_flight.values())

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            calls = list(self._calls)
            peak = self.peak_in_flight
        return {
            "by_endpoint": dict(Counter(c.endpoint for c in calls)),
            "by_outcome": dict(Counter(c.outcome for c in calls)),
            "peak_in_flight": peak,
            "calls": [c.to_json() for c in calls],
        }
