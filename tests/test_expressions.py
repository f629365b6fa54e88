from datetime import UTC, datetime, timedelta

import pytest

from sync.rules.expression_checker import parse_condition, parse_value
from sync.rules.expression_eval import evaluate, holds, thresholds
from sync.rules.expressions import (
    ExpressionError,
    Shifted,
    TimeTest,
    Type,
    references,
    unparse,
)

NAMES = {
    "start_at": Type.INSTANT,
    "end_at": Type.INSTANT,
    "cancelled_at": Type.INSTANT,
    "joined_count": Type.NUMBER,
    "capacity": Type.NUMBER,
    "full": Type.BOOL,
    "searching": Type.BOOL,
    "participant_status": Type.STRING,
    "a": Type.NUMBER,
    "b": Type.NUMBER,
}
T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)


def cond(text, **facts):
    return holds(parse_condition(text, NAMES), facts, facts.pop("now", None))


@pytest.mark.parametrize(
    ("text", "facts", "expected"),
    [
        ("joined_count >= capacity", {"joined_count": 2, "capacity": 2}, True),
        ("joined_count >= capacity", {"joined_count": 1, "capacity": 2}, False),
        ("joined_count >= capacity", {"joined_count": None, "capacity": 2}, False),
        ("not (joined_count >= capacity)", {"joined_count": None, "capacity": 2}, True),
        ("cancelled_at is set", {"cancelled_at": T0}, True),
        ("cancelled_at is set", {}, False),
        ("cancelled_at is null", {}, True),
        ("cancelled_at is not null", {"cancelled_at": T0}, True),
        ("cancelled_at is not set", {"cancelled_at": T0}, False),
        ("searching", {"searching": True}, True),
        ("searching", {"searching": None}, False),
        ("not searching", {"searching": None}, True),
        ('participant_status != "joined"', {"participant_status": "left"}, True),
        ("participant_status != 'joined'", {"participant_status": "joined"}, False),
        ('participant_status in ["joined", "waitlisted"]', {"participant_status": "joined"}, True),
        ('participant_status not in ["joined"]', {"participant_status": "left"}, True),
        ('participant_status not in ["joined"]', {}, False),
        ("(a > 0) != (b > 0)", {"a": 1, "b": 0}, True),
        ("(a > 0) != (b > 0)", {"a": 1, "b": 2}, False),
        ("a + b > 2", {"a": 1, "b": 2}, True),
        ("a + b > 2", {"a": None, "b": 5}, False),
        ("a > -1", {"a": 0}, True),
        ("a == 1 or b == 1 and a == 2", {"a": 1, "b": 0}, True),
        ("(a == 1 or b == 1) and a == 2", {"a": 1, "b": 0}, False),
        ("cancelled_at >= start_at - 24h", {"cancelled_at": T0, "start_at": T0}, True),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_evaluate(text, facts, expected):
    assert cond(text, **facts) is expected


@pytest.mark.parametrize(
    "text",
    [
        "now >= start_at - 2h",
        "start_at - 2h <= now",
        "now + 2h >= start_at",
        "not (now < start_at - 2h)",
    ],
)
def test_time_tests_flip_exactly_at_their_threshold(text):
    expr = parse_condition(text, NAMES)
    threshold = T0 - timedelta(hours=2)
    facts = {"start_at": T0}
    assert thresholds(expr, facts) == {threshold}
    assert evaluate(expr, facts, threshold - timedelta(seconds=1)) is False
    assert evaluate(expr, facts, threshold) is True


def test_time_test_is_normalised():
    assert parse_condition("start_at > now", NAMES) == TimeTest(
        Shifted("start_at", timedelta(0)), reached=False
    )


def test_time_test_with_null_fact_is_false_and_has_no_threshold():
    expr = parse_condition("now >= end_at + 48h", NAMES)
    assert evaluate(expr, {}, T0) is False
    assert thresholds(expr, {}) == set()


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "empty condition", 1),
        ("joined_count >= capasity", "unknown fact 'capasity' (did you mean 'capacity'?)", 17),
        ("now > start_at", "use 'now >= X' or 'now < X'", 5),
        ("now <= start_at", "use 'now >= X' or 'now < X'", 5),
        ("now == start_at", "use 'now >= X' or 'now < X'", 5),
        ("now >= joined_count", "now can only be compared with an instant", 5),
        ("now >= now", "not with itself", 5),
        ("a = 1", "unexpected character '='", 3),
        ("a > 1 && b > 1", "write and, or, not", 7),
        ("a > 1 b > 1", "missing 'and' or 'or'", 7),
        ("a", "must be true or false", 1),
        ("a > 'x'", "cannot compare a number with a string", 3),
        ("a == null", "write 'x is null'", 3),
        ("1 < a < 3", "chained comparisons", 7),
        ("start_at + 3 > end_at", "cannot compute instant + number", 10),
        ("start_at - 5m >= end_at", "`m` is ambiguous: write 5min", 12),
        ("now >= start_at + 7 days", "did you mean 7d? A duration is a number then its unit", 19),
        ("now >= start_at + 2 d", "did you mean 2d?", 19),
        ("now >= start_at + 7D", "did you mean 7d? (found '7D')", 19),
        ("a => 3", "write >= (not =>)", 3),
        ("a =< 3", "write <= (not =<)", 3),
        ("a <> 3", "write != for 'is not equal to' (not <>)", 3),
        ("participant_status == accepted", "if accepted is a text, put it in quotes", 23),
        ("participant_status > 'a'", "only be compared with == or !=", 20),
        ("searching and a", "expected true/false here", 15),
        ("cancelled_at is empty", "expected 'set' or 'null'", 17),
        ("a in [1, 'x']", "list item is a string", 10),
        ("(a > 1", "expected ')'", 7),
        ("__import__('os')", "function calls are not supported", 11),
        ("a.b > 1", "unexpected character '.'", 2),
    ],
)
def test_errors_say_what_and_where(text, message, column):
    with pytest.raises(ExpressionError) as info:
        parse_condition(text, NAMES)
    assert message in info.value.message
    assert info.value.column == column


def test_now_is_refused_where_not_allowed():
    with pytest.raises(ExpressionError, match="'now' can only be used"):
        parse_condition("now >= start_at", NAMES, allow_now=False)


def test_derived_value_types():
    assert parse_value("joined_count >= capacity", NAMES)[1] is Type.BOOL
    assert parse_value("a + b", NAMES)[1] is Type.NUMBER


@pytest.mark.parametrize(
    "text",
    [
        "now >= start_at - 2h and not full",
        "cancelled_at is set",
        "(a > 0) != (b > 0)",
        'participant_status not in ["joined", "left"]',
        "(a == 1 or b == 1) and not (a == 2 or searching)",
        "now < end_at + 1d12h",
    ],
)
def test_unparse_round_trips(text):
    expr = parse_condition(text, NAMES)
    assert parse_condition(unparse(expr), NAMES) == expr


@pytest.mark.parametrize(
    "text",
    [
        "(" * 2000 + "a > 0" + ")" * 2000,
        "not " * 3000 + "f",
        "-" * 3000 + "a > 0",
        "a" + " + a" * 5000 + " > 0",
        " or ".join(["f"] * 5000),
    ],
    ids=["parentheses", "not", "minus", "sum", "or-chain"],
)
def test_absurd_nesting_is_an_expression_error_not_a_recursion_error(text):
    names = {"a": Type.NUMBER, "f": Type.BOOL}
    with pytest.raises(ExpressionError, match="nested more than 50 levels deep"):
        parse_condition(text, names)


def test_reasonable_nesting_and_chains_are_accepted():
    names = {"a": Type.NUMBER, "f": Type.BOOL}
    parse_condition("(" * 20 + "a > 0" + ")" * 20, names)
    parse_condition(" or ".join(["f"] * 40), names)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("joined_count >= capacity", {"joined_count", "capacity"}),
        # The instant of a time test is read too (its threshold).
        ("full and now >= start_at - 2h", {"full", "start_at"}),
        ("now < end_at", {"end_at"}),
        (
            "not (cancelled_at is set) or participant_status in ['a', 'b']",
            {"cancelled_at", "participant_status"},
        ),
    ],
)
def test_references_names_every_fact_read(text, names):
    assert references(parse_condition(text, NAMES)) == names
