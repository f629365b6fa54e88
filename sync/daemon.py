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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO

import schedule
import sqlalchemy as sa

from sync import history
from sync.config import Config
from sync.cycle import Cycle, CycleSummary, Sink
from sync.exceptions import ConfigurationError, MailsyncError, Problem, RulesError
from sync.lock import LeaderLock
from sync.mailchimp import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    Caller,
    MailchimpSettings,
    make_client,
)
from sync.metrics import Metrics
from sync.rules import Ruleset
from sync.schema import load_rules
from sync.sink import DryRunSink, MailchimpSink, SinkConfig
from sync.source_reader import SourceReader
from sync.sources import SourcesConfig, check_contract, load_sources
from sync.state import StateStore

log = logging.getLogger(__name__)

LAST_FULL = "last_full_cycle"


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
    caller = Caller(make_client(settings), list_id)
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
    the configuration (the demo and tests hand in their own)."""
    ruleset, sources = load_checked(config)
    database = config.require_database()
    state = StateStore(config.state, schema=config.state_schema)
    try:
        state.migrate()
        reader = SourceReader(sources, database, batch_size=config.daemon.batch_size)
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
            config, state, dry_run=dry_run, out=out or sys.stdout, clock=clock
        )
    return Runtime(config, ruleset, sources, reader, state, sink, clock, dry_run)


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


def run_once(
    runtime: Runtime, *, now: datetime | None = None, full: bool | None = None
) -> CycleSummary:
    """One cycle, recorded in the state store whatever its outcome."""
    now = now or runtime.clock()
    if now.tzinfo is None:
        raise ConfigurationError("the cycle instant must carry a time zone")
    full = full_cycle_due(runtime, now) if full is None else full
    cycle_id = runtime.state.start_cycle(now)
    cycle = Cycle(
        runtime.ruleset,
        runtime.sources,
        runtime.reader,
        runtime.state,
        runtime.sink,
        now=now,
        full=full,
        batch_size=runtime.config.daemon.batch_size,
        events_max_age=runtime.config.daemon.events_max_age,
        stop=runtime.stop,
    )
    try:
        summary = cycle.run()
    except BaseException:
        runtime.state.finish_cycle(
            cycle_id, runtime.clock(), ok=False, counts=cycle.summary.counts()
        )
        raise
    ok = not summary.stopped
    if ok and full:
        runtime.state.set_watermark(LAST_FULL, now.isoformat())
    runtime.state.finish_cycle(cycle_id, runtime.clock(), ok=ok, counts=summary.counts())
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
            "rules reload: %s changed and is valid; using it from this cycle: %s",
            self.path,
            "; ".join(rules_changes(self.runtime.ruleset, new)),
        )
        self.runtime.ruleset = new
        return True


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
    and the next cycle tries again; anything else is a bug and propagates.
    """
    stop = runtime.stop
    interval = runtime.config.daemon.interval.total_seconds()
    watcher = RulesWatcher(runtime)
    while not stop.is_set():
        if not lock.try_acquire():
            metrics.leader = False
            log.info("standby: another mailsync holds the lock for this audience")
            stop.wait(standby_wait)
            continue
        metrics.leader = True
        log.info("leader: running cycles every %ss", interval)
        _lead(runtime, lock, metrics, watcher, interval, tick)
    lock.release()
    return 0


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

    def cycle() -> None:
        nonlocal first
        if not lock.try_acquire():
            lost.set()
            return
        now = runtime.clock()
        watcher.check(now)
        try:
            summary = run_once(runtime, now=now, full=True if first else None)
        except (MailsyncError, sa.exc.OperationalError) as exc:
            metrics.failed_cycle()
            log.error(
                "cycle failed, next try in %ss: %s: %s",
                interval,
                type(exc).__name__,
                exc,
                extra={"failure": {"kind": type(exc).__name__, "message": str(exc)}},
            )
            return
        first = False
        metrics.observe(summary, ok=not summary.stopped)
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
    cycle()
    renew_every = 5.0
    last_renew = time.monotonic()
    while not stop.is_set() and not lost.is_set():
        scheduler.run_pending()
        if time.monotonic() - last_renew >= renew_every:
            last_renew = time.monotonic()
            if not lock.try_acquire():
                lost.set()
        stop.wait(tick)
    if lost.is_set():
        metrics.leader = False
        log.error("leader lock lost; going back to standby")
