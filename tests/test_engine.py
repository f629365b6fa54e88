"""The engine on hand-computed cases, construct by construct."""

from datetime import UTC, datetime, timedelta

import pytest

from sync.evaluate.engine import Baseline, evaluate, reinit_state
from sync.records import ActionOccurrence
from sync.rules.schema import load_rules, parse_rules

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def user():
    return load_rules("rules.yaml").entity("user")


def at(offset, action):
    return ActionOccurrence(T0 + offset, action)


def test_no_action_no_status(user):
    result = evaluate(user, {}, [], T0)
    assert result.status is None
    assert result.next_change_at is None
    assert result.merge_fields["MMERGE25"] is None


def test_actions_after_now_do_not_exist_yet(user):
    result = evaluate(user, {}, [at(D, "signup")], T0)
    assert result.status is None
    assert result.action_code is None


def test_tie_goes_to_the_action_declared_later(user):
    # signup is declared before wallet_created; written in either order.
    for actions in (
        [at(0 * D, "signup"), at(0 * D, "wallet_created")],
        [at(0 * D, "wallet_created"), at(0 * D, "signup")],
    ):
        assert evaluate(user, {}, actions, T0).status == "wallet_ok"


def test_actions_without_status_change_only_the_code(user):
    result = evaluate(user, {}, [at(0 * D, "signup"), at(2 * D, "transfer_received")], T0 + 3 * D)
    assert result.status == "registered_H24"
    assert result.action_code == "virement"


def test_then_is_a_fresh_entry(user):
    result = evaluate(user, {}, [at(0 * D, "conf_bought")], T0 + 31 * D + 24 * H)
    assert result.status == "money_ok_H24"
    assert result.state_entered_at == T0 + 31 * D
    assert result.status_since == T0 + 32 * D
    assert result.next_change_at == T0 + 31 * D + 7 * D


def test_terminal_step_has_no_next_change(user):
    result = evaluate(user, {}, [at(0 * D, "signup")], T0 + 45 * D)
    assert result.status == "registered_inact"
    assert result.next_change_at is None


@pytest.mark.parametrize(
    ("days_after_creat_wait", "status", "since_days"),
    [
        (30, "creat_wait_M1", 30),
        (31, "creat_wait_J15", 31),
        (45, "creat_wait_J15", 31),
        (46, "creat_wait_M1", 46),
        (47, "creat_wait_J15", 47),
        (62, "creat_wait_M1", 62),
        (63, "creat_wait_J15", 63),
        # 10 years in, by hand: _J15 at 31 + 16k, and 31 + 16 * 226 = 3647 <= 3650 < 3647 + 15.
        (3650, "creat_wait_J15", 3647),
    ],
)
def test_creat_wait_loops_every_16_days(user, days_after_creat_wait, status, since_days):
    entered = T0 + D  # conf_published at T0, creat_wait at +24h
    result = evaluate(user, {}, [at(0 * D, "conf_published")], entered + days_after_creat_wait * D)
    assert result.status == status
    assert result.status_since == entered + since_days * D


def test_reinit_supersedes_actions_at_or_before_it(user):
    facts = {"has_wallet": True, "has_credit": True, "has_pending_evaluation": True}
    r = T0 + 10 * D
    state = reinit_state(user, facts, r)
    assert state == "give_eval_notok"
    baseline = Baseline(state, r)
    actions = [at(0 * D, "signup"), at(10 * D, "conf_published")]
    result = evaluate(user, facts, actions, r + 7 * D, baseline)
    assert result.status == "give_eval_notok_J7"
    assert result.action_code == "publi"  # re-initialisation does not touch the code
    later = evaluate(user, facts, [*actions, at(12 * D, "wallet_created")], r + 7 * D, baseline)
    assert later.status == "wallet_ok_H24"  # entered at R + 2d, five days before


def test_reinit_in_the_future_is_ignored(user):
    baseline = Baseline("money_ok", T0 + 10 * D)
    assert evaluate(user, {}, [at(0 * D, "signup")], T0 + D, baseline).status == "registered_H24"


def test_action_events_once_per_occurrence(user):
    actions = [at(0 * D, "signup"), at(D, "account_credited"), at(2 * D, "account_credited")]
    events = evaluate(user, {}, actions, T0 + 3 * D).events
    assert [e.name for e in events] == ["welcome", "credit", "credit"]
    assert len({e.key for e in events}) == 3
    assert evaluate(user, {}, actions, T0 + 3 * D, events_since=T0 + D).events == events[1:]


def test_merge_fields_from_facts(user):
    result = evaluate(user, {"first_name": "Ada", "username": "ada"}, [at(0 * D, "signup")], T0)
    assert result.merge_fields == {
        "MMERGE25": "registered",
        "MMERGE28": "welcome",
        "FNAME": "Ada",
        "LNAME": None,
        "MMERGE3": "ada",
    }


RALLIA = "examples/rallia/rules.yaml"
START = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def participant():
    return load_rules(RALLIA).entity("participant")


def match_facts(**overrides):
    facts = {
        "match_id": "m1",
        "participant_status": "joined",
        "created_at": START - 10 * D,
        "start_at": START,
        "end_at": START + 2 * H,
        "joined_count": 2,
        "capacity": 2,
        "cancelled_at": None,
    }
    facts.update(overrides)
    return facts


def test_condition_entry_and_next_change(participant):
    result = evaluate(participant, match_facts(), [], START - 3 * H)
    assert result.status == "reminder_24h"
    assert result.status_since == START - 24 * H
    assert result.next_change_at == START - 2 * H
    (event,) = result.events
    assert (event.name, event.properties, event.occurred_at) == (
        "match_reminder_24h",
        {"match_id": "m1"},
        START - 24 * H,
    )


def test_condition_state_held_all_along_counts_from_since(participant):
    result = evaluate(participant, match_facts(), [], START - 5 * D)
    assert result.status == "upcoming"
    assert result.status_since == START - 10 * D
    assert result.next_change_at == START - 24 * H


def test_condition_with_no_time_left_has_no_next_change(participant):
    result = evaluate(participant, match_facts(joined_count=1), [], START + D)
    assert result.status == "match_expired"
    assert result.status_since == START
    assert result.next_change_at is None


def test_state_event_once_per_entity_has_a_stable_key(participant):
    a = evaluate(participant, match_facts(), [], START - 3 * H).events[0]
    b = evaluate(participant, match_facts(), [], START - 2 * H - 1 * timedelta(seconds=1)).events[0]
    assert a.key == b.key


def test_naive_now_is_refused(user):
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(user, {}, [], datetime(2026, 1, 1))


def test_self_loop_then_reenters():
    entity = parse_rules(
        """
entities:
  user:
    actions: {go: {enters: weekly}}
    statuses:
      weekly: {ladder: {_late: 2d}, then: {after: 7d, enter: weekly}}
"""
    ).entity()
    result = evaluate(entity, {}, [ActionOccurrence(T0, "go")], T0 + 700 * D + 3 * D)
    assert result.status == "weekly_late"
    assert result.state_entered_at == T0 + 700 * D
    assert result.next_change_at == T0 + 707 * D
