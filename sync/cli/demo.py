"""``mailsync demo``: the whole product on a laptop, with no configuration.

It creates a BlouseBrothers demo database (SQLite), starts the Mailchimp
emulator in this process, creates the merge fields, runs a full cycle, then
moves a simulated clock forward a day at a time and runs again, printing what
moved, so a newcomer sees ladders and transitions happen. It leaves a
``mailsync.yaml`` behind so that ``explain`` and ``status`` work on the result.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import click

from sync.cli._common import handle_errors, parse_at
from sync.config import Config, MailchimpConfig
from sync.cycle import CycleSummary
from sync.daemon import build_runtime, run_once
from sync.dashboard import Background, from_config
from sync.demo import load_demo
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.explain import explain_entity, render_text
from sync.mailchimp import (
    Caller,
    MailchimpSettings,
    existing_merge_fields,
    fix_merge_fields,
    make_client,
)
from sync.sink import MailchimpSink, SinkConfig

#: Real seconds per simulated day with --serve.
SERVE_PACE = 3.0


def _rule_files() -> tuple[Path, Path]:
    """``./rules.yaml`` and ``./sources.yaml`` when run in a checkout, else the
    copies shipped in the package."""
    here = Path("rules.yaml"), Path("sources.yaml")
    if all(p.exists() for p in here):
        return here[0].resolve(), here[1].resolve()
    files = resources.files("sync.demo") / "files"
    return Path(str(files / "rules.yaml")), Path(str(files / "sources.yaml"))


def _moves(summary: CycleSummary) -> Counter[tuple[str | None, str | None]]:
    return Counter((before, after) for _, _, before, after in summary.changed)


def _print_cycle(title: str, summary: CycleSummary, calls: Counter[str]) -> None:
    click.secho(title, bold=True)
    moves = _moves(summary)
    if not moves:
        click.echo("  nothing moved")
    for (before, after), count in moves.most_common(12):
        click.echo(f"  {count:>5}  {before or '(new)':<24} -> {after or '(none)'}")
    if len(moves) > 12:
        rest = sum(n for _, n in moves.most_common()[12:])
        click.echo(f"  {rest:>5}  … in {len(moves) - 12} other moves")
    push = summary.push
    api = ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"
    click.echo(
        f"  Mailchimp: {push.pushed} members pushed, {push.unchanged} unchanged, "
        f"{push.failed} failed, {push.events_sent} events sent; API calls: {api}"
    )


@click.command()
@click.option(
    "--dir",
    "directory",
    default="mailsync-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to put the demo database, state store and settings.",
)
@click.option("--users", default=2000, show_default=True, help="Demo users to generate.")
@click.option(
    "--days", default=3, show_default=True, help="Simulated days to run after the first cycle."
)
@click.option("--seed", default=1, show_default=True, help="Seed of the synthetic data.")
@click.option("--start", default=None, metavar="INSTANT", help="Simulated start (default: now).")
@click.option(
    "--serve",
    is_flag=True,
    help="Keep the dashboard up on the demo's data while the days advance, then until Ctrl-C.",
)
@click.option("--port", default=8465, show_default=True, help="The dashboard's port (--serve).")
@handle_errors
def demo(
    directory: str, users: int, days: int, seed: int, start: str | None, serve: bool, port: int
) -> None:
    """Run mailsync end to end on demo data, against a local Mailchimp emulator.

    Creates a BlouseBrothers demo database (SQLite), runs one cycle, then
    advances a simulated clock a day at a time, printing which statuses moved
    and what was pushed. Nothing leaves this machine.
    """
    live: Background | None = None
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    now = parse_at(start) or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rules, sources = _rule_files()
    database = f"sqlite:///{folder / 'app.sqlite'}"
    state_url = f"sqlite:///{folder / 'state.sqlite'}"
    state_file = folder / "state.sqlite"
    if state_file.exists():
        state_file.unlink()  # a fresh story each time

    click.secho(
        f"1. Demo database: {users} BlouseBrothers users in {folder / 'app.sqlite'}", bold=True
    )
    counts = load_demo(database, "blousebrothers", users=users, seed=seed, now=now, replace=True)
    click.echo("   " + ", ".join(f"{n} {table}" for table, n in counts.items()))

    with Emulator() as emulator:
        click.secho(f"2. Mailchimp emulator listening on {emulator.url}", bold=True)
        config = Config(
            rules=rules,
            sources=sources,
            database=database,
            state=state_url,
            mailchimp=MailchimpConfig(list_id=DEFAULT_LIST_ID, base_url=emulator.url),
        )
        settings = MailchimpSettings(DEFAULT_API_KEY, DEFAULT_LIST_ID, host=emulator.url)
        client = make_client(settings)
        caller = Caller(client, DEFAULT_LIST_ID)
        clock = {"now": now}
        runtime = build_runtime(
            config,
            clock=lambda: clock["now"],
            sink_factory=lambda state: MailchimpSink(
                caller, state, SinkConfig(), clock=lambda: clock["now"]
            ),
        )
        try:
            wanted = {
                f.tag: f.type for e in runtime.ruleset.entities.values() for f in e.merge_fields
            }
            before = set(existing_merge_fields(client, DEFAULT_LIST_ID))
            fix_merge_fields(client, DEFAULT_LIST_ID, wanted)
            created = sorted(set(existing_merge_fields(client, DEFAULT_LIST_ID)) - before)
            click.echo(
                f"   merge fields created (as `mailsync check --fix` does): {', '.join(created)}"
            )

            seen_calls: Counter[str] = Counter()
            if serve:  # the dashboard, on the demo's state store and simulated clock
                live = Background(
                    from_config(config, lambda: runtime.ruleset, lambda: clock["now"]), port=port
                )
                click.secho(f"   Dashboard: {live.url} (one simulated day every "
                            f"{SERVE_PACE:.0f} s)", bold=True)  # fmt: skip

            def cycle(title: str) -> CycleSummary:
                before = Counter(caller.calls)
                summary = run_once(runtime, now=clock["now"])
                seen_calls.update(caller.calls)
                _print_cycle(title, summary, Counter(caller.calls) - before)
                return summary

            summary = cycle(f"3. First cycle at {now:%Y-%m-%d %H:%M} UTC: every user gets a status")
            for day in range(1, days + 1):
                if live is not None:
                    time.sleep(SERVE_PACE)  # time to watch the pages move
                clock["now"] = now + timedelta(days=day)
                summary = cycle(
                    f"4.{day} One day later ({clock['now']:%Y-%m-%d}): only what moved is pushed"
                )

            example = next(
                (c for c in summary.changed if c[3] and "_" in (c[3] or "")),
                summary.changed[0] if summary.changed else None,
            )
            if example is not None:
                entity = runtime.ruleset.entity(example[0])
                (record,) = runtime.reader.read_entities(
                    example[0], now=clock["now"], ids=[example[1]]
                )
                click.secho("5. One of them, as `mailsync explain` tells it:", bold=True)
                explanation = explain_entity(
                    entity,
                    record,
                    clock["now"],
                    runtime.state,
                    limit=8,
                    events_since=clock["now"] - config.daemon.events_max_age,
                )
                for line in render_text(explanation):
                    click.echo("   " + line)
                if record.email:
                    member = emulator.audience.member(record.email)
                    if member is not None:
                        click.echo(f"   in the emulated audience: {dict(member.merge_fields)}")
        finally:
            runtime.close()

    settings_file = folder / "mailsync.yaml"
    settings_file.write_text(
        "# Written by `mailsync demo`. No audience is set, so `mailsync once` here is a dry run.\n"
        f"rules: {rules}\nsources: {sources}\ndatabase: {database}\nstate: {state_url}\n"
    )
    rel = os.path.relpath(settings_file)
    click.secho("Where to look next:", bold=True)
    if example is not None and record.email:
        at = clock["now"].isoformat()
        click.echo(f"  mailsync explain {record.email} --config {rel} --at {at}")
    click.echo(f"  mailsync status --config {rel} --at {clock['now'].isoformat()}")
    click.echo(f"  mailsync graph {os.path.relpath(rules)}      # the lifecycle as a diagram")
    click.echo("  mailsync test rules.test.yaml   # what the rules promise, pinned")
    click.echo("  docs/rules.md, docs/architecture.md")
    if live is not None:
        click.secho(f"The dashboard stays up at {live.url}; Ctrl-C stops it.", bold=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            live.stop()
