from datetime import timedelta

import pytest

from sync.rules.durations import DurationError, format_duration, parse_duration


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
        ("soon", "expected a duration like 10min, 3h, 7d or 12w, found 'soon'"),
        ("10", "10 what? Add a unit: 10min, 10h, 10d or 10w"),
        ("3 hours", "did you mean 3h? Write a number then its unit"),
        ("2 days", "did you mean 2d?"),
        ("2 d", "did you mean 2d?"),
        ("2D", "did you mean 2d?"),
        ("1d 12h", "did you mean 1d12h?"),
        ("1 day and 12 hours", "did you mean 1d12h?"),
        ("90 mins", "did you mean 90min?"),
        ("1 week", "did you mean 1w?"),
        ("1.5h", "did you mean 1h30min? Durations use whole numbers"),
        ("-3h", "a delay cannot be negative"),
        ("1m", "`m` is ambiguous: write 1min for a minute, or 30d for a month"),
        ("5m", "`m` is ambiguous: write 5min for 5 minutes, or 150d for 5 months"),
        ("1 month", "did you mean 30d? Months and years differ in length"),
        ("2 months", "did you mean 60d?"),
        ("1 year", "did you mean 365d?"),
        ("12h1d", "write the largest unit first, each unit once: did you mean 1d12h?"),
        ("1h1h", "each unit once: did you mean 2h?"),
        ("3 fortnights", "expected a duration like"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert message in str(info.value)


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
