"""Wiring the parts into something that runs: ``once``, ``run`` and ``demo``.

``Runtime`` holds what every cycle needs (rules, sources, a read-only reader
of the application database, the state store, a sink) built from the
operator's ``Config``, after checking that the rules and the sources agree
(``contract_problems``); ``make_sink`` chooses where pushes go (Mailchimp,
or a dry run when nothing says where). Running cycles is elsewhere:
``sync.daemon.once`` (one cycle) and ``sync.daemon.serve`` (the daemon).

The clock is a parameter (``clock``, ``sync.daemon.clock``) so the demo can
move time forward and tests can pin it; nothing below reads
``datetime.now`` directly.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO

from sync.daemon.clock import system_clock
from sync.daemon.config import Config
from sync.daemon.lock import Fence
from sync.daemon.push import FLUSH_SIZE, Sink
from sync.exceptions import Problem, RulesError
from sync.mailchimp.batches import BatchPolling
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import API_KEY_ENV, API_KEY_FILE_ENV, MailchimpSettings, make_client
from sync.mailchimp.dryrun import DryRunSink
from sync.mailchimp.reconciliation import ReconciliationPoll
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.rules.model import Ruleset
from sync.rules.schema import load_rules
from sync.sources.model import SourcesConfig, check_contract
from sync.sources.reader import SourceReader
from sync.sources.schema import load_sources
from sync.sql.compiler import PG_SETTINGS
from sync.sql.evaluator import SqlEvaluator
from sync.state.store import StateStore

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")


#: Allocations of container objects between two young-generation passes of
#: Python's cycle collector (CPython's default is 700). A cycle allocates a
#: few objects per entity and per member, nearly all freed at once by
#: reference counting; at the default the collector ran every few hundred
#: of them and took 14-16 % of going live's CPU at 100k users
#: (``benchmarks/README.md``). Cyclic garbage still goes, a little later.
GC_YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Let the cycle collector run less often in this process (never more
    often than it already does)."""
    young, *older = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def _millis(duration: timedelta) -> str:
    return f"{max(1, int(duration.total_seconds() * 1000))}ms"


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
    #: When each type's action rows were last checked for rows the compiled
    #: SQL leaves out (``Deriver``: at most once an hour).
    unusable_checked: dict[str, datetime] = field(default_factory=dict)
    #: Changed members accumulated before a push (``PushBuffer``).
    flush_size: int = FLUSH_SIZE
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
                # The state store in the same database: the diff is a join.
                stored=self.state.joinable_from(self.reader.engine),
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
    sink_config = SinkConfig(
        status_if_new=config.mailchimp.status_if_new,
        polling=BatchPolling(
            first_wait=config.mailchimp.batch_poll_wait, deadline=config.mailchimp.batch_wait
        ),
    )
    list_id = config.mailchimp.list_id
    if dry_run or not list_id or not has_credentials():
        if not dry_run:
            missing = "no audience (MAILCHIMP_LIST_ID)" if not list_id else "no API key"
            log.warning("DRY RUN: %s configured, nothing will be sent to Mailchimp", missing)
        return DryRunSink(state, out, sink_config, clock=clock), True
    settings = MailchimpSettings.from_env(
        list_id, host=config.mailchimp.base_url, timeout=config.mailchimp.timeout
    )
    retry = RetryPolicy(initial_wait=config.mailchimp.retry_wait)
    caller = Caller(make_client(settings), list_id, retry, fence=fence)
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
    arms it with the leader lock. A process that builds a runtime runs
    cycles: the cycle collector is tuned for them (``tune_collector``)."""
    tune_collector()
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
