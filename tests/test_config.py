"""Operator settings: file, environment overrides, located errors."""

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sync.daemon.config import load_config
from sync.daemon.runtime import make_sink
from sync.exceptions import RulesError
from sync.mailchimp.sink import MailchimpSink
from sync.state.store import StateStore
from tests.support.cycle import NOW

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_example_settings_load():
    config = load_config(ROOT / "deploy/mailsync.yaml", env={})
    assert config.mailchimp.list_id == "a1b2c3d4e5"
    assert config.state_schema == "mailsync"
    assert config.daemon.interval == timedelta(minutes=1)
    assert config.metrics == "127.0.0.1:9464"


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "mailsync.yaml"
    path.write_text("database: sqlite:///file.db\ndaemon: {interval: 5min}\n")
    config = load_config(
        path,
        env={
            "MAILSYNC_DATABASE_URL": "postgresql+psycopg://h/app",
            "MAILSYNC_INTERVAL": "30s",
            "MAILCHIMP_LIST_ID": "abc",
        },
    )
    assert config.database == "postgresql+psycopg://h/app"
    assert config.daemon.interval == timedelta(seconds=30)
    assert config.mailchimp.list_id == "abc"
    assert config.rules == tmp_path / "rules.yaml"  # relative to the settings file


def test_retry_and_batch_poll_waits_reach_the_daemons_sink(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILCHIMP_API_KEY", "k-us1")
    path = tmp_path / "mailsync.yaml"
    path.write_text("mailchimp: {list_id: abc}\n")
    defaults = load_config(path, env={}).mailchimp
    # The defaults of RetryPolicy and BatchPolling.
    assert (defaults.retry_wait, defaults.batch_poll_wait, defaults.batch_wait) == (1.0, 1.0, 60)
    path.write_text(
        "mailchimp: {list_id: abc, retry_wait: 0.01, batch_poll_wait: 0.05, batch_wait: 0}\n"
    )
    config = load_config(path, env={})
    mailchimp = config.mailchimp
    assert (mailchimp.retry_wait, mailchimp.batch_poll_wait, mailchimp.batch_wait) == (
        0.01,
        0.05,
        0,
    )
    state = StateStore(f"sqlite:///{tmp_path}/state.sqlite")
    try:
        sink, dry_run = make_sink(config, state, dry_run=False, out=sys.stdout, clock=lambda: NOW)
    finally:
        state.close()
    assert not dry_run
    assert isinstance(sink, MailchimpSink)
    assert sink.caller.retry.initial_wait == 0.01
    assert (sink.config.polling.first_wait, sink.config.polling.deadline) == (0.05, 0)


def test_no_file_is_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.database is None
    assert config.state.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("daemon: {interval: soon}\n", "mailsync.yaml:1: daemon ==> interval: expected a duration"),
        ("databse: x\n", "unknown key 'databse' (did you mean 'database'?)"),
        ("log_format: xml\n", "expected text or json"),
        ("mailchimp: {api_key: k-us1}\n", "the API key never goes in a file"),
        ("daemon: {batch_size: 0}\n", "expected a positive number"),
        ("mailchimp: {retry_wait: soon}\n", "expected a number of seconds above zero"),
        ("mailchimp: {batch_poll_wait: 0}\n", "expected a number of seconds above zero"),
        ("mailchimp: {batch_wait: -1}\n", "batch_wait: expected a number of seconds zero or more"),
    ],
)
def test_errors_are_located(tmp_path, text, message):
    path = tmp_path / "mailsync.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_config(path, env={})
    assert any(message in str(p) for p in info.value.problems), info.value.problems
