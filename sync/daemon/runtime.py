"""Wiring the parts into something that runs: ``once``, ``run`` and ``demo``.

``Runtime`` holds what every cycle needs (rules, sources, a read-only reader
of the application database, the state store, a sink) built from the
operator's ``Config``. ``run_once`` decides whether the cycle is full (the
first one, and then every ``daemon.full_rescan`` as a safety net for data
that changed without a usable watermark) or incremental, runs it and records
it in the state store.

The clock is a parameter (``clock``) so the demo can move time forward and
tests can pin it; nothing below reads ``datetime.now`` directly.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import schedule
import sqlalchemy as sa

from sync.daemon import history
from sync.daemon.config import Config
from sync.daemon.cycle import Cycle, CycleSummary, Sink
from sync.daemon.lock import Fence, Keeper, LeaderLock, LeadershipLost
from sync.daemon.metrics import Metrics, degraded_reasons
from sync.database_faults import DatabaseUnusable, StoreBroken, database_fault
from sync.exceptions import (
    AudienceMissing,
    ConfigurationError,
    MailsyncError,
    Problem,
    RetriableError,
    RulesError,
)
from sync.mailchimp.caller import Caller
from sync.mailchimp.client import API_KEY_ENV, API_KEY_FILE_ENV, MailchimpSettings, make_client
from sync.mailchimp.dryrun import DryRunSink
from sync.mailchimp.reconciliation import ReconciliationPoll
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.rules.model import Ruleset
from sync.rules.schema import load_rules
from sync.sources.model import SourcesConfig, check_contract, load_sources
from sync.sources.reader import SourceReader, SourceUnavailableError
from sync.sql.compiler import PG_SETTINGS
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import StateStore

log = logging.getLogger(__name__)

LAST_FULL = "last_full_cycle"
#: When mailsync went live on this state store (events before are not sent).
LIVE_SINCE = "events_live_since"
#: Prefix of the per-type instant of the last cycle (ticks read rows after it).
TICK = "tick:"


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


def _millis(duration: timedelta) -> str:
    return f"{max(1, int(duration.total_seconds() * 1000))}ms"


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


def has_credentials(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get(API_KEY_ENV) or env.get(API_KEY_FILE_ENV))


def load_checked(config: Config) -> tuple[Ruleset, SourcesConfig]:
    """Rules and sources, each valid on its own."""
    return load_rules(config.rules), load_sources(config.sources)


def contract_problems(
    ruleset: Ruleset, sources: SourcesConfig, reader: SourceReader, now: datetime
) -> list[Problem]:
    """What the rules read that the sources do not give: an action without a
    query, a fact no query (nor the entity list's identity columns) provides."""
    problems: list[Problem] = []
    for entity in ruleset.entities.values():
        if entity.name not in sources.entities:
            problems.append(
                Problem(
                    sources.file,
                    None,
                    ("entities",),
                    f"no entity type {entity.name!r}, which {ruleset.file} declares",
                )
            )
            continue
        identity = set(reader.identity_columns(entity.name, now=now))
        problems.extend(
            check_contract(
                sources,
                entity.name,
                actions=tuple(entity.actions),
                facts=tuple(f for f in entity.facts if f not in identity),
            )
        )
    return problems


@dataclass
class Runtime:
    config: Config
    ruleset: Ruleset
    sources: SourcesConfig
    reader: SourceReader
    state: StateStore
    sink: Sink
    clock: Callable[[], datetime] = system_clock
    dry_run: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    #: Events of the first cycle of a new state store go this far back
    #: (``--backfill-events``; default: the setting, none).
    backfill_events: timedelta | None = None
    #: Reads back what changed in Mailchimp (None in a dry run).
    poller: ReconciliationPoll | None = None
    #: Raises ``LeadershipLost`` before a Mailchimp request once this process
    #: may no longer lead (armed by ``serve``; open otherwise).
    fence: Fence = field(default_factory=Fence)
    _evaluator: SqlEvaluator | None = field(default=None, repr=False)

    @property
    def evaluator(self) -> SqlEvaluator | None:
        """The compiled-SQL evaluator for the rules in force (rebuilt when
        they change), sharing the reader's read-only engine; None when the
        operator chose the Python engine."""
        if self.config.daemon.evaluator != "sql":
            return None
        timeout = self.config.daemon.evaluation_timeout
        if self._evaluator is None or self._evaluator.ruleset is not self.ruleset:
            self._evaluator = SqlEvaluator(
                self.ruleset,
                self.sources,
                self.reader.engine.url,
                engine=self.reader.engine,
                batch_size=self.config.daemon.batch_size,
                track=self.reader.tracked,
                pg_settings={**PG_SETTINGS, "statement_timeout": _millis(timeout)},
            )
        return self._evaluator

    def close(self) -> None:
        self.reader.close()
        self.state.close()


def make_sink(
    config: Config,
    state: StateStore,
    *,
    dry_run: bool,
    out: IO[str],
    clock: Callable[[], datetime],
    fence: Callable[[], None] | None = None,
) -> tuple[Sink, bool]:
    """The sink to use, and whether it is a dry run. Without an audience or
    credentials there is nothing to push to: that is a dry run, said loudly."""
    sink_config = SinkConfig(status_if_new=config.mailchimp.status_if_new)
    list_id = config.mailchimp.list_id
    if dry_run or not list_id or not has_credentials():
        if not dry_run:
            missing = "no audience (MAILCHIMP_LIST_ID)" if not list_id else "no API key"
            log.warning("DRY RUN: %s configured, nothing will be sent to Mailchimp", missing)
        return DryRunSink(state, out, sink_config, clock=clock), True
    settings = MailchimpSettings.from_env(
        list_id, host=config.mailchimp.base_url, timeout=config.mailchimp.timeout
    )
    caller = Caller(make_client(settings), list_id, fence=fence)
    return MailchimpSink(caller, state, sink_config, clock=clock), False


def build_runtime(
    config: Config,
    *,
    dry_run: bool = False,
    out: IO[str] | None = None,
    clock: Callable[[], datetime] = system_clock,
    sink_factory: Callable[[StateStore], Sink] | None = None,
) -> Runtime:
    """Everything a cycle needs. ``sink_factory`` replaces the sink chosen from
    the configuration (the demo and tests hand in their own). The Mailchimp
    sink's ``Caller`` checks ``runtime.fence`` before every request; ``serve``
    arms it with the leader lock."""
    fence = Fence()
    ruleset, sources = load_checked(config)
    database = config.require_database()
    state = StateStore(config.state, schema=config.state_schema)
    try:
        state.migrate()
        reader = SourceReader(
            sources,
            database,
            batch_size=config.daemon.batch_size,
            statement_timeout=config.daemon.statement_timeout,
        )
    except Exception:
        state.close()
        raise
    problems = contract_problems(ruleset, sources, reader, clock())
    if problems:
        reader.close()
        state.close()
        raise RulesError(problems)
    sink: Sink
    if sink_factory is not None:
        sink = sink_factory(state)
    else:
        sink, dry_run = make_sink(
            config, state, dry_run=dry_run, out=out or sys.stdout, clock=clock, fence=fence
        )
    runtime = Runtime(config, ruleset, sources, reader, state, sink, clock, dry_run, fence=fence)
    if isinstance(sink, MailchimpSink):
        runtime.poller = ReconciliationPoll(
            sink.caller,
            state,
            state.get_watermark,
            state.set_watermark,
            config.mailchimp.poll_interval,
        )
    return runtime


def poll_mailchimp(runtime: Runtime, metrics: Metrics | None = None) -> None:
    """The reconciliation poll, when due; a failure is logged, not raised:
    the next cycle's poll tries again and the webhooks still flow."""
    if runtime.poller is None:
        return
    try:
        read = runtime.poller.run_if_due()
    except (MailsyncError, sa.exc.OperationalError) as exc:
        log.error("reconciliation poll failed, next try at the next cycle: %s", exc)
        return
    if read is not None and metrics is not None:
        with metrics.lock:
            metrics.polled += read


def full_cycle_due(runtime: Runtime, now: datetime) -> bool:
    """The first cycle, the periodic safety net, and after a re-initialisation."""
    last = runtime.state.get_watermark(LAST_FULL)
    if last is None:
        return True
    last_full = datetime.fromisoformat(last)
    for entity_type in runtime.ruleset.entities:
        reinit_at = runtime.state.reinit_at(entity_type)
        if reinit_at is not None and reinit_at >= last_full:
            return True
    return now - last_full >= runtime.config.daemon.full_rescan


def events_window(runtime: Runtime, now: datetime) -> tuple[datetime, datetime | None]:
    """The instant events may be sent from, and (on going live) the instant
    from which the events not sent are counted as skipped.

    Events older than ``events_max_age`` are never sent. Nor are events that
    happened before mailsync went live on this state store: the first cycle
    of a new store records the instant (less ``backfill_events``), so that
    going live, or replacing a lost state store, does not send a burst of
    past events that a re-initialisation or the audience already reflects.
    """
    daemon = runtime.config.daemon
    oldest = now - daemon.events_max_age
    live = runtime.state.get_watermark(LIVE_SINCE)
    if live is not None:
        return max(oldest, datetime.fromisoformat(live)), None
    backfill = runtime.backfill_events
    if backfill is None:
        backfill = daemon.backfill_events
    live_since = now - backfill
    if not runtime.dry_run:
        runtime.state.set_watermark(LIVE_SINCE, live_since.isoformat())
    log.info(
        "going live at %s: events before %s are not sent (backfill %s)",
        now.isoformat(),
        live_since.isoformat(),
        backfill,
    )
    return max(oldest, live_since), oldest if live_since > oldest else None


def make_cycle(
    runtime: Runtime,
    now: datetime,
    *,
    full: bool,
    record: bool,
    window: tuple[datetime, datetime | None],
    ticks: Mapping[str, datetime] | None = None,
) -> Cycle:
    """A cycle wired to the runtime (rules in force, the compiled SQL, the
    sink, the operator's settings); ``window`` is ``events_window``'s answer."""
    events_since, skipped_since = window
    return Cycle(
        runtime.ruleset,
        runtime.sources,
        runtime.reader,
        runtime.state,
        runtime.sink,
        now=now,
        full=full,
        evaluator=runtime.evaluator,
        batch_size=runtime.config.daemon.batch_size,
        events_since=events_since,
        count_skipped_since=skipped_since,
        tick_since=ticks,
        record=record,
        on_delete=runtime.config.daemon.on_delete,
        stop=runtime.stop,
    )


def run_once(
    runtime: Runtime, *, now: datetime | None = None, full: bool | None = None
) -> CycleSummary:
    """One cycle, recorded in the state store whatever its outcome (a dry
    run writes nothing to the state store)."""
    now = now or runtime.clock()
    if now.tzinfo is None:
        raise ConfigurationError("the cycle instant must carry a time zone")
    record = not runtime.dry_run
    full = full_cycle_due(runtime, now) if full is None else full
    events_since, skipped_since = events_window(runtime, now)
    ticks = {
        t: datetime.fromisoformat(mark)
        for t in runtime.ruleset.entities
        if (mark := runtime.state.get_watermark(f"{TICK}{t}")) is not None
    }
    cycle_id = runtime.state.start_cycle(now) if record else None
    cycle = make_cycle(
        runtime, now, full=full, record=record, window=(events_since, skipped_since), ticks=ticks
    )
    try:
        summary = cycle.run()
    except AudienceMissing:
        if record:
            # What it accepted went with it: push everyone again once it exists.
            runtime.state.forget_audience()
        if cycle_id is not None:
            runtime.state.finish_cycle(
                cycle_id, runtime.clock(), ok=False, counts=cycle.summary.counts()
            )
        raise
    except BaseException:
        if cycle_id is not None:
            runtime.state.finish_cycle(
                cycle_id, runtime.clock(), ok=False, counts=cycle.summary.counts()
            )
        raise
    ok = not summary.stopped
    if cycle_id is not None:
        if ok:
            # Ticks read rows after this instant; the full pass catches the rest.
            # (Every type was looked at, those with nothing to read included.)
            for entity_type in runtime.ruleset.entities:
                runtime.state.set_watermark(f"{TICK}{entity_type}", now.isoformat())
            if full:
                runtime.state.set_watermark(LAST_FULL, now.isoformat())
        runtime.state.finish_cycle(cycle_id, runtime.clock(), ok=ok, counts=summary.counts())
    if cycle_id is not None:
        # The dashboard's history point (counts per status, moves); never fatal.
        history.record_quietly(runtime.state, runtime.ruleset, summary)
    log.info("cycle done", extra={"cycle": summary.counts()})
    return summary


# -- the long-running daemon --------------------------------------------------


def rules_changes(old: Ruleset, new: Ruleset) -> list[str]:
    """What a rules reload changes, for the log: statuses added or removed."""
    changes: list[str] = []
    for name in sorted(set(old.entities) | set(new.entities)):
        before = set(old.entities[name].status_names) if name in old.entities else set()
        after = set(new.entities[name].status_names) if name in new.entities else set()
        if name not in old.entities:
            changes.append(f"entity {name} added")
        elif name not in new.entities:
            changes.append(f"entity {name} removed")
        if after - before:
            changes.append(f"{name}: statuses added: {', '.join(sorted(after - before))}")
        if before - after:
            changes.append(f"{name}: statuses removed: {', '.join(sorted(before - after))}")
    return changes or ["no status added or removed"]


class RulesWatcher:
    """Reloads ``rules.yaml`` when it changes; keeps the last good rules when
    the new ones are invalid."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.path = runtime.config.rules
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def check(self, now: datetime) -> bool:
        """True when new rules were installed."""
        mtime = self._mtime()
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        try:
            new = load_rules(self.path)
            problems = contract_problems(new, self.runtime.sources, self.runtime.reader, now)
            if problems:
                raise RulesError(problems)
        except RulesError as exc:
            log.error(
                "rules reload: %s is invalid, still running on the previous rules:\n%s",
                self.path,
                "\n".join(str(p) for p in exc.problems),
            )
            return False
        log.info(
            "rules reload: %s changed and is valid; a full pass re-derives everyone now: %s",
            self.path,
            "; ".join(rules_changes(self.runtime.ruleset, new)),
        )
        self.runtime.ruleset = new
        return True


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
            fault = transient_fault(exc)
            delay = backoff.next()
            log.warning(
                "starting: %s; retrying in %.0fs",
                fault,
                delay,
                extra={"failure": {"kind": type(fault).__name__, "message": str(fault)}},
            )
            pause(stop, delay)
            continue
        runtime.stop = stop
        return runtime
    return None


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
                delay = backoff.next()
                log.warning(
                    "leader lock: %s; retrying in %.0fs",
                    fault,
                    delay,
                    extra={"failure": {"kind": type(fault).__name__, "message": str(fault)}},
                )
                pause(stop, delay)
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
            why = _cycle_failure(exc)
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


def _cycle_failure(exc: Exception) -> Exception:
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
