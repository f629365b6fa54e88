"""The daemon's clock: the real one, or a simulated one for demos and tests.

The clock is a parameter everywhere below (``clock``) so the demo can move
time forward and tests can pin it; nothing reads ``datetime.now`` directly
but ``system_clock``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sync.exceptions import ConfigurationError

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")


def system_clock() -> datetime:
    return datetime.now(UTC)


def clock_from_env(env: dict[str, str] | None = None) -> Callable[[], datetime]:
    """The real clock, or a simulated one for demos and tests of the daemon:
    ``MAILSYNC_CLOCK_START`` (an instant) and ``MAILSYNC_CLOCK_SPEED`` (simulated
    seconds per real second, default 1). Logged loudly: never set it in production."""
    env = dict(os.environ) if env is None else env
    start_text = env.get("MAILSYNC_CLOCK_START")
    if not start_text:
        return system_clock
    try:
        start = datetime.fromisoformat(start_text)
        speed = float(env.get("MAILSYNC_CLOCK_SPEED", "1"))
    except ValueError as exc:
        raise ConfigurationError(f"MAILSYNC_CLOCK_START/SPEED: {exc}") from None
    if start.tzinfo is None:
        raise ConfigurationError("MAILSYNC_CLOCK_START needs an offset (Z or +02:00)")
    origin = time.monotonic()
    log.warning("SIMULATED CLOCK from %s at %sx speed", start.isoformat(), speed)

    def simulated() -> datetime:
        return start + timedelta(seconds=(time.monotonic() - origin) * speed)

    return simulated
