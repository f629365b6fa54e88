from datetime import timedelta

import pytest

from sync.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10min", timedelta(minutes=10)),
        ("3h", timedelta(hours=3)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("12w", timedelta(weeks=12)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("30s", timedelta(seconds=30)),
        ("0", timedelta(0)),
        ("0h", timedelta(0)),
    ],
)
def test_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "expected a duration"),
        ("10", "expected a duration"),
        ("3 hours", "expected a duration"),
        ("1.5h", "expected a duration"),
        ("-3h", "expected a duration"),
        ("5m", "ambiguous unit 'm'"),
        ("12h1d", "largest first"),
        ("1h1h", "largest first"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(hours=24), "1d"),
        (timedelta(days=15), "15d"),
        (timedelta(days=7), "7d"),
        (timedelta(weeks=12), "12w"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(minutes=10), "10min"),
        (timedelta(0), "0"),
        (timedelta(hours=-2), "-2h"),
    ],
)
def test_format_round_trips(delta, text):
    assert format_duration(delta) == text
    if not text.startswith("-"):
        assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["36501d", "99999999999999999999999999999924h", "5300w"])
def test_absurdly_long_durations_are_refused_not_overflowed(text):
    # Digits without bound used to raise OverflowError from timedelta.
    with pytest.raises(DurationError, match="longer than 100 years"):
        parse_duration(text)


def test_a_hundred_years_is_accepted():
    assert parse_duration("36500d") == timedelta(days=36500)
