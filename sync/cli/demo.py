"""``mailsync demo``: the whole product on a laptop, with no configuration.

It creates a BlouseBrothers demo database (SQLite), starts the Mailchimp
emulator in this process, creates the merge fields, runs a full cycle, then
moves a simulated clock forward a day at a time and runs again, printing what
moved, so a newcomer sees ladders and transitions happen.

Everything lives in one workspace (``sync.demo.workspace``), whatever the
current directory: the rules, sources and rules tests copied from the package,
the data, and a ``mailsync.yaml``. The "where to look next" commands it prints
name the workspace by absolute path, so each works when pasted anywhere.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from sync.cli._common import handle_errors, parse_at
from sync.daemon.config import Config, MailchimpConfig
from sync.daemon.cycle import CycleSummary
from sync.daemon.runtime import build_runtime, run_once
from sync.dashboard import Background, from_config
from sync.demo import load_demo
from sync.demo.workspace import Workspace, default_folder
from sync.emulator import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.evaluate.explain import explain_entity, render_text
from sync.mailchimp.audience import existing_merge_fields, fix_merge_fields, wanted_merge_fields
from sync.mailchimp.caller import Caller
from sync.mailchimp.client import MailchimpSettings, make_client
from sync.mailchimp.sink import MailchimpSink
from sync.mailchimp.sink_config import SinkConfig

#: Real seconds per simulated day with --serve.
SERVE_PACE = 3.0


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
    if summary.evaluated_by:
        how = ", ".join(f"{t} in {'SQL' if e == 'sql' else 'the Python engine'}"
                        for t, e in sorted(summary.evaluated_by.items()))  # fmt: skip
        kind = "full pass" if summary.full else "tick"
        click.echo(f"  ({kind}: {how}; {summary.evaluations_written} evaluations stored)")


@click.command()
@click.option(
    "--dir",
    "directory",
    default=None,
    type=click.Path(file_okay=False),
    help="The demo's workspace: rules, sources, rules tests, data and settings "
    "[default: $XDG_DATA_HOME/mailsync/demo, i.e. ~/.local/share/mailsync/demo].",
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
    directory: str | None,
    users: int,
    days: int,
    seed: int,
    start: str | None,
    serve: bool,
    port: int,
) -> None:
    """Run mailsync end to end on demo data, against a local Mailchimp emulator.

    Creates a BlouseBrothers demo database (SQLite), runs one cycle, then
    advances a simulated clock a day at a time, printing which statuses moved
    and what was pushed. Nothing leaves this machine; everything it writes is in
    one workspace folder, the same from whatever directory it is run.
    """
    live: Background | None = None
    now = parse_at(start) or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    space = Workspace(Path(directory).expanduser().resolve() if directory else default_folder())
    copied, kept = space.prepare()
    rules, sources, database, state_url = space.rules, space.sources, space.database, space.state
    click.secho(f"0. Workspace: {space.folder}", bold=True)
    if copied:
        click.echo(f"   copied from the package: {', '.join(copied)}")
    if kept:
        click.echo(f"   kept as you left them: {', '.join(kept)} (delete one to get it back)")

    click.secho(
        f"1. Demo database: {users} BlouseBrothers users in {space.folder / 'app.sqlite'}",
        bold=True,
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
        # The demo goes live with the week's events (`--backfill-events 7d`),
        # so that the first cycle shows them; a real first cycle sends none.
        runtime.backfill_events = config.daemon.events_max_age
        try:
            wanted = wanted_merge_fields(runtime.ruleset.entities.values())
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

    settings_file = shlex.quote(str(space.settings))
    at = clock["now"].isoformat()
    click.secho("Where to look next (each works from any directory):", bold=True)
    if example is not None and record.email:
        click.echo(f"  mailsync explain {record.email} --config {settings_file} --at {at}")
    click.echo(f"  mailsync status --config {settings_file} --at {at}")
    click.echo(f"  mailsync check --config {settings_file}   # rules, sources and database agree")
    click.echo(f"  mailsync graph {shlex.quote(str(rules))}   # the lifecycle as a diagram")
    click.echo(
        f"  mailsync test {shlex.quote(str(space.rules_test))}   # what the rules promise, pinned"
    )
    again = "mailsync demo" + (f" --dir {shlex.quote(str(space.folder))}" if directory else "")
    click.echo(f"Edit {rules}, then run `{again}` again to see what your change does.")
    if live is not None:
        click.secho(f"The dashboard stays up at {live.url}; Ctrl-C stops it.", bold=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            live.stop()
