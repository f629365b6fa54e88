"""Typing the parsed condition: names, types, and ``now`` turned into time tests.

The checker walks the untyped tree of ``sync.rules.expression_parser``, looks
each name up among the facts, refuses what cannot be computed (``start_at +
3``, a string compared with ``<``) and normalises every comparison with
``now`` into a ``TimeTest`` with ``now`` on the left.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sync.rules.expression_parser import Raw, parse_raw
from sync.rules.expressions import (
    Arith,
    BoolOp,
    Compare,
    Expr,
    ExpressionError,
    In,
    IsSet,
    Literal,
    Not,
    Ref,
    Shifted,
    TimeTest,
    Type,
)


@dataclass(frozen=True)
class _Typed:
    expr: Expr | None  # None for `now` and for bare durations, which only live inside tests
    type: Type | None  # None for null
    column: int
    # For instant-valued operands: the fact and offset, or "now" with offset.
    instant: tuple[str | None, timedelta] | None = None
    duration: timedelta | None = None


def _article(kind: Type) -> str:
    return f"an {kind.value}" if kind.value[0] in "aeiou" else f"a {kind.value}"


_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class _Checker:
    def __init__(self, names: Mapping[str, Type], allow_now: bool) -> None:
        self.names = names
        self.allow_now = allow_now

    def unknown(self, name: str, column: int, *, maybe_text: bool = False) -> ExpressionError:
        close = difflib.get_close_matches(name, list(self.names), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if maybe_text and not close:
            hint = f" (if {name} is a text, put it in quotes: '{name}')"
        known = ", ".join(sorted(self.names)) or "none declared"
        return ExpressionError(f"unknown fact {name!r}{hint}; known facts: {known}", column)

    def check(self, raw: Raw) -> _Typed:
        method: Callable[[Raw], _Typed] = getattr(self, f"_{raw.kind}")
        return method(raw)

    def condition(self, raw: Raw) -> Expr:
        typed = self.check(raw)
        if typed.type is not Type.BOOL or typed.expr is None:
            what = "null" if typed.type is None else typed.type.value
            raise ExpressionError(f"a condition must be true or false, this is a {what}", 1)
        return typed.expr

    def _bool(self, raw: Raw) -> Expr:
        typed = self.check(raw)
        if typed.type is not Type.BOOL or typed.expr is None:
            what = "null" if typed.type is None else (typed.type.value if typed.type else "?")
            raise ExpressionError(f"expected true/false here, found a {what}", typed.column)
        return typed.expr

    def _lit(self, raw: Raw) -> _Typed:
        value = raw.value
        if isinstance(value, bool):
            return _Typed(Literal(value, Type.BOOL), Type.BOOL, raw.column)
        if isinstance(value, int | float):
            return _Typed(Literal(value, Type.NUMBER), Type.NUMBER, raw.column)
        assert isinstance(value, str)
        return _Typed(Literal(value, Type.STRING), Type.STRING, raw.column)

    def _null(self, raw: Raw) -> _Typed:
        return _Typed(Literal(None, None), None, raw.column)

    def _dur(self, raw: Raw) -> _Typed:
        assert isinstance(raw.value, timedelta)
        return _Typed(None, Type.DURATION, raw.column, duration=raw.value)

    def _now(self, raw: Raw) -> _Typed:
        if not self.allow_now:
            raise ExpressionError(
                "'now' can only be used in status conditions (when:, reinit:), not here",
                raw.column,
            )
        return _Typed(None, Type.INSTANT, raw.column, instant=(None, timedelta(0)))

    def _name(self, raw: Raw) -> _Typed:
        name = str(raw.value)
        if name not in self.names:
            raise self.unknown(name, raw.column)
        kind = self.names[name]
        instant = (name, timedelta(0)) if kind is Type.INSTANT else None
        return _Typed(Ref(name, kind), kind, raw.column, instant=instant)

    def _neg(self, raw: Raw) -> _Typed:
        inner = self.check(raw.children[0])
        if isinstance(inner.expr, Literal) and inner.type is Type.NUMBER:
            assert isinstance(inner.expr.value, int | float)
            return _Typed(Literal(-inner.expr.value, Type.NUMBER), Type.NUMBER, raw.column)
        raise ExpressionError("'-' can only negate a number here", raw.column)

    def _arith(self, raw: Raw) -> _Typed:
        left, right = (self.check(child) for child in raw.children)
        op = str(raw.value)
        if left.instant is not None and right.type is Type.DURATION:
            assert right.duration is not None
            name, offset = left.instant
            offset = offset + right.duration if op == "+" else offset - right.duration
            expr = Shifted(name, offset) if name is not None else None
            return _Typed(expr, Type.INSTANT, left.column, instant=(name, offset))
        if left.type is Type.NUMBER and right.type is Type.NUMBER:
            assert left.expr is not None and right.expr is not None
            return _Typed(Arith(op, left.expr, right.expr, Type.NUMBER), Type.NUMBER, left.column)
        lt = left.type.value if left.type else "null"
        rt = right.type.value if right.type else "null"
        raise ExpressionError(
            f"cannot compute {lt} {op} {rt}; you can add durations to instants "
            "(start_at - 2h) and numbers to numbers",
            raw.column,
        )

    def operand(self, raw: Raw, op: str) -> _Typed:
        """Check one side of a comparison; a bare word compared with == or != is
        probably a text that lost its quotes."""
        if raw.kind == "name" and op in ("==", "!=") and str(raw.value) not in self.names:
            raise self.unknown(str(raw.value), raw.column, maybe_text=True)
        return self.check(raw)

    def _cmp(self, raw: Raw) -> _Typed:
        op = str(raw.value)
        left, right = (self.operand(child, op) for child in raw.children)
        now_left = left.instant is not None and left.instant[0] is None
        now_right = right.instant is not None and right.instant[0] is None
        if now_left or now_right:
            return self._time_test(op, left, right, now_left and now_right, raw.column)
        for side in (left, right):
            if side.type is Type.DURATION:
                raise ExpressionError(
                    "a duration alone is not a value; add it to an instant (created_at + 3d)",
                    side.column,
                )
        if left.type is None or right.type is None:
            raise ExpressionError(
                "comparing with null is always false; write 'x is null' or 'x is set'", raw.column
            )
        if left.type is not right.type:
            raise ExpressionError(
                f"cannot compare {_article(left.type)} with {_article(right.type)}", raw.column
            )
        if left.type in (Type.BOOL, Type.STRING) and op not in ("==", "!="):
            raise ExpressionError(
                f"{left.type.value} values can only be compared with == or !=", raw.column
            )
        assert left.expr is not None and right.expr is not None
        return _Typed(Compare(op, left.expr, right.expr), Type.BOOL, left.column)

    def _time_test(
        self, op: str, left: _Typed, right: _Typed, both_now: bool, column: int
    ) -> _Typed:
        if both_now:
            raise ExpressionError("compare now with an instant fact, not with itself", column)
        if left.instant is None or (left.instant[0] is not None):
            # Mirror so that `now` is on the left: `start_at - 2h <= now` → `now >= start_at - 2h`.
            left, right, op = right, left, _MIRROR[op]
        if right.type is not Type.INSTANT or right.instant is None:
            what = right.type.value if right.type else "null"
            raise ExpressionError(f"now can only be compared with an instant, not a {what}", column)
        if op not in (">=", "<"):
            raise ExpressionError(
                f"use 'now >= X' or 'now < X' (found 'now {op} X'): a threshold is reached "
                "exactly at its instant",
                column,
            )
        assert left.instant is not None and right.instant[0] is not None
        # Move any shift of `now` to the other side: now + 2h >= X  ⇔  now >= X - 2h.
        offset = right.instant[1] - left.instant[1]
        test = TimeTest(Shifted(right.instant[0], offset), reached=op == ">=")
        return _Typed(test, Type.BOOL, column)

    def _is(self, raw: Raw) -> _Typed:
        operand = self.check(raw.children[0])
        if operand.expr is None:
            raise ExpressionError(
                "only facts can be tested with 'is set' / 'is null'", operand.column
            )
        return _Typed(IsSet(operand.expr, negated=bool(raw.value)), Type.BOOL, raw.column)

    def _in(self, raw: Raw) -> _Typed:
        operand = self.check(raw.children[0])
        values: list[bool | int | float | str] = []
        for item in raw.children[1:]:
            typed = self.check(item)
            if not isinstance(typed.expr, Literal) or typed.expr.value is None:
                raise ExpressionError("a list after 'in' holds plain values", typed.column)
            if typed.type is not operand.type:
                have = operand.type.value if operand.type else "null"
                got = typed.type.value if typed.type else "null"
                raise ExpressionError(f"list item is a {got}, expected a {have}", typed.column)
            values.append(typed.expr.value)
        if operand.expr is None:
            raise ExpressionError("only facts can be tested with 'in'", operand.column)
        return _Typed(In(operand.expr, tuple(values), bool(raw.value)), Type.BOOL, raw.column)

    def _not(self, raw: Raw) -> _Typed:
        return _Typed(Not(self._bool(raw.children[0])), Type.BOOL, raw.column)

    def _and(self, raw: Raw) -> _Typed:
        return self._boolop("and", raw)

    def _or(self, raw: Raw) -> _Typed:
        return self._boolop("or", raw)

    def _boolop(self, op: str, raw: Raw) -> _Typed:
        operands: list[Expr] = []
        for child in raw.children:
            expr = self._bool(child)
            # Flatten a and b and c into one node.
            if isinstance(expr, BoolOp) and expr.op == op:
                operands.extend(expr.operands)
            else:
                operands.append(expr)
        return _Typed(BoolOp(op, tuple(operands)), Type.BOOL, raw.column)


def parse_condition(text: str, names: Mapping[str, Type], *, allow_now: bool = True) -> Expr:
    """Parse and type-check a condition over facts ``names`` (name → type)."""
    return _Checker(names, allow_now).condition(parse_raw(text))


def parse_value(text: str, names: Mapping[str, Type]) -> tuple[Expr, Type | None]:
    """Parse and type-check a derived value (no ``now``); returns it and its type."""
    typed = _Checker(names, allow_now=False).check(parse_raw(text))
    if typed.type is Type.DURATION or typed.expr is None:
        raise ExpressionError("a derived fact must be a value, not a bare duration", 1)
    return typed.expr, typed.type
