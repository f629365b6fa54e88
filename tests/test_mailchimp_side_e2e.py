"""Changes made in Mailchimp flow back, end to end: the emulator sends its
webhooks to the daemon's HTTP server, the receiver records them, the next
cycles respect them, and ``status``, ``explain`` and ``unsubscribes`` show
them; the reconciliation poll catches a change whose webhook was missed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.cli import main
from sync.daemon.metrics import Metrics, MetricsServer
from sync.daemon.once import run_once
from sync.daemon.runtime import Runtime
from sync.demo import load_demo
from sync.emulator import DEFAULT_LIST_ID, Emulator
from sync.mailchimp.reconciliation import ReconciliationPoll
from sync.mailchimp.webhooks import PREFIX, WebhookReceiver
from tests.support.clock import Clock
from tests.support.cycle import NOW, expected_members, make_runtime

SECRET = "s3cret-0123456789abcdef"
LATER = NOW + timedelta(days=40)


@pytest.fixture
def world(
    db_url: str, tmp_path: Path, mailchimp_emulator: Emulator
) -> Iterator[tuple[Runtime, Any, Emulator, str, Clock]]:
    """A pushed audience, and the daemon's HTTP server registered as its webhook."""
    load_demo(db_url, "blousebrothers", users=30, seed=5, now=NOW)
    clock = Clock(NOW)
    runtime, caller = make_runtime("blousebrothers", db_url, tmp_path, mailchimp_emulator, clock)
    receiver = WebhookReceiver(runtime.state, SECRET, DEFAULT_LIST_ID)
    server = MetricsServer(Metrics(60), "127.0.0.1", 0, webhooks=receiver).start()
    base = f"http://127.0.0.1:{server.address[1]}"
    try:
        # Saving the webhook makes Mailchimp GET the URL first.
        caller.client.lists.create_list_webhook(DEFAULT_LIST_ID, {"url": f"{base}{PREFIX}{SECRET}"})
        run_once(runtime)
        yield runtime, caller, mailchimp_emulator, base, clock
    finally:
        server.stop()
        runtime.close()


def in_mailchimp(emulator: Emulator, email: str, action: str, **body: Any) -> dict[str, Any]:
    """A change made in Mailchimp (the person, the marketer, a bounce)."""
    url = f"{emulator.root_url}/_emulator/lists/{emulator.list_id}/members/{email}/{action}"
    answer = requests.post(url, json=body, timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    assert [d["status"] for d in result["deliveries"]] == [200], result
    return result


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_changes_made_in_mailchimp_are_respected_and_shown(
    world: tuple[Runtime, Any, Emulator, str, Clock],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _caller, emulator, base, clock = world
    now_values = expected_members(runtime, "user", NOW)
    later_values = expected_members(runtime, "user", LATER)
    # Members whose merge fields change by LATER: the sink will want to push them.
    moving = sorted(e for e in now_values if now_values[e] != later_values[e])
    assert len(moving) >= 5, "the demo data should move some members in 40 days"
    unsub1, unsub2, archived, cleaned, moved = moving[:5]
    new_address = "moved." + moved

    first = in_mailchimp(emulator, unsub1, "unsubscribe")
    in_mailchimp(emulator, unsub2, "unsubscribe", reason="abuse")
    in_mailchimp(emulator, archived, "archive")
    in_mailchimp(emulator, cleaned, "clean")
    in_mailchimp(emulator, moved, "change-address", new_email=new_address)
    # Mailchimp delivers the first one again (say our answer was lost): the
    # very same fields, recorded once.
    delivery = first["deliveries"][0]
    again = requests.post(delivery["url"], data=delivery["fields"], timeout=10)
    assert again.status_code == 200

    # Mid-run, a marketer also deletes a merge field the rules push (issue
    # 12: "a marketer deletes a merge field, archives a contact, and
    # unsubscribes two members in Mailchimp mid-run").
    deleted = emulator.audience.merge_field("MMERGE25")
    assert deleted is not None
    emulator.audience.delete_merge_field(str(deleted.merge_id))

    clock.now = LATER
    summary = run_once(runtime, full=True)
    assert summary.push.archived == 1
    assert summary.push.failed == 0
    assert "MMERGE25" in summary.push.missing_merge_tags
    # The values of the other fields went through all the same.
    for email in moving[5:]:
        values = emulator.audience.member(email).merge_fields  # type: ignore[union-attr]
        expected = {k: v for k, v in later_values[email].items() if k != "MMERGE25"}
        assert {k: values[k] for k in expected} == expected
    audience = emulator.audience
    status = {e: audience.member(e).status for e in (unsub1, unsub2, archived, cleaned)}  # type: ignore[union-attr]
    assert status == {
        unsub1: "unsubscribed",
        unsub2: "unsubscribed",
        archived: "archived",
        cleaned: "cleaned",
    }
    # Not brought back, and not updated either.
    # (The deleted field took every member's values with it.)
    before = {k: v for k, v in now_values[archived].items() if k != "MMERGE25"}
    assert audience.member(archived).merge_fields == {  # type: ignore[union-attr]
        **audience.member(archived).merge_fields,  # type: ignore[union-attr]
        **before,
    }
    # The address change: pushed to the new address, no duplicate at the old one.
    assert audience.member(moved) is None

    def kept(email: str) -> dict[str, Any]:
        """The values the rules give at LATER, but for the deleted field."""
        return {k: v for k, v in later_values[email].items() if k != "MMERGE25"}

    fields = audience.member(new_address).merge_fields  # type: ignore[union-attr]
    assert {k: fields[k] for k in kept(moved)} == kept(moved)
    # The opted-out members' data still flows (merge fields are not consent).
    fields = audience.member(unsub1).merge_fields  # type: ignore[union-attr]
    assert {k: fields[k] for k in kept(unsub1)} == kept(unsub1)

    config = tmp_path / "cli.yaml"
    config.write_text(
        f"rules: {runtime.config.rules}\nsources: {runtime.config.sources}\n"
        f"database: {runtime.config.database}\nstate: {runtime.config.state}\n"
    )
    code, out = cli(capsys, "status", "--config", str(config), "--json")
    assert code == 0
    side = json.loads(out)["mailchimp_side"]
    assert side["statuses"] == {"archived": 1, "cleaned": 1, "unsubscribed": 2}
    assert side["addresses_moved"] == 1
    assert [p["merge_tag"] for p in json.loads(out)["audience_problems"]] == ["MMERGE25"]
    code, out = cli(capsys, "status", "--config", str(config))
    assert "changed in Mailchimp: 1 archived, 1 cleaned, 2 unsubscribed; 1 addresses moved" in out
    assert "AUDIENCE PROBLEMS: 1 merge tag(s) missing from the audience" in out

    code, out = cli(capsys, "unsubscribes", "--config", str(config), "--json")
    assert code == 0
    rows = json.loads(out)
    assert {r["email"]: r["status"] for r in rows} == {
        unsub1: "unsubscribed",
        unsub2: "unsubscribed",
        cleaned: "cleaned",
    }
    assert {r["email"]: r["reason"] for r in rows}[unsub2] == "abuse"
    assert all(r["entities"] and r["entities"][0]["type"] == "user" for r in rows)
    code, out = cli(capsys, "unsubscribes", "--config", str(config), "--since", "2999-01-01T00:00Z")
    assert "nobody unsubscribed or was cleaned since" in out

    code, out = cli(capsys, "explain", archived, "--config", str(config), "--at", LATER.isoformat())
    assert code == 0
    assert "in Mailchimp: archived since" in out
    assert "archived in Mailchimp: not pushed" in out
    code, out = cli(capsys, "explain", moved, "--config", str(config), "--at", LATER.isoformat())
    assert f"address changed in Mailchimp: pushes go to {new_address}" in out

    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'mailsync_webhooks_total{result="applied"} 5' in metrics
    assert 'mailsync_webhooks_total{result="duplicate"} 1' in metrics


def test_the_receiver_refuses_strangers_and_garbage(
    world: tuple[Runtime, Any, Emulator, str, Clock],
) -> None:
    _runtime, _caller, _emulator, base, _clock = world
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(f"{base}{PREFIX}not-the-secret", data=b"type=cleaned", timeout=5)
    assert wrong.value.code == 404
    wrong.value.close()
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{base}{PREFIX}{SECRET}", data=b"type=cleaned", timeout=5)
    assert bad.value.code == 400
    assert b"fired_at" in bad.value.read()
    bad.value.close()
    with urllib.request.urlopen(f"{base}{PREFIX}{SECRET}", timeout=5) as validation:
        assert validation.status == 200


def test_the_poll_catches_a_missed_webhook(
    world: tuple[Runtime, Any, Emulator, str, Clock],
) -> None:
    runtime, caller, emulator, _base, _clock = world
    emulator.store.webhooks.reset()  # the webhook is gone: nothing is delivered
    poll = ReconciliationPoll(
        caller,
        runtime.state,
        runtime.state.get_watermark,
        runtime.state.set_watermark,
        timedelta(minutes=15),
    )
    emails = sorted(m.email_address for m in emulator.audience.members())
    emulator.audience.unsubscribe_by_person(emails[0])
    emulator.audience.archive_member(emails[1])
    # The first poll reads only the statuses that matter, not the audience.
    assert poll.run() == 2
    known = runtime.state.mailchimp_members(emails[:2])
    assert {e: known[e].status for e in emails[:2]} == {
        emails[0]: "unsubscribed",
        emails[1]: "archived",
    }
    # Later ones read what changed since: the archived contact is back, and
    # a profile edited in Mailchimp shows as such.
    emulator.audience.subscribe_by_person(emails[1])
    emulator.audience.edit_profile(emails[2], {"FNAME": "Edited in Mailchimp"})
    assert poll.run() >= 2
    known = runtime.state.mailchimp_members(emails[1:3])
    assert known[emails[1]].status == "subscribed"
    assert dict(known[emails[2]].merges) == {"FNAME": "Edited in Mailchimp"}
    assert not poll.due()
