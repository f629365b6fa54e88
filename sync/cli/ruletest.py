"""``mailsync test FILE...``: run rules-test files."""

from __future__ import annotations

import click

from sync.cli._common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, handle_errors, report
from sync.evaluate.ruletest import Outcome, read_test_file, run_test_file
from sync.exceptions import RulesError


@click.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@handle_errors
def test(files: tuple[str, ...]) -> None:
    """Run rules-test FILES: scenarios that pin what the rules must do.

    Prints one line per failing expectation, then "N passed, M failed".
    Exits 0 when all pass, 1 when any fails, 2 when a file is invalid.
    """
    outcome = Outcome()
    invalid = False
    for name in files:
        try:
            test_file = read_test_file(name)
        except RulesError as exc:
            report(exc)
            invalid = True
            continue
        run_test_file(test_file, outcome)
    for failure in outcome.failures:
        click.echo(str(failure))
    click.echo(f"{outcome.passed} passed, {len(outcome.failures)} failed")
    if invalid:
        raise click.exceptions.Exit(EXIT_INVALID)
    raise click.exceptions.Exit(EXIT_FAILED if outcome.failures else EXIT_OK)
