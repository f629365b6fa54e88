"""The value of a typed condition for one entity's facts, and when it may change.

``evaluate`` walks the tree of ``sync.rules.expressions``: a comparison with
a null is false, a null counts as false in a condition. ``thresholds`` gives
the instants at which the time tests of a condition flip.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sync.records import FactValue
from sync.rules.expressions import (
    Arith,
    BoolOp,
    Compare,
    Expr,
    In,
    IsSet,
    Literal,
    Not,
    Ref,
    Shifted,
    TimeTest,
    time_tests,
)


def evaluate(expr: Expr, facts: Mapping[str, FactValue], now: datetime | None = None) -> FactValue:
    """The value of ``expr``; conditions give True/False (never None)."""
    match expr:
        case Literal(value=value):
            return value
        case Ref(name=name):
            return facts.get(name)
        case Shifted(name=name, offset=offset):
            base = facts.get(name)
            return base + offset if isinstance(base, datetime) else None
        case TimeTest(threshold=threshold, reached=reached):
            instant = evaluate(threshold, facts, now)
            if not isinstance(instant, datetime) or now is None:
                return False
            return (now >= instant) if reached else (now < instant)
        case Compare(op=op, left=left, right=right):
            return _compare(op, evaluate(left, facts, now), evaluate(right, facts, now))
        case Arith(op=op, left=left, right=right):
            a, b = evaluate(left, facts, now), evaluate(right, facts, now)
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                return None
            return a + b if op == "+" else a - b
        case IsSet(operand=operand, negated=negated):
            return (evaluate(operand, facts, now) is None) == negated
        case In(operand=operand, values=values, negated=negated):
            item = evaluate(operand, facts, now)
            if item is None:
                return False
            return (item in values) != negated
        case Not(operand=operand):
            return not truth(evaluate(operand, facts, now))
        case BoolOp(op="and", operands=operands):
            return all(truth(evaluate(o, facts, now)) for o in operands)
        case BoolOp(operands=operands):
            return any(truth(evaluate(o, facts, now)) for o in operands)
    raise AssertionError(f"unknown expression {expr!r}")  # pragma: no cover


def holds(expr: Expr, facts: Mapping[str, FactValue], now: datetime | None = None) -> bool:
    """Whether condition ``expr`` is true (null counts as false)."""
    return truth(evaluate(expr, facts, now))


def truth(value: FactValue) -> bool:
    """How a value counts as a condition: null is false."""
    return bool(value) if value is not None else False


def _compare(op: str, a: FactValue, b: FactValue) -> bool:
    if a is None or b is None:
        return False
    try:
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "<":
            return a < b  # type: ignore[operator]
        if op == "<=":
            return a <= b  # type: ignore[operator]
        if op == ">":
            return a > b  # type: ignore[operator]
        return a >= b  # type: ignore[operator]
    except TypeError:
        # A fact whose value does not have its declared type: treat like null.
        return False


def thresholds(expr: Expr, facts: Mapping[str, FactValue]) -> set[datetime]:
    """The instants at which ``expr`` may change value as time passes."""
    found: set[datetime] = set()
    for test in time_tests(expr):
        instant = evaluate(test.threshold, facts)
        if isinstance(instant, datetime):
            found.add(instant)
    return found
