from datetime import UTC, datetime, timedelta, timezone

import pytest

from sync.addresses import normalise_email
from sync.evaluate.engine import evaluate
from sync.evaluate.members import MemberBuilder, desired_member, mailchimp_value
from sync.records import ActionOccurrence
from sync.rules.schema import load_rules

T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "field_type", "expected"),
    [
        (None, "text", ""),
        (0, "number", 0),
        (0, "text", "0"),
        (False, "text", "false"),
        (True, "text", "true"),
        (2.5, "number", 2.5),
        ("registered", "text", "registered"),
        (datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))), "date", "2026-01-02"),
        (datetime(2026, 1, 1, 23, 30, tzinfo=UTC), "text", "2026-01-01T23:30:00Z"),
    ],
)
def test_mailchimp_value(value, field_type, expected):
    assert mailchimp_value(value, field_type) == expected


def test_normalise_email():
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"


def test_desired_member_from_a_user():
    user = load_rules("rules.yaml").entity("user")
    evaluation = evaluate(user, {"first_name": "Ada"}, [ActionOccurrence(T0, "signup")], T0)
    member = desired_member(user, "42", "Ada@Example.com", evaluation)
    assert member.email == "ada@example.com"
    assert member.merge_fields == {
        "MMERGE25": "registered",
        "MMERGE28": "welcome",
        "FNAME": "Ada",
        "LNAME": "",
        "MMERGE3": "",
    }
    (event,) = member.events
    assert event.key == f"user:42:action:signup:{T0.isoformat()}"


def test_two_participations_of_one_player_are_two_events():
    participant = load_rules("examples/rallia/rules.yaml").entity("participant")
    start = T0 + timedelta(days=3)
    builder = MemberBuilder("p@example.com")
    for match_id in ("m1", "m2"):
        facts = {
            "match_id": match_id,
            "participant_status": "joined",
            "created_at": T0,
            "start_at": start,
            "end_at": start + timedelta(hours=2),
            "joined_count": 2,
            "capacity": 2,
        }
        evaluation = evaluate(participant, facts, [], start - timedelta(hours=3))
        builder.add(participant, f"{match_id}:p", evaluation)
    member = builder.build()
    assert [e.name for e in member.events] == ["match_reminder_24h", "match_reminder_24h"]
    assert len({e.key for e in member.events}) == 2
    assert {e.properties["match_id"] for e in member.events} == {"m1", "m2"}


SCORE_RULES = """\
version: 1
entities:
  player:
    facts:
      rating: number
    statuses:
      active: {when: otherwise}
    merge_fields:
      MMERGE25: status
      SCORE: rating
"""


@pytest.mark.parametrize("rating", [float("nan"), float("inf"), float("-inf")])
def test_a_fact_that_is_not_json_is_set_aside_naming_entity_and_fact(tmp_path, rating):
    rules = tmp_path / "rules.yaml"
    rules.write_text(SCORE_RULES)
    player = load_rules(str(rules)).entity("player")
    builder = MemberBuilder("p@x.io")
    builder.add(player, "7", evaluate(player, {"rating": 3}, [], T0))
    builder.add(player, "8", evaluate(player, {"rating": rating}, [], T0))
    member = builder.build()
    # The last entity read sets the field: its value cannot be sent.
    assert member.merge_fields == {"MMERGE25": "active"}
    assert set(member.invalid) == {"SCORE"}
    assert member.invalid["SCORE"].startswith("player 8: rating is ")
    assert "not a JSON number" in member.invalid["SCORE"]
    builder.add(player, "9", evaluate(player, {"rating": 4.5}, [], T0))
    fixed = builder.build()
    assert (fixed.merge_fields["SCORE"], fixed.invalid) == (4.5, {})
