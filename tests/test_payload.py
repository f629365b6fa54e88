"""What a value must be for Mailchimp: JSON merge values, bounded event properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.payload import EVENT_PROPERTIES_MAX, bound_properties, json_problem, properties_size


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("x", None, id="text"),
        pytest.param(0, None, id="zero"),
        pytest.param(2.5, None, id="float"),
        pytest.param(math.nan, "nan is not a JSON number", id="nan"),
        pytest.param(math.inf, "inf is not a JSON number", id="inf"),
        pytest.param(-math.inf, "-inf is not a JSON number", id="-inf"),
        pytest.param(False, None, id="bool"),
        pytest.param(None, None, id="null"),
        pytest.param(b"x", "a bytes is not a JSON value", id="bytes"),
        pytest.param([1], "a list is not a JSON value", id="list"),
    ],
)
def test_json_problem(value: object, problem: str | None) -> None:
    assert json_problem(value) == problem


def test_small_properties_are_left_alone() -> None:
    props = {"a": "1", "b": "x" * (EVENT_PROPERTIES_MAX - 3)}
    assert properties_size(props) == EVENT_PROPERTIES_MAX
    assert bound_properties(props) == (props, [])


def test_the_long_value_gives_way_to_the_short_ones() -> None:
    props = {"story": "y" * 5000, "title": "short", "id": "42"}
    bounded, shortened = bound_properties(props)
    assert list(bounded) == ["story", "title", "id"]  # declared order kept
    assert (bounded["title"], bounded["id"]) == ("short", "42")
    assert shortened == ["story"]
    assert properties_size(bounded) == EVENT_PROPERTIES_MAX


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=40), st.text(max_size=3000), min_size=1, max_size=30
    )
)
def test_bounded_properties_fit_whenever_the_names_do(props: dict[str, str]) -> None:
    bounded, shortened = bound_properties(props)
    assert list(bounded) == list(props)
    names = sum(len(k) for k in props)
    if names <= EVENT_PROPERTIES_MAX:
        assert properties_size(bounded) <= EVENT_PROPERTIES_MAX
    for name, value in bounded.items():
        assert props[name].startswith(value)  # shortened, never replaced
        assert (value != props[name]) == (name in shortened)
