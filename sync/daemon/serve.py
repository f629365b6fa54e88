"""The long-running daemon: ``serve`` polls for ever, one cycle per interval.

Only the leader (``sync.daemon.lock``) runs cycles; a standby waits. A full
cycle runs first, then incremental ones; new rules (``sync.daemon.reload``)
bring a full pass at once. Expected failures are logged and the next cycle
tries again, with back-off where something cannot be reached; a state
store that needs an operator ends the daemon; anything else is a bug and
propagates.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import schedule
import sqlalchemy as sa

from sync.daemon.config import Config
from sync.daemon.lock import Keeper, LeaderLock, LeadershipLost
from sync.daemon.metrics import Metrics, degraded_reasons
from sync.daemon.once import poll_mailchimp, run_once
from sync.daemon.reload import RulesWatcher
from sync.daemon.runtime import Runtime, build_runtime
from sync.database_faults import DatabaseUnusable, StoreBroken, database_fault
from sync.exceptions import MailsyncError, RetriableError
from sync.sources.sessions import SourceUnavailableError

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")


def pause(stop: threading.Event, seconds: float) -> None:
    """Sleep ``seconds``, or until ``stop`` is set, polling the event rather
    than waiting on it. The SIGTERM handler sets ``stop`` in this (the main)
    thread; had it interrupted ``Event.wait`` while that held the event's
    internal lock, ``Event.set`` would wait for the lock forever: a daemon
    that ignores SIGTERM (seen once in CI)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class Backoff:
    """Waits between tries at something unavailable: doubling from ``first``
    up to ``cap`` seconds, back to ``first`` after a success."""

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first = first
        self.cap = cap
        self.tries = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2.0**self.tries)
        self.tries += 1
        return delay

    def reset(self) -> None:
        self.tries = 0


def build_runtime_patiently(
    config: Config, stop: threading.Event, **options: Any
) -> Runtime | None:
    """``build_runtime``, tried again with back-off (each wait logged) while
    a database cannot be reached; None when ``stop`` is set meanwhile."""
    backoff = Backoff(cap=max(config.daemon.interval.total_seconds(), 30.0))
    while not stop.is_set():
        try:
            runtime = build_runtime(config, **options)
        except Exception as exc:
            _wait_to_retry("starting", transient_fault(exc), backoff, stop)
            continue
        runtime.stop = stop
        return runtime
    return None


def _wait_to_retry(
    what: str, fault: RetriableError, backoff: Backoff, stop: threading.Event
) -> None:
    """Log that ``what`` failed and when it is tried again, then wait."""
    delay = backoff.next()
    log.warning(
        "%s: %s; retrying in %.0fs",
        what,
        fault,
        delay,
        extra={"failure": {"kind": type(fault).__name__, "message": str(fault)}},
    )
    pause(stop, delay)


def transient_fault(exc: Exception) -> RetriableError:
    """``exc`` as a retriable error, or raised again: as a fatal, explained
    error when it is a database fault that retrying cannot mend (read-only,
    corrupt, vanished), and as it is when it is no database fault (a bug)."""
    if isinstance(exc, RetriableError):
        return exc
    fault = database_fault(exc)
    if isinstance(fault, RetriableError):
        return fault
    if fault is not None:
        raise fault from exc
    raise exc


def serve(
    runtime: Runtime,
    lock: LeaderLock,
    metrics: Metrics,
    *,
    tick: float = 0.5,
    standby_wait: float = 2.0,
) -> int:
    """Poll for ever (until ``runtime.stop``): one cycle per interval, as leader.

    A full cycle runs first, then incremental ones with the periodic full
    re-scan as a safety net. Expected failures (the database or Mailchimp
    unreachable, a source query refused, a fatal Mailchimp answer) are logged
    and the next cycle tries again; so is a state store that cannot be
    reached for the leader lock, with back-off. A state store that needs an
    operator (read-only, corrupt, vanished) ends the daemon with one line
    saying so; anything else is a bug and propagates.
    """
    stop = runtime.stop
    interval = runtime.config.daemon.interval.total_seconds()
    watcher = RulesWatcher(runtime)
    backoff = Backoff(cap=max(interval, 30.0))
    try:
        while not stop.is_set():
            try:
                held = lock.try_acquire()
            except Exception as exc:
                fault = transient_fault(exc)
                metrics.leader = False
                _wait_to_retry("leader lock", fault, backoff, stop)
                continue
            backoff.reset()
            if not held:
                metrics.leader = False
                log.info("standby: another mailsync holds the lock for this audience")
                pause(stop, standby_wait)
                continue
            metrics.leader = True
            log.info("leader: running cycles every %ss", interval)
            runtime.fence.arm(lock)
            try:
                _lead(runtime, lock, metrics, watcher, interval, tick)
            finally:
                runtime.fence.arm(None)
    finally:
        _release(lock)
    return 0


def _release(lock: LeaderLock) -> None:
    try:
        lock.release()
    except Exception as exc:
        # Leaving anyway: the lease expires, the advisory lock goes with
        # the connection. A failure here must not hide why we leave.
        fault = exc if isinstance(exc, MailsyncError) else database_fault(exc)
        if fault is None:
            raise
        log.warning("leader lock not released: %s", fault)


def _lead(
    runtime: Runtime,
    lock: LeaderLock,
    metrics: Metrics,
    watcher: RulesWatcher,
    interval: float,
    tick: float,
) -> None:
    stop = runtime.stop
    first = True
    lost = threading.Event()

    def still_leader() -> bool:
        try:
            return lock.try_acquire()
        except Exception as exc:
            # Unsure whether we still hold it: stop leading; serve() retries
            # the lock with back-off and comes back here once it answers.
            log.warning("leader lock: %s; stepping down until it answers", transient_fault(exc))
            return False

    def cycle() -> None:
        nonlocal first
        if not still_leader():
            lost.set()
            return
        now = runtime.clock()
        # New rules: a full pass re-derives everyone under them at once.
        reloaded = watcher.check(now)
        # Mailchimp-side changes first, so this cycle's push respects them.
        poll_mailchimp(runtime, metrics)
        metrics.cycle_started()
        try:
            summary = run_once(runtime, now=now, full=True if first or reloaded else None)
        except Exception as exc:
            metrics.cycle_ended()
            if stop.is_set() and isinstance(exc, SourceUnavailableError):
                # Our own cancel of a running query, on SIGTERM: not a failure.
                log.info("cycle interrupted: stopping (%s)", type(exc).__name__)
                return
            why = cycle_failure(exc)
            metrics.failed_cycle()
            if isinstance(exc, LeadershipLost):
                lost.set()  # stopped writing; back to standby after the log line
            log.error(
                "cycle failed, next try in %ss: %s: %s",
                interval,
                type(why).__name__,
                why,
                extra={"failure": {"kind": type(why).__name__, "message": str(why)}},
            )
            return
        metrics.cycle_ended()
        first = False
        metrics.observe(summary, ok=not summary.stopped)
        trouble = degraded_reasons(summary)
        if trouble and not summary.stopped:
            log.warning(
                "cycle degraded: %s",
                "; ".join(trouble),
                extra={"cycle": {"outcome": "degraded", "reasons": trouble}},
            )
        for failure in summary.push.failures:
            log.warning(
                "push failed for %s",
                failure.email,
                extra={
                    "failure": {
                        "email": failure.email,
                        "reason": failure.reason,
                        "permanent": failure.permanent,
                    }
                },
            )

    scheduler = schedule.Scheduler()
    scheduler.every(max(1, round(interval))).seconds.do(cycle)
    # The keeper renews the lock while cycles run (a cycle can outlast the
    # lease); the fence stops Mailchimp writes when renewals stop succeeding.
    with Keeper(lock, on_lost=lost.set):
        cycle()
        while not stop.is_set() and not lost.is_set():
            scheduler.run_pending()
            pause(stop, tick)
    if lost.is_set():
        metrics.leader = False
        log.error("leader lock lost; going back to standby")


def cycle_failure(exc: Exception) -> Exception:
    """What a failed cycle logs before the next one tries again; raises what
    must end the daemon: a state store needing an operator, and bugs."""
    fault = database_fault(exc)
    if isinstance(fault, StoreBroken | DatabaseUnusable):
        raise fault from exc
    if isinstance(exc, StoreBroken):
        raise exc
    if fault is not None:
        return fault
    if isinstance(exc, MailsyncError | sa.exc.OperationalError):
        return exc
    raise exc
