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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from sync.config import Config
from sync.cycle import Cycle, CycleSummary, Sink
from sync.exceptions import ConfigurationError, Problem, RulesError
from sync.mailchimp import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    Caller,
    MailchimpSettings,
    make_client,
)
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
    log.info("cycle done", extra={"cycle": summary.counts()})
    return summary
