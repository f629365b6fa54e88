"""``mailsync reinit``: give every entity a fresh status from current facts.

Every entity of a type with a ``reinit:`` list enters the status that list
gives from its current facts, at one instant; actions at or before that
instant are superseded, later ones count as usual. The new baselines
replace the old ones atomically, per type (``StateStore.replace_baselines``):
an interruption leaves the previous ones in force. The next cycle re-reads
everything and pushes the new statuses.

The states are computed in SQL by default (``sync.sql.evaluator``); the
Python evaluator gives the same states (a parity test holds them equal) and
also works for SQLite data in a time zone other than UTC. ``preview`` gives
the table ``mailsync plan --reinit`` shows, and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime

from sync.daemon.config import Config
from sync.daemon.plan import PlanReport, ReinitStates, plan_reinit
from sync.daemon.runtime import load_checked
from sync.evaluate.engine import reinit_state
from sync.rules.model import Entity, Ruleset
from sync.sources.model import SourcesConfig
from sync.sources.reader import SourceReader
from sync.sql.evaluator import SqlEvaluator
from sync.state.baselines import Baseline
from sync.state.store import StateStore

#: ``(id, state)`` pairs of one entity type, as a re-initialisation streams them.
States = Iterable[tuple[str, str | None]]

#: Wraps the stream of one type's states (``mailsync reinit`` shows a progress
#: bar); the default shows nothing.
Progress = Callable[[Entity, States], AbstractContextManager[States]]


@dataclass
class Reinitialised:
    """One entity type re-initialised: how many entered each status."""

    entity_type: str
    at: datetime
    counts: Counter[str | None] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        out = [f"{self.entity_type}: {total} re-initialised at {self.at.isoformat()}"]
        for status, count in sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            out.append(f"  entered {status or '(no status)'}: {count}")
        return out


def _no_progress(entity: Entity, states: States) -> AbstractContextManager[States]:
    return nullcontext(states)


def preview(config: Config, *, at: datetime, evaluator: str = "sql") -> PlanReport:
    """Stored status -> new status for every entity, as ``reinitialise`` at
    ``at`` would store them (the table of ``mailsync plan --reinit``); writes
    nothing."""
    with _opened(config, at, evaluator) as (ruleset, sources, state, states_of):
        # The same table as `mailsync plan --reinit`, from the same function.
        return plan_reinit(ruleset, sources, state, states_of, rules=config.rules, now=at)


def reinitialise(
    config: Config,
    *,
    at: datetime,
    evaluator: str = "sql",
    progress: Progress = _no_progress,
) -> Iterator[Reinitialised]:
    """Re-initialise every type with a ``reinit:`` list at ``at``, one type
    after the other; each is yielded once its baselines are in force.
    ``evaluator``: "sql" (the database computes every state in one query)
    or "python" (entity by entity through the sources' queries)."""
    with _opened(config, at, evaluator) as (ruleset, sources, state, states_of):
        for entity in ruleset.entities.values():
            if not entity.reinit or entity.name not in sources.entities:
                continue
            done = Reinitialised(entity.name, at)
            stream = _baselines(progress(entity, states_of(entity)), at, done.counts)
            state.replace_baselines(entity.name, at, stream)
            yield done


@contextmanager
def _opened(
    config: Config, at: datetime, evaluator: str
) -> Iterator[tuple[Ruleset, SourcesConfig, StateStore, ReinitStates]]:
    """The rules, the sources, the state store (migrated) and where the
    states come from; closed on leaving."""
    ruleset, sources = load_checked(config)
    state = StateStore(config.state, schema=config.state_schema)
    database = config.require_database()
    try:
        state.migrate()
        with (
            SourceReader(sources, database) as reader,
            SqlEvaluator(ruleset, sources, database) as sql,
        ):

            def states_of(entity: Entity) -> States:
                if evaluator == "sql":
                    return sql.reinit_states(entity.name, at=at)
                return _python_states(reader, entity, at)

            yield ruleset, sources, state, states_of
    finally:
        state.close()


def _python_states(
    reader: SourceReader, entity: Entity, instant: datetime
) -> Iterator[tuple[str, str | None]]:
    for record in reader.read_entities(entity.name, now=instant):
        yield record.id, reinit_state(entity, record.facts, instant)


def _baselines(
    progress: AbstractContextManager[States],
    instant: datetime,
    counts: Counter[str | None],
) -> Iterator[Baseline]:
    """Stream the new baselines, counting them by state, with the progress shown."""
    with progress as states:
        for ident, name in states:
            counts[name] += 1
            if name is not None:
                yield Baseline(ident, name, instant)
