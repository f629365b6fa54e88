"""Operator settings: where things are and how the daemon behaves.

Settings come from an optional YAML file (``mailsync.yaml``, or ``--config``)
and are overridden by environment variables, so that a container can be
configured by environment alone and secrets never need a file in the
repository. The Mailchimp API key is *only* read from the environment
(``MAILCHIMP_API_KEY``) or from a file it names (``MAILCHIMP_API_KEY_FILE``),
never from this file: see ``sync.mailchimp.client.load_api_key``.

| setting | file key | environment | default |
|---|---|---|---|
| rule file | ``rules`` | ``MAILSYNC_RULES`` | ``rules.yaml`` |
| sources file | ``sources`` | ``MAILSYNC_SOURCES`` | ``sources.yaml`` |
| application database | ``database`` | ``MAILSYNC_DATABASE_URL`` | (required) |
| state store | ``state`` | ``MAILSYNC_STATE_URL`` | ``sqlite:///mailsync-state.sqlite`` |
| state schema (PostgreSQL) | ``state_schema`` | ``MAILSYNC_STATE_SCHEMA`` | none |
| audience | ``mailchimp.list_id`` | ``MAILCHIMP_LIST_ID`` | none: dry run |
| API base URL (emulator) | ``mailchimp.base_url`` | ``MAILCHIMP_BASE_URL`` | Mailchimp |
| status of new members | ``mailchimp.status_if_new`` | | ``subscribed`` |
| webhook secret | ``mailchimp.webhook_secret`` | ``MAILSYNC_WEBHOOK_SECRET`` | none: no receiver |
| reconciliation poll | ``mailchimp.poll_interval`` | ``MAILSYNC_POLL_INTERVAL`` | ``15min`` |
| first retry wait, seconds (doubles) | ``mailchimp.retry_wait`` | | ``1`` |
| first wait polling a ``/batches`` job, s (doubles) | ``mailchimp.batch_poll_wait`` | | ``1`` |
| wait for a ``/batches`` job, s (0: never) | ``mailchimp.batch_wait`` | | ``60`` |
| poll interval | ``daemon.interval`` | ``MAILSYNC_INTERVAL`` | ``1min`` |
| full pass (the safety net) | ``daemon.full_rescan`` | ``MAILSYNC_FULL_RESCAN`` | ``15min`` |
| events older than this are not sent | ``daemon.events_max_age`` | | ``7d`` |
| past events sent on going live | ``daemon.backfill_events`` | | ``0`` (none) |
| member of a deleted entity | ``daemon.on_delete`` | | ``keep`` |
| how cycles evaluate | ``daemon.evaluator`` | | ``sql`` |
| leader lease on SQLite | ``daemon.lease_ttl`` | | ``30s`` |
| source query limit | ``daemon.statement_timeout`` | ``MAILSYNC_STATEMENT_TIMEOUT`` | ``5min`` |
| compiled evaluation limit | ``daemon.evaluation_timeout`` | | ``1h`` |
| a cycle overruns after (``/healthz``) | ``daemon.cycle_overrun`` | | ``15min`` |
| log format | ``log_format`` | ``MAILSYNC_LOG_FORMAT`` | ``text`` |
| metrics address | ``metrics`` | ``MAILSYNC_METRICS`` | none (off) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sync.exceptions import ConfigurationError, RulesError
from sync.rules.durations import DurationError, parse_duration
from sync.rules.loader import MarkedDict, read_yaml_file
from sync.rules.validate import Report

DEFAULT_STATE = "sqlite:///mailsync-state.sqlite"
TOP_KEYS = (
    "rules",
    "sources",
    "database",
    "state",
    "state_schema",
    "mailchimp",
    "daemon",
    "log_format",
    "metrics",
)
MAILCHIMP_KEYS = (
    "list_id",
    "base_url",
    "status_if_new",
    "timeout",
    "webhook_secret",
    "poll_interval",
    "retry_wait",
    "batch_poll_wait",
    "batch_wait",
)
DAEMON_KEYS = (
    "interval",
    "full_rescan",
    "events_max_age",
    "backfill_events",
    "on_delete",
    "evaluator",
    "batch_size",
    "lease_ttl",
    "statement_timeout",
    "evaluation_timeout",
    "cycle_overrun",
)
ON_DELETE = ("keep", "unsubscribe", "archive")
EVALUATORS = ("sql", "engine")


@dataclass(frozen=True)
class MailchimpConfig:
    list_id: str | None = None
    base_url: str | None = None
    status_if_new: str = "subscribed"
    timeout: float = 120.0
    #: The last part of the webhook receiver's path; None: no receiver.
    webhook_secret: str | None = None
    #: How often members changed in Mailchimp are read back (missed webhooks).
    poll_interval: timedelta = timedelta(minutes=15)
    #: Seconds: the scale of the back-off between retries of a transient
    #: answer (``RetryPolicy.initial_wait``; each wait doubles, capped at 60 s).
    retry_wait: float = 1.0
    #: Seconds before the first poll of a ``/batches`` job
    #: (``BatchPolling.first_wait``; each wait doubles, capped at 30 s).
    batch_poll_wait: float = 1.0
    #: Seconds a push waits for a ``/batches`` job before leaving it running
    #: for a later cycle to collect (``BatchPolling.deadline``); 0: never wait.
    batch_wait: float = 60.0


@dataclass(frozen=True)
class DaemonConfig:
    interval: timedelta = timedelta(minutes=1)
    #: The full pass derives every entity and diffs it: the safety net for
    #: late rows, address changes, deletions and rules reloads. Cheap enough
    #: to run every few minutes.
    full_rescan: timedelta = timedelta(minutes=15)
    events_max_age: timedelta = timedelta(days=7)
    #: Going live (the first cycle of a new state store): events that
    #: happened up to this long before are still sent; none by default.
    backfill_events: timedelta = timedelta(0)
    #: What happens to the member of an entity the sources no longer list.
    on_delete: str = "keep"
    #: "sql": cycles evaluate with the compiled SQL (the engine where a type
    #: cannot be compiled); "engine": always the Python engine.
    evaluator: str = "sql"
    batch_size: int = 5000
    #: SQLite leader lease: a standby takes over this long after the leader died.
    lease_ttl: timedelta = timedelta(seconds=30)
    #: A source query running longer is cancelled by PostgreSQL and the cycle
    #: fails (retried next interval) instead of hanging the daemon.
    statement_timeout: timedelta = timedelta(minutes=5)
    #: The compiled SQL of a full pass streams while the cycle diffs and
    #: pushes, so the statement lasts as long as the pass (at a million users
    #: with a slow Mailchimp, longer than ``statement_timeout``): it has its
    #: own, longer limit (PostgreSQL counts a statement's time until its last
    #: row is read).
    evaluation_timeout: timedelta = timedelta(hours=1)
    #: ``/healthz`` answers 503 while a cycle runs longer than this, or
    #: three intervals if that is longer.
    cycle_overrun: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Config:
    rules: Path = Path("rules.yaml")
    sources: Path = Path("sources.yaml")
    database: str | None = None
    state: str = DEFAULT_STATE
    state_schema: str | None = None
    mailchimp: MailchimpConfig = field(default_factory=MailchimpConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log_format: str = "text"
    metrics: str | None = None

    def require_database(self) -> str:
        if not self.database:
            raise ConfigurationError(
                "no application database: set 'database:' in the config file or "
                "MAILSYNC_DATABASE_URL (e.g. postgresql+psycopg://user@host/app)"
            )
        return self.database


class _Reader(Report):
    """Reads one settings file; ``problems`` fills up as it goes."""

    def duration(
        self, mapping: MarkedDict, key: str, default: timedelta, section: str = "daemon"
    ) -> timedelta:
        if key not in mapping:
            return default
        try:
            value = parse_duration(str(mapping[key]))
        except DurationError as exc:
            self.error(mapping, key, (section, key), str(exc))
            return default
        if value <= timedelta(0):
            self.error(mapping, key, (section, key), "expected a duration above zero")
            return default
        return value

    def seconds(
        self, mapping: MarkedDict, key: str, default: float, *, zero: bool = False
    ) -> float:
        """A number of seconds above zero (or ``zero`` itself, when allowed;
        fractions allowed) under ``mailchimp``."""
        value = mapping.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (value == 0 and not zero)
        ):
            least = "zero or more" if zero else "above zero"
            self.error(mapping, key, ("mailchimp", key), f"expected a number of seconds {least}")
            return default
        return float(value)

    def choice(self, mapping: MarkedDict, key: str, allowed: tuple[str, ...]) -> str:
        """One of ``allowed`` (the first is the default)."""
        value = mapping.get(key, allowed[0])
        if value not in allowed:
            expected = ", ".join(allowed)
            self.error(mapping, key, ("daemon", key), f"expected one of {expected}, got {value!r}")
            return allowed[0]
        return str(value)

    def text(self, mapping: MarkedDict, key: str, path: tuple[str, ...]) -> str | None:
        value = mapping.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(mapping, key, path, f"expected text, found {value!r}")
            return None
        return value

    def read(self, data: Any, base: Path) -> Config:
        if data is None:
            return Config()
        if not isinstance(data, MarkedDict):
            self.error(data, None, (), "expected a mapping of settings")
            return Config()
        self.unknown_keys(data, TOP_KEYS, ())
        mc_section = data.get("mailchimp")
        if "api_key" in data or (isinstance(mc_section, MarkedDict) and "api_key" in mc_section):
            self.error(
                data,
                "mailchimp" if "api_key" not in data else "api_key",
                ("api_key",),
                "the API key never goes in a file mailsync reads as configuration: set "
                "MAILCHIMP_API_KEY, or MAILCHIMP_API_KEY_FILE to a file only the daemon can read",
            )
        mc_raw = data.get("mailchimp") or MarkedDict()
        daemon_raw = data.get("daemon") or MarkedDict()
        mailchimp = MailchimpConfig()
        daemon = DaemonConfig()
        if isinstance(mc_raw, MarkedDict):
            self.unknown_keys(mc_raw, MAILCHIMP_KEYS, ("mailchimp",))
            mailchimp = MailchimpConfig(
                list_id=self.text(mc_raw, "list_id", ("mailchimp", "list_id")),
                base_url=self.text(mc_raw, "base_url", ("mailchimp", "base_url")),
                status_if_new=self.text(mc_raw, "status_if_new", ("mailchimp", "status_if_new"))
                or "subscribed",
                timeout=float(mc_raw.get("timeout", 120.0)),
                webhook_secret=self.text(mc_raw, "webhook_secret", ("mailchimp", "webhook_secret")),
                poll_interval=self.duration(
                    mc_raw, "poll_interval", MailchimpConfig.poll_interval, "mailchimp"
                ),
                retry_wait=self.seconds(mc_raw, "retry_wait", MailchimpConfig.retry_wait),
                batch_poll_wait=self.seconds(
                    mc_raw, "batch_poll_wait", MailchimpConfig.batch_poll_wait
                ),
                batch_wait=self.seconds(
                    mc_raw, "batch_wait", MailchimpConfig.batch_wait, zero=True
                ),
            )
        if isinstance(daemon_raw, MarkedDict):
            self.unknown_keys(daemon_raw, DAEMON_KEYS, ("daemon",))
            batch_size = daemon_raw.get("batch_size", DaemonConfig.batch_size)
            if not isinstance(batch_size, int) or batch_size < 1:
                self.error(
                    daemon_raw, "batch_size", ("daemon", "batch_size"), "expected a positive number"
                )
                batch_size = DaemonConfig.batch_size
            daemon = DaemonConfig(
                interval=self.duration(daemon_raw, "interval", DaemonConfig.interval),
                full_rescan=self.duration(daemon_raw, "full_rescan", DaemonConfig.full_rescan),
                events_max_age=self.duration(
                    daemon_raw, "events_max_age", DaemonConfig.events_max_age
                ),
                backfill_events=self.duration(
                    daemon_raw, "backfill_events", DaemonConfig.backfill_events
                ),
                on_delete=self.choice(daemon_raw, "on_delete", ON_DELETE),
                evaluator=self.choice(daemon_raw, "evaluator", EVALUATORS),
                batch_size=batch_size,
                lease_ttl=self.duration(daemon_raw, "lease_ttl", DaemonConfig.lease_ttl),
                statement_timeout=self.duration(
                    daemon_raw, "statement_timeout", DaemonConfig.statement_timeout
                ),
                evaluation_timeout=self.duration(
                    daemon_raw, "evaluation_timeout", DaemonConfig.evaluation_timeout
                ),
                cycle_overrun=self.duration(
                    daemon_raw, "cycle_overrun", DaemonConfig.cycle_overrun
                ),
            )
        log_format = data.get("log_format", "text")
        if log_format not in ("text", "json"):
            self.error(data, "log_format", ("log_format",), "expected text or json")
            log_format = "text"

        def path_of(key: str, default: str) -> Path:
            value = self.text(data, key, (key,)) or default
            return (base / value) if not Path(value).is_absolute() else Path(value)

        return Config(
            rules=path_of("rules", "rules.yaml"),
            sources=path_of("sources", "sources.yaml"),
            database=self.text(data, "database", ("database",)),
            state=self.text(data, "state", ("state",)) or DEFAULT_STATE,
            state_schema=self.text(data, "state_schema", ("state_schema",)),
            mailchimp=mailchimp,
            daemon=daemon,
            log_format=str(log_format),
            metrics=self.text(data, "metrics", ("metrics",)),
        )


def _env_duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    if name not in env:
        return default
    try:
        return parse_duration(env[name])
    except DurationError as exc:
        raise ConfigurationError(f"{name}={env[name]!r}: {exc}") from None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Settings from ``path`` (if given, or ``mailsync.yaml`` if present), then
    environment overrides."""
    env = os.environ if env is None else env
    config = Config()
    file = Path(path) if path is not None else Path("mailsync.yaml")
    if path is not None or file.exists():
        document = read_yaml_file(file)
        reader = _Reader(str(file))
        reader.problems.extend(document.problems)
        config = reader.read(document.data, file.parent)
        if reader.problems:
            raise RulesError(reader.problems)
    mailchimp = replace(
        config.mailchimp,
        list_id=env.get("MAILCHIMP_LIST_ID", config.mailchimp.list_id),
        base_url=env.get("MAILCHIMP_BASE_URL", config.mailchimp.base_url),
        webhook_secret=env.get("MAILSYNC_WEBHOOK_SECRET", config.mailchimp.webhook_secret),
        poll_interval=_env_duration(env, "MAILSYNC_POLL_INTERVAL", config.mailchimp.poll_interval),
    )
    daemon = replace(
        config.daemon,
        interval=_env_duration(env, "MAILSYNC_INTERVAL", config.daemon.interval),
        full_rescan=_env_duration(env, "MAILSYNC_FULL_RESCAN", config.daemon.full_rescan),
        statement_timeout=_env_duration(
            env, "MAILSYNC_STATEMENT_TIMEOUT", config.daemon.statement_timeout
        ),
    )
    return replace(
        config,
        rules=Path(env["MAILSYNC_RULES"]) if "MAILSYNC_RULES" in env else config.rules,
        sources=Path(env["MAILSYNC_SOURCES"]) if "MAILSYNC_SOURCES" in env else config.sources,
        database=env.get("MAILSYNC_DATABASE_URL", config.database),
        state=env.get("MAILSYNC_STATE_URL", config.state),
        state_schema=env.get("MAILSYNC_STATE_SCHEMA", config.state_schema),
        mailchimp=mailchimp,
        daemon=daemon,
        log_format=env.get("MAILSYNC_LOG_FORMAT", config.log_format),
        metrics=env.get("MAILSYNC_METRICS", config.metrics),
    )
