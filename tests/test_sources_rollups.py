"""Rollups: a user's match counts from the evaluated match statuses (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.sources.rollups import RelationRow, Rollup, compute_rollups, status_matches
from sync.sources.schema import load_sources

ROOT = Path(__file__).resolve().parent.parent
LITTLEWORLD = load_sources(ROOT / "examples/littleworld/sources.yaml").entity("user").rollups


def rel(match: str, role: str, sent: int) -> RelationRow:
    return RelationRow("match", match, {"role": role, "user_sent_messages": sent})


@pytest.mark.parametrize(
    ("pattern", "status", "expected"),
    [
        ("ongoing.*", "ongoing.free_play", True),
        ("ongoing.*", "ongoing", False),
        ("ongoing.*", "kickoff.ongoing", False),
        ("failed.ghosted", "failed.ghosted", True),
        ("failed.ghosted", "failed.ghosted_x", False),
        ("*", None, False),
        ("pre.*", "Pre.pending_confirm", False),
    ],
)
def test_status_patterns(pattern, status, expected):
    assert status_matches(pattern, status) is expected


def test_littleworld_counts_by_status_group_role_and_messages():
    rows = [
        rel("1", "learner", 3),  # ongoing
        rel("2", "learner", 0),  # ghosted, and this user never wrote: ghosted by them
        rel("3", "volunteer", 5),  # ghosted, but this user wrote: the other side ghosted
        rel("4", "learner", 0),  # expired, never confirmed, as learner
        rel("5", "volunteer", 0),  # expired, never confirmed, but as volunteer
        rel("6", "volunteer", 1),  # kickoff
        rel("7", "volunteer", 2),  # finished
        rel("8", "learner", 0),  # pending confirm
        rel("9", "learner", 0),  # not evaluated (unknown): counted in total only
    ]
    statuses = {
        "1": "ongoing.ongoing",
        "2": "failed.ghosted",
        "3": "failed.ghosted",
        "4": "pre.expired_never_confirmed",
        "5": "pre.expired_never_confirmed",
        "6": "kickoff.first_contact",
        "7": "finished.completed",
        "8": "pre.pending_confirm",
    }
    assert compute_rollups(LITTLEWORLD, rows, {"match": statuses}) == {
        "matches_pending": 3,
        "matches_kickoff": 1,
        "matches_active": 1,
        "matches_completed": 1,
        "matches_ghosted_by_user": 1,
        "matches_never_confirmed_as_learner": 1,
        "matches_total": 9,
    }


def test_no_relations_gives_zeros_not_missing_facts():
    assert compute_rollups(LITTLEWORLD, [], {"match": {}}) == dict.fromkeys(
        (r.fact for r in LITTLEWORLD), 0
    )


def test_status_lookup_may_be_a_function():
    rollups = [Rollup("active", "match", ("ongoing.*",))]
    rows = [rel("1", "learner", 0), rel("2", "learner", 0)]
    assert compute_rollups(
        rollups, rows, {"match": lambda i: "ongoing.x" * (i == "1") or None}
    ) == {"active": 1}


def test_rows_of_other_relations_do_not_count():
    rollups = [Rollup("n", "match")]
    rows = [RelationRow("team", "1"), RelationRow("match", "1")]
    assert compute_rollups(rollups, rows, {}) == {"n": 1}


def test_where_compares_types_strictly():
    rollups = [Rollup("n", "match", where=(("flag", (1,)),))]
    rows = [RelationRow("match", "1", {"flag": True}), RelationRow("match", "2", {"flag": 1.0})]
    # True is not the count 1; 1.0 and 1 are the same number.
    assert compute_rollups(rollups, rows, {}) == {"n": 1}


def test_where_accepts_any_of_several_values():
    rollups = [Rollup("n", "match", where=(("role", ("learner", "volunteer")),))]
    rows = [rel("1", "learner", 0), rel("2", "volunteer", 0), rel("3", "mentor", 0)]
    assert compute_rollups(rollups, rows, {}) == {"n": 2}
