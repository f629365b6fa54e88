"""One cycle, recorded: ``run_once``, the event window and going live.

``run_once`` decides whether the cycle is full (the first one, and then
every ``daemon.full_rescan`` as a safety net for data that changed without
a usable watermark, and after a re-initialisation) or incremental, runs it
and records it in the state store. ``events_window`` says from when events
may be sent: never before mailsync went live on this state store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from sync.daemon import history
from sync.daemon.cycle import Cycle
from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.metrics import Metrics
from sync.daemon.runtime import Runtime
from sync.exceptions import AudienceMissing, ConfigurationError, MailsyncError

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")

LAST_FULL = "last_full_cycle"
#: When mailsync went live on this state store (events before are not sent).
LIVE_SINCE = "events_live_since"
#: Prefix of the per-type instant of the last cycle (ticks read rows after it).
TICK = "tick:"


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
    preview: bool = False,
) -> Cycle:
    """A cycle wired to the runtime (rules in force, the compiled SQL, the
    sink, the operator's settings); ``window`` is ``events_window``'s answer;
    ``preview`` (without ``record``): ``Cycle``'s."""
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
        flush_size=runtime.flush_size,
        stop=runtime.stop,
        unusable_checked=runtime.unusable_checked,
        preview=preview,
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
