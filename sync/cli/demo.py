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
from sync.daemon.cycle_summary import CycleSummary
from sync.dashboard import Background, from_config
from sync.demo import load_demo
from sync.demo.session import DemoSession
from sync.demo.workspace import Workspace, default_folder
from sync.emulator import Emulator
from sync.evaluate.explain import render_text

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


def _print_next_steps(
    space: Workspace, now: datetime, email: str | None, *, again_with_dir: bool
) -> None:
    """The commands to try next, each naming the workspace by absolute path."""
    settings_file = shlex.quote(str(space.settings))
    at = now.isoformat()
    click.secho("Where to look next (each works from any directory):", bold=True)
    if email:
        click.echo(f"  mailsync explain {email} --config {settings_file} --at {at}")
    click.echo(f"  mailsync status --config {settings_file} --at {at}")
    click.echo(f"  mailsync check --config {settings_file}   # rules, sources and database agree")
    click.echo(f"  mailsync graph {shlex.quote(str(space.rules))}   # the lifecycle as a diagram")
    click.echo(
        f"  mailsync test {shlex.quote(str(space.rules_test))}   # what the rules promise, pinned"
    )
    again = "mailsync demo" + (f" --dir {shlex.quote(str(space.folder))}" if again_with_dir else "")
    click.echo(f"Edit {space.rules}, then run `{again}` again to see what your change does.")


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
    click.secho(f"0. Workspace: {space.folder}", bold=True)
    if copied:
        click.echo(f"   copied from the package: {', '.join(copied)}")
    if kept:
        click.echo(f"   kept as you left them: {', '.join(kept)} (delete one to get it back)")

    click.secho(
        f"1. Demo database: {users} BlouseBrothers users in {space.folder / 'app.sqlite'}",
        bold=True,
    )
    counts = load_demo(
        space.database, "blousebrothers", users=users, seed=seed, now=now, replace=True
    )
    click.echo("   " + ", ".join(f"{n} {table}" for table, n in counts.items()))

    with Emulator() as emulator:
        click.secho(f"2. Mailchimp emulator listening on {emulator.url}", bold=True)
        session = DemoSession(space, emulator, now)
        try:
            created = session.create_merge_fields()
            click.echo(
                f"   merge fields created (as `mailsync check --fix` does): {', '.join(created)}"
            )

            if serve:  # the dashboard, on the demo's state store and simulated clock
                live = Background(
                    from_config(session.config, lambda: session.runtime.ruleset, session.clock),
                    port=port,
                )
                click.secho(f"   Dashboard: {live.url} (one simulated day every "
                            f"{SERVE_PACE:.0f} s)", bold=True)  # fmt: skip

            def cycle(title: str) -> CycleSummary:
                summary, calls = session.cycle()
                _print_cycle(title, summary, calls)
                return summary

            summary = cycle(f"3. First cycle at {now:%Y-%m-%d %H:%M} UTC: every user gets a status")
            for day in range(1, days + 1):
                if live is not None:
                    time.sleep(SERVE_PACE)  # time to watch the pages move
                session.advance(now + timedelta(days=day))
                summary = cycle(
                    f"4.{day} One day later ({session.now:%Y-%m-%d}): only what moved is pushed"
                )

            explanation = session.explain_example(summary)
            if explanation is not None:
                record = explanation.record
                click.secho("5. One of them, as `mailsync explain` tells it:", bold=True)
                for line in render_text(explanation):
                    click.echo("   " + line)
                if record.email:
                    member = emulator.audience.member(record.email)
                    if member is not None:
                        click.echo(f"   in the emulated audience: {dict(member.merge_fields)}")
        finally:
            session.close()

    email = explanation.record.email if explanation is not None else None
    _print_next_steps(space, session.now, email, again_with_dir=bool(directory))
    if live is not None:
        click.secho(f"The dashboard stays up at {live.url}; Ctrl-C stops it.", bold=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            live.stop()
