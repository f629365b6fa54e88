"""What the emulator saw: every API call and how it was answered.

Tests assert on this to prove retries happened (two calls, a 429 then a
200), that nothing was sent twice, or that the client never had more than
the allowed number of requests in flight. Inspection requests under
``/_emulator/`` are not recorded.

Operations run inside a ``/batches`` job are not calls of the key (that is
the point of batches: one start, some polls, one download), so they are
kept apart as :class:`OperationCall` and never appear in :meth:`CallLog.count`.

A call is recorded, and its concurrency slot freed, *before* its answer is
written to the socket: a client that holds its answer can rely on the log.
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


@dataclass(frozen=True)
class OperationCall:
    """One operation a ``/batches`` job executed, with the status it got."""

    batch_id: str
    operation_id: str | None
    method: str
    path: str
    endpoint: str
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "operation_id": self.operation_id,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "outcome": self.outcome,
        }


class CallLog:
    """Thread-safe record of calls plus the in-flight gauge per API key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._operations: list[OperationCall] = []
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

    def record_operation(self, operation: OperationCall) -> None:
        with self._lock:
            self._operations.append(operation)

    def operations(self, batch_id: str | None = None) -> list[OperationCall]:
        """Operations executed inside batches (not API calls), in execution order."""
        with self._lock:
            return [o for o in self._operations if batch_id is None or o.batch_id == batch_id]

    def operation_count(
        self,
        endpoint: str | None = None,
        outcome: str | int | None = None,
        batch_id: str | None = None,
    ) -> int:
        with self._lock:
            return sum(
                1
                for o in self._operations
                if (endpoint is None or o.endpoint == endpoint)
                and (outcome is None or o.outcome == str(outcome))
                and (batch_id is None or o.batch_id == batch_id)
            )

    def operations_by_batch(self) -> dict[str, int]:
        """``{"3f2a9c01bd": 500, ...}``: operations executed per batch."""
        with self._lock:
            return dict(Counter(o.batch_id for o in self._operations))

    def enter(self, key: str) -> int:
        """Count one more request in flight for ``key``; returns the new count."""
        with self._lock:
            self._in_flight[key] += 1
            now = self._in_flight[key]
            self.peak_in_flight = max(self.peak_in_flight, now)
            return now

    def leave(self, key: str) -> None:
        with self._lock:
            self._leave(key)

    def finish(self, key: str, call: Call | None) -> None:
        """Record ``call`` (if any) and free its slot at once, in that order:
        whoever sees the slot free (``wait_idle``) also sees the call."""
        with self._lock:
            if call is not None:
                self._calls.append(call)
            self._leave(key)

    def _leave(self, key: str) -> None:
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]
        if not self._in_flight:
            self._idle.notify_all()

    def in_flight(self, key: str | None = None) -> int:
        """Requests being answered now, for ``key`` or for all keys."""
        with self._lock:
            return sum(self._in_flight.values()) if key is None else self._in_flight[key]

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if some still are after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight, timeout)

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._operations.clear()
            self.peak_in_flight = sum(self._in_flight.values())

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            calls = list(self._calls)
            operations = list(self._operations)
            peak = self.peak_in_flight
        return {
            "by_endpoint": dict(Counter(c.endpoint for c in calls)),
            "by_outcome": dict(Counter(c.outcome for c in calls)),
            "peak_in_flight": peak,
            "calls": [c.to_json() for c in calls],
            # Counts only: a big job has thousands of operations.
            "batch_operations": {
                "total": len(operations),
                "by_batch": dict(Counter(o.batch_id for o in operations)),
                "by_endpoint": dict(Counter(o.endpoint for o in operations)),
                "by_outcome": dict(Counter(o.outcome for o in operations)),
            },
        }
