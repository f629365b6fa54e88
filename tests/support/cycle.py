"""Whole cycles against the emulator: the shipped examples, a runtime built on
them, and what the engine says the audience should hold.

The expected values come from the pure engine, evaluated independently on
records read back from the sources, so a test comparing them with the
emulator's audience checks the plumbing, not the rules again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sync.addresses import normalise_email
from sync.daemon.config import Config, DaemonConfig, MailchimpConfig
from sync.daemon.runtime import Runtime, build_runtime
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.evaluate.engine import evaluate
from sync.evaluate.members import merge_values
from sync.mailchimp.audience import fix_merge_fields, wanted_merge_fields
from sync.mailchimp.caller import Caller
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig
from sync.sources.reader import SourceReader
from tests.support.clock import Clock
from tests.support.sink import BRISK_POLLING

ROOT = Path(__file__).resolve().parents[2]
#: The instant the demo data is generated for, and the first cycle's.
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
#: The shipped examples by name: (rules, sources).
FILES = {
    "blousebrothers": (ROOT / "rules.yaml", ROOT / "sources.yaml"),
    "littleworld": (
        ROOT / "examples/littleworld/rules.yaml",
        ROOT / "examples/littleworld/sources.yaml",
    ),
    "rallia": (ROOT / "examples/rallia/rules.yaml", ROOT / "examples/rallia/sources.yaml"),
}


def make_runtime(
    example: str | tuple[Path, Path],
    db_url: str,
    tmp_path: Path,
    emulator: Emulator,
    clock: Clock,
    state: str | None = None,
    **sink_options: Any,
) -> tuple[Runtime, Caller]:
    """A runtime against the emulator; ``example`` names one of FILES or is a
    (rules, sources) pair of paths; ``state`` the state store's URL."""
    rules, sources = FILES[example] if isinstance(example, str) else example
    # By default the state store shares PostgreSQL with the application
    # (another schema would do too); on SQLite it is its own file, as in
    # production.
    if state is None:
        state = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path}/state.sqlite"
    config = Config(
        rules=rules,
        sources=sources,
        database=db_url,
        state=state,
        mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=emulator.url),
        daemon=DaemonConfig(full_rescan=timedelta(days=30)),
    )
    client = make_client(MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url))
    caller = Caller(client, DEFAULT_LIST_ID)
    sink_options.setdefault("polling", BRISK_POLLING)
    runtime = build_runtime(
        config,
        clock=clock,
        sink_factory=lambda store: MailchimpSink(
            caller, store, SinkConfig(**sink_options), clock=clock
        ),
    )
    wanted = wanted_merge_fields(runtime.ruleset.entities.values())
    fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
    return runtime, caller


def expected_members(
    runtime: Runtime, entity_type: str, now: datetime
) -> dict[str, dict[str, Any]]:
    """email → merge fields, computed by the engine on records read back."""
    entity = runtime.ruleset.entity(entity_type)
    expected = {}
    assert runtime.config.database is not None
    with SourceReader(runtime.sources, runtime.config.database) as reader:
        for record in reader.read_entities(entity_type, now=now):
            assert record.email is not None
            result = evaluate(entity, record.facts, record.actions, now)
            expected[normalise_email(record.email)] = merge_values(entity, result.merge_fields)
    return expected


def audience_fields(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """email → merge fields, as the emulator's audience holds them."""
    return {m.email_address.lower(): dict(m.merge_fields) for m in emulator.audience.members()}
