"""Failures on demand: the answers a real Mailchimp gives when things go wrong.

Two ways to ask for them, both checked before a request reaches the store:

* scripted: "the next N calls to ``PUT /lists/*/members/*`` fail with a 429";
* random: each call fails with probability ``rate``, drawn from a seeded
  generator so that a failing run can be replayed.

Per-address failures (compliance state, forgotten, fake) are not faults of
the transport but facts about an address, so they live in the store.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    """How a faulty call is answered; the values are what the CLI and HTTP API take."""

    TOO_MANY_REQUESTS = "429"  # problem+json, as for too many connections
    TOO_MANY_REQUESTS_EMPTY = "429-empty"  # 429 with no body at all
    FORBIDDEN_EMPTY = "403-empty"  # the overload answer that is not a bad key
    FORBIDDEN_JSON = "403-json"  # problem+json: the key has no access, fatal
    SERVER_ERROR = "500"  # problem+json
    UNAVAILABLE_HTML = "503-html"  # an edge filter's HTML page
    TIMEOUT = "timeout"  # hold the request past the client's timeout, then hang up
    RESET = "reset"  # close the socket without answering (TCP RST)
    # The request IS applied, then the answer is lost: the ambiguous failures a
    # client cannot tell from the two above (was my POST processed or not?).
    PROCESS_THEN_TIMEOUT = "process-then-timeout"
    PROCESS_THEN_RESET = "process-then-reset"

    @property
    def processes(self) -> bool:
        """Whether the request is carried out before the answer is withheld."""
        return self in (FaultKind.PROCESS_THEN_TIMEOUT, FaultKind.PROCESS_THEN_RESET)


def _compile(pattern: str) -> re.Pattern[str]:
    # `*` is one path segment and `**` any run of them, so that
    # "/lists/*/members/*" does not also catch ".../members/{hash}/tags".
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(regex)


@dataclass
class ScriptedFault:
    """The next ``remaining`` calls matching ``method`` and ``pattern`` get ``kind``."""

    pattern: str
    kind: FaultKind
    remaining: int = 1
    method: str | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = _compile(self.pattern)
        if self.method is not None:
            self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self._regex.fullmatch(path))

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "kind": self.kind.value,
            "remaining": self.remaining,
            "method": self.method,
        }


class FaultPlan:
    """The faults still to be served; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripted: list[ScriptedFault] = []
        self._rate = 0.0
        self._seed: int | None = None
        self._random = random.Random()
        self._kinds: tuple[FaultKind, ...] = tuple(FaultKind)

    def script(
        self, pattern: str, kind: FaultKind | str, times: int = 1, method: str | None = None
    ) -> ScriptedFault:
        """Make the next ``times`` matching calls fail with ``kind``."""
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        fault = ScriptedFault(pattern, FaultKind(kind), times, method)
        with self._lock:
            self._scripted.append(fault)
        return fault

    def set_random(
        self, rate: float, seed: int | None = None, kinds: Iterable[FaultKind | str] | None = None
    ) -> None:
        """Fail each call with probability ``rate``, with a kind drawn from ``kinds``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        chosen = tuple(FaultKind(k) for k in kinds) if kinds is not None else tuple(FaultKind)
        if not chosen:
            raise ValueError("kinds must name at least one fault kind")
        with self._lock:
            self._rate = rate
            self._seed = seed
            self._random = random.Random(seed)
            self._kinds = chosen

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
            self._rate = 0.0

    def draw(self, method: str, path: str) -> FaultKind | None:
        """The fault this call gets, if any; scripted faults come first."""
        with self._lock:
            for fault in self._scripted:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._scripted.remove(fault)
                    return fault.kind
            if self._rate and self._random.random() < self._rate:
                return self._random.choice(self._kinds)
        return None

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "scripted": [f.to_json() for f in self._scripted],
                "random": {
                    "rate": self._rate,
                    "seed": self._seed,
                    "kinds": [k.value for k in self._kinds],
                },
            }
