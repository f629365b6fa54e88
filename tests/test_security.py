"""Security: the API key stays secret, sources stay read-only, rules cannot run code.

Read-only sources are proven in ``tests/test_sources_reader.py``
(``test_a_source_session_refuses_writes``: INSERT and DELETE refused on both
backends; ``test_a_writing_query_in_sources_is_refused``: a writing query in
sources.yaml refused by the database), not repeated here.
"""

from __future__ import annotations

import inspect
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import sync
from sync.cli import main
from sync.demo import load_demo
from sync.emulator import DEFAULT_LIST_ID
from sync.emulator.faults import FaultKind
from sync.emulator.server import Emulator
from sync.exceptions import RulesError
from sync.rules.schema import parse_rules

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-03-01T09:00:00Z"
SECRET = "5ec12e7c0ffee5ec12e7c0ffee5ec12e-us21"
WRONG = "badbadbadbadbadbadbadbadbadbad00-us21"


@pytest.fixture
def secret_emulator():
    with Emulator(api_key=SECRET) as emulator:
        yield emulator


@pytest.fixture
def configured(tmp_path, secret_emulator, monkeypatch):
    app = f"sqlite:///{tmp_path}/app.sqlite"
    load_demo(app, "blousebrothers", users=40, seed=5, now=datetime(2026, 3, 1, tzinfo=UTC))
    config = tmp_path / "mailsync.yaml"
    config.write_text(
        f"rules: {ROOT / 'rules.yaml'}\nsources: {ROOT / 'sources.yaml'}\n"
        f"database: {app}\nstate: sqlite:///{tmp_path}/state.sqlite\n"
        f"mailchimp: {{list_id: {DEFAULT_LIST_ID}, base_url: '{secret_emulator.url}'}}\n"
    )
    monkeypatch.setenv("MAILCHIMP_API_KEY", SECRET)
    return config


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def state_dump(tmp_path: Path) -> str:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/state.sqlite")
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        text = "\n".join(
            # tuple(): a Row's own repr shortens long values, which would hide
            # the middle of a cycle record from this search.
            repr(tuple(row))
            for t in tables
            for row in conn.execute(sa.text(f'SELECT * FROM "{t}"'))
        )
    engine.dispose()
    return text


def assert_secret_absent(text: str) -> None:
    for key in (SECRET, WRONG):
        assert key not in text
        assert key.split("-")[0] not in text  # not even without the datacenter


def test_api_key_never_leaves_through_logs_output_errors_or_the_state_store(
    configured, tmp_path, secret_emulator, capsys, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    # Transient faults on a share of the calls, then a fatal 403 with a body.
    # The faults follow the order of the calls: with seed 7, once the sink read
    # the audience's merge fields first, the batch subscribe met five faults in
    # a row and every member was held back, so no later call was made at all.
    secret_emulator.faults.set_random(
        0.3, seed=1, kinds=[FaultKind.SERVER_ERROR, FaultKind.UNAVAILABLE_HTML, "429"]
    )
    outputs = [run(capsys, "once", "--config", str(configured), "--at", NOW)[1]]
    secret_emulator.faults.clear()
    secret_emulator.faults.script(".*", FaultKind.FORBIDDEN_JSON, times=1)
    outputs.append(run(capsys, "once", "--config", str(configured), "--at", NOW, "--full")[1])
    outputs.append(run(capsys, "status", "--config", str(configured), "--at", NOW)[1])
    outputs.append(run(capsys, "explain", "1", "--config", str(configured), "--at", NOW)[1])
    outputs.append(run(capsys, "once", "--config", str(configured), "--dry-run", "--at", NOW)[1])
    # A wrong key: Mailchimp answers 401; neither key may show in the error.
    assert SECRET not in configured.read_text()  # only ever in the environment
    monkeypatch.setenv("MAILCHIMP_API_KEY", WRONG)
    code, out = run(capsys, "once", "--config", str(configured), "--at", NOW, "--full")
    outputs.append(out)
    assert code != 0
    assert "401" in out or "API key" in out or "api key" in out.lower(), out
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "the run logged nothing: the capture is not working"
    assert_secret_absent(logged)
    assert_secret_absent("\n".join(outputs))
    assert_secret_absent(state_dump(tmp_path))
    assert "members_pushed" in state_dump(tmp_path)  # the cycle records were searched


# -- rules cannot run code or SQL ---------------------------------------------------------------

RULES = """\
entities:
  user:
    facts: {has_wallet: bool}
    actions: {signup: {enters: registered}}
    statuses: {registered: {}, wallet_ok: {}}
    reinit:
      - registered: CONDITION
      - wallet_ok: otherwise
"""


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("__import__('os').system('touch /tmp/pwned')", "unexpected character '.'"),
        ("__import__", "unknown fact '__import__'"),
        ("os.system('id')", "unexpected character '.'"),
        ("exec('1')", "function calls are not supported"),
        ("eval", "unknown fact 'eval'"),
        ("has_wallet; DROP TABLE users", "unexpected character ';'"),
        ("has_wallet OR 1=1", "unexpected"),
        ("has_wallet == true -- comment", "unknown fact 'comment'"),
        ("(SELECT 1)", "expected ')', found '1'"),
        ("has_wallet.__class__.__bases__", "unexpected character '.'"),
        ("lambda: 1", "put the whole value in quotes"),
        ("[x for x in ()]", "expected a condition or 'otherwise', found a list"),
    ],
)
def test_code_and_sql_in_conditions_are_refused(tmp_path, condition, reason):
    marker = tmp_path / "pwned"
    text = RULES.replace("CONDITION", condition.replace("/tmp/pwned", str(marker)))
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    assert any(reason in p.message for p in info.value.problems), info.value
    assert not marker.exists()


def test_the_package_never_calls_eval_or_exec():
    # Conditions go through sync.rules.expression_parser; nothing may hand text
    # to Python. Comments and docstrings may mention eval; calls may not.
    package = Path(inspect.getfile(sync)).parent
    # A method *named* compile (sqlcompile's) is defined with `def` and called
    # as `.compile(`; only the bare builtins are calls to forbid.
    call = re.compile(r"(?<![\w.])(?<!def )(eval|exec|compile|__import__)\s*\(")
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if call.search(code) and not code.strip().startswith(('"', "'", "``")):
                offenders.append(f"{path.relative_to(package.parent)}:{number}: {line.strip()}")
    assert offenders == []


# -- local servers bind to the loopback interface by default ------------------------------------


def test_the_emulator_binds_to_loopback_by_default():
    with Emulator() as emulator:
        assert emulator.host == "127.0.0.1"
        assert emulator._server is not None
        assert emulator._server.server_address[0] == "127.0.0.1"
    assert inspect.signature(Emulator).parameters["host"].default == "127.0.0.1"


def test_the_emulator_command_binds_to_loopback_by_default():
    from sync.cli.emulator import emulator as command

    (host,) = [p for p in command.params if p.name == "host"]
    assert host.default == "127.0.0.1"


def test_the_metrics_server_binds_to_loopback_by_default():
    from sync.daemon import metrics

    assert inspect.signature(metrics.MetricsServer).parameters["host"].default == "127.0.0.1"
