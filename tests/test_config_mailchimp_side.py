"""Settings of the webhook receiver and the reconciliation poll."""

from datetime import timedelta

import pytest

from sync.daemon.config import load_config
from sync.exceptions import RulesError


def test_webhook_secret_and_poll_interval_from_file_then_environment(tmp_path):
    path = tmp_path / "mailsync.yaml"
    path.write_text("mailchimp:\n  webhook_secret: from-the-file-0123\n  poll_interval: 5min\n")
    config = load_config(path, env={})
    assert config.mailchimp.webhook_secret == "from-the-file-0123"
    assert config.mailchimp.poll_interval == timedelta(minutes=5)
    config = load_config(
        path,
        env={"MAILSYNC_WEBHOOK_SECRET": "from-the-environment", "MAILSYNC_POLL_INTERVAL": "1h"},
    )
    assert config.mailchimp.webhook_secret == "from-the-environment"
    assert config.mailchimp.poll_interval == timedelta(hours=1)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    defaults = load_config(empty, env={}).mailchimp
    assert (defaults.webhook_secret, defaults.poll_interval) == (None, timedelta(minutes=15))


def test_a_bad_poll_interval_is_located(tmp_path):
    path = tmp_path / "mailsync.yaml"
    path.write_text("mailchimp:\n  list_id: abc\n  poll_interval: often\n")
    with pytest.raises(RulesError) as exc:
        load_config(path, env={})
    (problem,) = exc.value.problems
    assert problem.line == 3
    assert "mailchimp" in str(problem)
    assert "poll_interval" in str(problem)
