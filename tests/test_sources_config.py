"""sources.yaml validation: every problem collected, each located."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.exceptions import RulesError
from sync.sources.model import check_contract
from sync.sources.schema import load_sources, parse_sources

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """\
entities:
  user:
    list: SELECT id, email FROM users
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RulesError) as info:
        parse_sources(text, "s.yaml")
    return [(p.line, " ==> ".join(map(str, p.path)), p.message) for p in info.value.problems]


def test_minimal_file_is_valid_and_defaults_apply():
    config = parse_sources(MINIMAL)
    user = config.entity("user")
    assert user.id_type == "integer"
    assert user.naive_timezone == "UTC"
    assert user.actions == ()


def test_trailing_semicolon_is_tolerated():
    config = parse_sources(MINIMAL.replace("FROM users", "FROM users;"))
    assert config.entity("user").list_query.sql == "SELECT id, email FROM users"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "", [(None, "", "the file is empty; expected a mapping with 'entities'")], id="empty"
        ),
        pytest.param(
            "entities: {}\n",
            [(1, "entities", "expected at least one entity type")],
            id="no-entities",
        ),
        pytest.param(
            "entity:\n  user: {}\n",
            [
                (
                    1,
                    "entity",
                    "unknown key 'entity' (did you mean 'entities'?); "
                    "allowed keys: naive_timezone, entities",
                ),
                (1, "", "missing key 'entities'"),
            ],
            id="misspelt-top-key",
        ),
        pytest.param(
            "entities:\n  user:\n    id_type: uuid\n    list: SELECT 1\n",
            [(3, "entities ==> user ==> id_type", "expected one of integer, text, got 'uuid'")],
            id="bad-id-type",
        ),
        pytest.param(
            "naive_timezone: Mars/Olympus\n" + MINIMAL,
            [(1, "naive_timezone", "unknown time zone 'Mars/Olympus'")],
            id="bad-timezone",
        ),
        pytest.param(
            "entities:\n  user:\n    actions: {}\n",
            [
                (
                    2,
                    "entities ==> user",
                    "missing key 'list': the query returning id, email and identity columns",
                )
            ],
            id="missing-list",
        ),
    ],
)
def test_top_level_problems(text, expected):
    assert problems(text) == expected


def test_every_problem_is_reported_with_its_line():
    text = """\
entities:
  user:
    list: SELECT id, email FROM users
    actions:
      signup: SELECT id, date_joined AS at FROM users WHERE date_joined > :since
      Wallet: SELECT 1
      paid: 42
      two: SELECT 1; DELETE FROM users
    facts:
      - sql: SELECT id, x FROM t
        columns: {x: boolean, id: bool}
      - sql: SELECT id, y FROM t
      - columns: {z: {type: number, default: "0"}}
    rollups:
      matches_total: {relation: match}
    surprise: 1
"""
    assert problems(text) == [
        (
            5,
            "entities ==> user ==> actions ==> signup",
            "unknown bound parameter :since (allowed here: :now)",
        ),
        (
            6,
            "entities ==> user ==> actions ==> Wallet",
            "expected an action name in lower_snake_case, got 'Wallet'",
        ),
        (7, "entities ==> user ==> actions ==> paid", "expected SQL text, got number 42"),
        (
            8,
            "entities ==> user ==> actions ==> two",
            "expected one SQL statement, found ';' inside",
        ),
        (
            11,
            "entities ==> user ==> facts ==> 0 ==> columns ==> x",
            "expected a type (bool, number, string, instant), got 'boolean'",
        ),
        (
            11,
            "entities ==> user ==> facts ==> 0 ==> columns ==> id",
            "'id' is reserved for the entity id",
        ),
        (
            12,
            "entities ==> user ==> facts ==> 1",
            "missing key 'columns' (name: type, the type one of bool, number, string, instant)",
        ),
        (13, "entities ==> user ==> facts ==> 2", "missing key 'sql'"),
        (
            13,
            "entities ==> user ==> facts ==> 2 ==> columns ==> z ==> default",
            "default must be a number, got '0'",
        ),
        (
            15,
            "entities ==> user ==> rollups ==> matches_total ==> relation",
            "unknown relation 'match' (known: none declared)",
        ),
        (
            16,
            "entities ==> user ==> surprise",
            "unknown key 'surprise'; allowed keys: id_type, naive_timezone, list, actions, "
            "facts, relations, rollups, watermark, changed",
        ),
    ]


def test_rollup_where_columns_and_types_are_checked():
    text = """\
entities:
  user:
    list: SELECT id, email FROM users
    facts:
      - sql: SELECT id, 1 AS matches_total FROM users
        columns: {matches_total: number}
    relations:
      match:
        sql: SELECT 1 AS id, 2 AS related_id, 'learner' AS role
        columns: {role: string, related_id: string}
    rollups:
      matches_total: {relation: match}
      by_role: {relation: match, where: {role: 1, sent: 0}}
      by_status: {relation: match, status: [ongoing.*, 3]}
"""
    assert problems(text) == [
        (
            10,
            "entities ==> user ==> relations ==> match ==> columns ==> related_id",
            "'related_id' is reserved for the entity id",
        ),
        (
            12,
            "entities ==> user ==> rollups ==> matches_total",
            "fact 'matches_total' is already given by entities ==> user ==> facts ==> 0",
        ),
        (
            13,
            "entities ==> user ==> rollups ==> by_role ==> where ==> role",
            "expected string value(s), got number 1",
        ),
        (
            13,
            "entities ==> user ==> rollups ==> by_role ==> where ==> sent",
            "relation 'match' has no column 'sent' (columns: role)",
        ),
        (
            14,
            "entities ==> user ==> rollups ==> by_status ==> status",
            "expected a status or pattern like 'ongoing.*', got number 3",
        ),
    ]


def test_duplicate_keys_from_the_loader_are_reported_too():
    text = MINIMAL + "    actions:\n      signup: SELECT 1 AS id, 2 AS at\n      signup: SELECT 2\n"
    assert problems(text) == [
        (
            6,
            "entities ==> user ==> actions",
            "`signup` appears twice here (first on line 5); keep only one",
        )
    ]


def test_changed_query_may_use_since():
    text = MINIMAL + "    changed: SELECT id FROM users WHERE updated_at > :since\n"
    assert parse_sources(text).entity("user").changed is not None


def test_problem_renders_file_line_and_path():
    with pytest.raises(RulesError) as info:
        parse_sources("entities:\n  user:\n    list: 3\n", "app/sources.yaml")
    assert str(info.value) == (
        "app/sources.yaml:3: entities ==> user ==> list: expected SQL text, got number 3"
    )


def test_missing_file_is_a_located_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read file"):
        load_sources(tmp_path / "nope.yaml")


def test_unknown_entity_type_lists_known_ones():
    with pytest.raises(RulesError, match=r"no entity type 'match' \(known: user\)"):
        parse_sources(MINIMAL).entity("match")


# The demo files must provide exactly the contract of docs/../spec (lifecycles.md).

BLOUSEBROTHERS_ACTIONS = (
    "signup",
    "wallet_created",
    "account_credited",
    "subscription_bought",
    "transfer_received",
    "balance_low",
    "conf_bought",
    "conf_finished",
    "conf_evaluated",
    "conf_creation_started",
    "conf_creation_completed",
    "conf_published",
    "conf_sold",
    "eval_received",
)
BLOUSEBROTHERS_FACTS = (
    "has_wallet",
    "has_finished_unpublished_conf",
    "has_conf_in_progress",
    "has_published_conf",
    "has_credit",
    "has_pending_evaluation",
)
LITTLEWORLD_MATCH_FACTS = (
    "created_at",
    "confirmed_at",
    "messages_from_learner",
    "messages_from_volunteer",
    "video_calls",
    "last_interaction_at",
    "still_in_contact_after_12w",
)
LITTLEWORLD_USER_FACTS = (
    "created_at",
    "email_verified_at",
    "form_completed_at",
    "onboarding_call_booked",
    "had_onboarding_call",
    "onboarding_no_show",
    "too_low_german_level",
    "searching",
    "marked_inactive",
    "search_started_at",
    "matches_pending",
    "matches_kickoff",
    "matches_active",
    "matches_completed",
    "matches_ghosted_by_user",
    "matches_never_confirmed_as_learner",
    "matches_total",
)
RALLIA_MATCH_FACTS = (
    "cancelled_at",
    "created_at",
    "start_at",
    "end_at",
    "joined_count",
    "capacity",
)


@pytest.mark.parametrize(
    ("path", "entity", "actions", "facts"),
    [
        pytest.param(
            "sources.yaml",
            "user",
            BLOUSEBROTHERS_ACTIONS,
            BLOUSEBROTHERS_FACTS,
            id="blousebrothers",
        ),
        pytest.param(
            "examples/littleworld/sources.yaml",
            "match",
            (),
            LITTLEWORLD_MATCH_FACTS,
            id="littleworld-match",
        ),
        pytest.param(
            "examples/littleworld/sources.yaml",
            "user",
            (),
            LITTLEWORLD_USER_FACTS,
            id="littleworld-user",
        ),
        pytest.param(
            "examples/rallia/sources.yaml", "match", (), RALLIA_MATCH_FACTS, id="rallia-match"
        ),
        pytest.param(
            "examples/rallia/sources.yaml",
            "participant",
            (),
            (*RALLIA_MATCH_FACTS, "participant_status"),
            id="rallia-participant",
        ),
    ],
)
def test_demo_sources_provide_the_contract(path, entity, actions, facts):
    config = load_sources(ROOT / path)
    assert check_contract(config, entity, actions=actions, facts=facts) == []
    if actions:
        assert config.entity(entity).action_names == actions


def test_check_contract_names_what_is_missing():
    config = parse_sources(MINIMAL)
    found = [
        p.message for p in check_contract(config, "user", actions=["signup"], facts=["has_wallet"])
    ]
    assert found == ["no query for action 'signup'", "no query for fact 'has_wallet'"]
