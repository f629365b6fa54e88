"""Properties of the engine over random histories (hypothesis).

For every rule file we ship and random facts, actions and instants:
- the status is always one the rules declare (or null);
- it does not change between ``now`` and ``next_change_at``;
- it does change at ``next_change_at`` (a new status, or a fresh entry);
- an action dated after ``now`` changes nothing at ``now``.
"""

import os
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.evaluate.engine import Baseline, evaluate
from sync.records import ActionOccurrence
from sync.rules.expressions import Type
from sync.rules.schema import load_rules

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HORIZON = timedelta(days=400)
ENTITIES = [
    load_rules("rules.yaml").entity("user"),
    *load_rules("examples/rallia/rules.yaml").entities.values(),
    *load_rules("examples/littleworld/rules.yaml").entities.values(),
]

# Instants on a coarse grid, so that several facts often share a threshold.
instants = st.integers(min_value=-200 * 24, max_value=200 * 24).map(
    lambda hours: EPOCH + timedelta(hours=hours)
)


def fact_value(kind):
    if kind is Type.INSTANT:
        return st.none() | instants
    if kind is Type.BOOL:
        return st.none() | st.booleans()
    if kind is Type.NUMBER:
        return st.none() | st.integers(min_value=0, max_value=5)
    return st.none() | st.sampled_from(["joined", "left", "pending", "x"])


@st.composite
def histories(draw):
    entity = draw(st.sampled_from(ENTITIES))
    facts = {name: draw(fact_value(kind)) for name, kind in entity.facts.items()}
    actions = draw(
        st.lists(
            st.builds(
                ActionOccurrence, instants, st.sampled_from(sorted(entity.actions) or ["none"])
            ),
            max_size=8,
        )
        if entity.actions
        else st.just([])
    )
    baseline = None
    if entity.reinit and draw(st.booleans()):
        baseline = Baseline(draw(st.sampled_from(sorted(entity.states))), draw(instants))
    now = draw(instants)
    return entity, facts, actions, baseline, now


def key(result):
    return (result.status, result.status_since)


PROPERTY = settings(
    max_examples=int(os.environ.get("MAILSYNC_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(histories(), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_status_is_declared_and_constant_until_next_change(history, fraction):
    entity, facts, actions, baseline, now = history
    result = evaluate(entity, facts, actions, now, baseline)
    assert result.status is None or result.status in entity.status_names
    end = result.next_change_at or now + HORIZON
    assert end > now
    # Stop short of any action dated after now: those would change things, legitimately.
    # So does a re-initialisation dated after now.
    future = [a.at for a in actions if a.at > now]
    if baseline is not None and baseline.at > now:
        future.append(baseline.at)
    if future:
        end = min(end, *future)
    middle = now + (end - now) * fraction
    if middle > now and middle < end:
        assert key(evaluate(entity, facts, actions, middle, baseline)) == key(result)
    if end > now:
        just_before = end - timedelta(microseconds=1)
        if just_before >= now:
            assert key(evaluate(entity, facts, actions, just_before, baseline)) == key(result)


@PROPERTY
@given(histories())
def test_status_changes_at_next_change(history):
    entity, facts, actions, baseline, now = history
    # Only time moves: keep actions and baseline in the past of now.
    actions = [a for a in actions if a.at <= now]
    if baseline is not None and baseline.at > now:
        baseline = None
    result = evaluate(entity, facts, actions, now, baseline)
    if result.next_change_at is None:
        later = evaluate(entity, facts, actions, now + HORIZON, baseline)
        assert key(later) == key(result)
        return
    after = evaluate(entity, facts, actions, result.next_change_at, baseline)
    assert key(after) != key(result)
    assert after.status_since == result.next_change_at or after.status != result.status


@PROPERTY
@given(histories(), st.integers(min_value=1, max_value=10**6))
def test_future_actions_change_nothing_now(history, seconds_later):
    entity, facts, actions, baseline, now = history
    if not entity.actions:
        return
    before = evaluate(entity, facts, actions, now, baseline)
    extra = [
        ActionOccurrence(now + timedelta(seconds=seconds_later), name) for name in entity.actions
    ]
    assert evaluate(entity, facts, actions + extra, now, baseline) == before
