"""The condition language used in ``when:``, ``reinit:`` and ``derived:``.

Marketers write conditions such as::

    now >= start_at - 2h and not full
    cancelled_at is set
    (messages_from_learner > 0) != (messages_from_volunteer > 0)
    participant_status not in ["joined", "waitlisted"]

The text goes through a tokenizer and a recursive-descent parser that only
knows the constructs below, then a type checker; nothing is ever handed to
``eval``, so a rule file cannot run code. The result is a small typed tree
(frozen dataclasses) that the Python evaluator here walks, and that
``sqlcompile`` can turn into SQL.

Time is special. ``now`` may appear only in a comparison ``now >= X`` or
``now < X`` (or mirrored, ``X <= now`` / ``X > now``), where ``X`` is an
instant fact plus or minus durations. Such a comparison is a *time test*: it
flips exactly once, at the instant ``X`` (its *threshold*), which is what lets
the engine compute entry instants and ``next_change_at`` exactly. ``now > X``
and ``now <= X`` are refused because they flip just *after* ``X``.

Nulls: a comparison involving a null value is false, a null boolean fact
counts as false; ``is set`` / ``is null`` test for null explicitly.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Union

from sync.records import FactValue
from sync.rules.durations import DurationError, duration_suggestion, parse_duration


class Type(Enum):
    BOOL = "bool"
    NUMBER = "number"
    STRING = "string"
    INSTANT = "instant"
    DURATION = "duration"


#: Names a rule file may use for fact types.
FACT_TYPES = {t.value: t for t in (Type.BOOL, Type.NUMBER, Type.STRING, Type.INSTANT)}


class ExpressionError(ValueError):
    """A condition that cannot be parsed or type-checked; ``column`` is 1-based."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


# ---------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Literal:
    value: bool | int | float | str | None
    type: Type | None  # None for the null literal


@dataclass(frozen=True)
class Ref:
    """A fact or a derived fact, by name."""

    name: str
    type: Type


@dataclass(frozen=True)
class Shifted:
    """An instant fact moved by a fixed duration: ``start_at - 2h``."""

    name: str
    offset: timedelta


@dataclass(frozen=True)
class TimeTest:
    """``now >= threshold`` when ``reached``, else ``now < threshold``."""

    threshold: Shifted
    reached: bool


@dataclass(frozen=True)
class Compare:
    op: str  # one of == != < <= > >=
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Arith:
    op: str  # + or -
    left: Expr
    right: Expr
    type: Type


@dataclass(frozen=True)
class IsSet:
    operand: Expr
    negated: bool  # True for `is null` / `is not set`


@dataclass(frozen=True)
class In:
    operand: Expr
    values: tuple[bool | int | float | str, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or
    operands: tuple[Expr, ...]


Expr = Union[Literal, Ref, Shifted, TimeTest, Compare, Arith, IsSet, In, Not, BoolOp]  # noqa: UP007


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of ``expr``, parents before children."""
    yield expr
    children: Sequence[Expr]
    match expr:
        case Compare(left=left, right=right) | Arith(left=left, right=right):
            children = (left, right)
        case IsSet(operand=operand) | In(operand=operand) | Not(operand=operand):
            children = (operand,)
        case TimeTest(threshold=threshold):
            children = (threshold,)
        case BoolOp(operands=operands):
            children = operands
        case _:
            children = ()
    for child in children:
        yield from walk(child)


def time_tests(expr: Expr) -> list[TimeTest]:
    return [node for node in walk(expr) if isinstance(node, TimeTest)]


def references(expr: Expr) -> set[str]:
    """Names of the facts (and derived facts) ``expr`` reads."""
    names: set[str] = set()
    for node in walk(expr):
        if isinstance(node, Ref | Shifted):
            names.add(node.name)
    return names


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<duration>\d+(?:min|w|d|h|s|m)(?:\d+(?:min|w|d|h|s|m))*)(?![A-Za-z0-9_])
  | (?P<number>\d+(?:\.\d+)?)(?![A-Za-z_])
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>>=|<=|==|!=|[<>()\[\],+-])
    """,
    re.VERBOSE,
)

KEYWORDS = {"and", "or", "not", "is", "in", "set", "null", "true", "false", "now"}


@dataclass(frozen=True)
class _Token:
    kind: str  # duration number string name keyword op end
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text.startswith("<>", pos):
            raise ExpressionError("write != for 'is not equal to' (not <>)", pos + 1)
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _bad_character(text, pos)
        kind = match.lastgroup or ""
        if kind == "name" and match.group() in KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


#: Operators written the other way round, as people often type them.
_SWAPPED = {"=>": ">=", "=<": "<="}


def _bad_character(text: str, pos: int) -> ExpressionError:
    bad = text[pos]
    swapped = _SWAPPED.get(text[pos : pos + 2])
    if swapped is not None:
        return ExpressionError(f"write {swapped} (not {text[pos : pos + 2]})", pos + 1)
    loose = re.match(r"\d+[A-Za-z]+", text[pos:])
    if loose is not None and (suggestion := duration_suggestion(loose.group())) is not None:
        return ExpressionError(f"did you mean {suggestion}? (found {loose.group()!r})", pos + 1)
    hint = " (use == to compare)" if bad == "=" else ""
    if bad in "&|!":
        hint = " (write and, or, not)"
    return ExpressionError(f"unexpected character {bad!r}{hint}", pos + 1)


# ---------------------------------------------------------------- raw parse tree
# The parser builds untyped nodes; the checker types them and normalises time tests.


@dataclass(frozen=True)
class _Raw:
    kind: str  # lit dur name now cmp arith is in not and or neg
    column: int
    value: object = None
    children: tuple[_Raw, ...] = ()


#: Parentheses, ``not``, ``-`` and chains of operators nest at most this deep:
#: the parser, the checker and the evaluator recurse once per level.
MAX_NESTING = 50


def _depth(node: _Raw) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in current.children)
    return deepest


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0

    def nest(self, column: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ExpressionError(
                f"nested more than {MAX_NESTING} levels deep; split it into derived facts", column
            )

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, text: str) -> _Token | None:
        if self.token.text == text and self.token.kind in ("keyword", "op"):
            return self.advance()
        return None

    def expect(self, text: str) -> _Token:
        token = self.accept(text)
        if token is None:
            raise ExpressionError(f"expected {text!r}, found {self._describe()}", self.token.column)
        return token

    def _describe(self) -> str:
        return "the end" if self.token.kind == "end" else repr(self.token.text)

    def parse(self) -> _Raw:
        if self.token.kind == "end":
            raise ExpressionError("empty condition", 1)
        node = self.or_()
        if self.token.kind != "end":
            before = self.tokens[self.index - 1] if self.index else None
            if before is not None and before.kind == "number" and self.token.kind == "name":
                # `start_at + 7 days`: a duration written as in prose.
                written = f"{before.text} {self.token.text}"
                suggestion = duration_suggestion(written)
                if suggestion is not None:
                    raise ExpressionError(
                        f"did you mean {suggestion}? A duration is a number then its unit, "
                        f"with no space (found {written!r})",
                        before.column,
                    )
            raise ExpressionError(
                f"unexpected {self._describe()} (missing 'and' or 'or'?)", self.token.column
            )
        if _depth(node) > MAX_NESTING:
            raise ExpressionError(
                f"nested more than {MAX_NESTING} levels deep; split it into derived facts", 1
            )
        return node

    def or_(self) -> _Raw:
        node = self.and_()
        while (token := self.accept("or")) is not None:
            node = _Raw("or", token.column, children=(node, self.and_()))
        return node

    def and_(self) -> _Raw:
        node = self.not_()
        while (token := self.accept("and")) is not None:
            node = _Raw("and", token.column, children=(node, self.not_()))
        return node

    def not_(self) -> _Raw:
        if (token := self.accept("not")) is not None:
            self.nest(token.column)
            node = _Raw("not", token.column, children=(self.not_(),))
            self.nesting -= 1
            return node
        return self.comparison()

    def comparison(self) -> _Raw:
        left = self.additive()
        token = self.token
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.advance()
            node = _Raw("cmp", token.column, token.text, (left, self.additive()))
            nxt = self.token
            if nxt.kind == "op" and nxt.text in ("==", "!=", "<", "<=", ">", ">="):
                raise ExpressionError(
                    "chained comparisons are not supported; join them with 'and'", nxt.column
                )
            return node
        if self.accept("is") is not None:
            negated = self.accept("not") is not None
            word = self.advance()
            if word.text not in ("set", "null"):
                raise ExpressionError(
                    f"expected 'set' or 'null' after 'is', found {word.text or 'the end'!r}",
                    word.column,
                )
            # `is null` and `is not set` both mean "has no value".
            is_null = (word.text == "null") != negated
            return _Raw("is", token.column, is_null, (left,))
        negated_in = False
        if token.text == "not" and self.tokens[self.index + 1].text == "in":
            self.advance()
            negated_in = True
        if self.accept("in") is not None:
            self.expect("[")
            items: list[_Raw] = []
            if self.accept("]") is None:
                items.append(self.unary())
                while self.accept(",") is not None:
                    items.append(self.unary())
                self.expect("]")
            return _Raw("in", token.column, negated_in, (left, *items))
        return left

    def additive(self) -> _Raw:
        node = self.unary()
        while self.token.kind == "op" and self.token.text in ("+", "-"):
            token = self.advance()
            node = _Raw("arith", token.column, token.text, (node, self.unary()))
        return node

    def unary(self) -> _Raw:
        if (token := self.accept("-")) is not None:
            self.nest(token.column)
            node = _Raw("neg", token.column, children=(self.unary(),))
            self.nesting -= 1
            return node
        return self.atom()

    def atom(self) -> _Raw:
        token = self.advance()
        if token.kind == "number":
            value: int | float = float(token.text) if "." in token.text else int(token.text)
            return _Raw("lit", token.column, value)
        if token.kind == "duration":
            try:
                return _Raw("dur", token.column, parse_duration(token.text))
            except DurationError as exc:
                raise ExpressionError(str(exc), token.column) from None
        if token.kind == "string":
            body = token.text[1:-1]
            return _Raw("lit", token.column, re.sub(r"\\(.)", r"\1", body))
        if token.kind == "keyword":
            if token.text in ("true", "false"):
                return _Raw("lit", token.column, token.text == "true")
            if token.text == "null":
                return _Raw("null", token.column)
            if token.text == "now":
                return _Raw("now", token.column)
        if token.kind == "name":
            if self.token.text == "(":
                raise ExpressionError("function calls are not supported", self.token.column)
            return _Raw("name", token.column, token.text)
        if token.text == "(":
            self.nest(token.column)
            node = self.or_()
            self.expect(")")
            self.nesting -= 1
            return node
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExpressionError(f"expected a value or a name, found {found}", token.column)


# ---------------------------------------------------------------- checking


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

    def check(self, raw: _Raw) -> _Typed:
        method: Callable[[_Raw], _Typed] = getattr(self, f"_{raw.kind}")
        return method(raw)

    def condition(self, raw: _Raw) -> Expr:
        typed = self.check(raw)
        if typed.type is not Type.BOOL or typed.expr is None:
            what = "null" if typed.type is None else typed.type.value
            raise ExpressionError(f"a condition must be true or false, this is a {what}", 1)
        return typed.expr

    def _bool(self, raw: _Raw) -> Expr:
        typed = self.check(raw)
        if typed.type is not Type.BOOL or typed.expr is None:
            what = "null" if typed.type is None else (typed.type.value if typed.type else "?")
            raise ExpressionError(f"expected true/false here, found a {what}", typed.column)
        return typed.expr

    def _lit(self, raw: _Raw) -> _Typed:
        value = raw.value
        if isinstance(value, bool):
            return _Typed(Literal(value, Type.BOOL), Type.BOOL, raw.column)
        if isinstance(value, int | float):
            return _Typed(Literal(value, Type.NUMBER), Type.NUMBER, raw.column)
        assert isinstance(value, str)
        return _Typed(Literal(value, Type.STRING), Type.STRING, raw.column)

    def _null(self, raw: _Raw) -> _Typed:
        return _Typed(Literal(None, None), None, raw.column)

    def _dur(self, raw: _Raw) -> _Typed:
        assert isinstance(raw.value, timedelta)
        return _Typed(None, Type.DURATION, raw.column, duration=raw.value)

    def _now(self, raw: _Raw) -> _Typed:
        if not self.allow_now:
            raise ExpressionError(
                "'now' can only be used in status conditions (when:, reinit:), not here",
                raw.column,
            )
        return _Typed(None, Type.INSTANT, raw.column, instant=(None, timedelta(0)))

    def _name(self, raw: _Raw) -> _Typed:
        name = str(raw.value)
        if name not in self.names:
            raise self.unknown(name, raw.column)
        kind = self.names[name]
        instant = (name, timedelta(0)) if kind is Type.INSTANT else None
        return _Typed(Ref(name, kind), kind, raw.column, instant=instant)

    def _neg(self, raw: _Raw) -> _Typed:
        inner = self.check(raw.children[0])
        if isinstance(inner.expr, Literal) and inner.type is Type.NUMBER:
            assert isinstance(inner.expr.value, int | float)
            return _Typed(Literal(-inner.expr.value, Type.NUMBER), Type.NUMBER, raw.column)
        raise ExpressionError("'-' can only negate a number here", raw.column)

    def _arith(self, raw: _Raw) -> _Typed:
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

    def operand(self, raw: _Raw, op: str) -> _Typed:
        """Check one side of a comparison; a bare word compared with == or != is
        probably a text that lost its quotes."""
        if raw.kind == "name" and op in ("==", "!=") and str(raw.value) not in self.names:
            raise self.unknown(str(raw.value), raw.column, maybe_text=True)
        return self.check(raw)

    def _cmp(self, raw: _Raw) -> _Typed:
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

    def _is(self, raw: _Raw) -> _Typed:
        operand = self.check(raw.children[0])
        if operand.expr is None:
            raise ExpressionError(
                "only facts can be tested with 'is set' / 'is null'", operand.column
            )
        return _Typed(IsSet(operand.expr, negated=bool(raw.value)), Type.BOOL, raw.column)

    def _in(self, raw: _Raw) -> _Typed:
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

    def _not(self, raw: _Raw) -> _Typed:
        return _Typed(Not(self._bool(raw.children[0])), Type.BOOL, raw.column)

    def _and(self, raw: _Raw) -> _Typed:
        return self._boolop("and", raw)

    def _or(self, raw: _Raw) -> _Typed:
        return self._boolop("or", raw)

    def _boolop(self, op: str, raw: _Raw) -> _Typed:
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
    return _Checker(names, allow_now).condition(_Parser(text).parse())


def parse_value(text: str, names: Mapping[str, Type]) -> tuple[Expr, Type | None]:
    """Parse and type-check a derived value (no ``now``); returns it and its type."""
    typed = _Checker(names, allow_now=False).check(_Parser(text).parse())
    if typed.type is Type.DURATION or typed.expr is None:
        raise ExpressionError("a derived fact must be a value, not a bare duration", 1)
    return typed.expr, typed.type


# ---------------------------------------------------------------- evaluation


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


# ---------------------------------------------------------------- printing


def unparse(expr: Expr) -> str:
    """Readable text of ``expr`` (used by ``graph`` and in messages)."""
    from sync.rules.durations import format_duration

    def shifted(node: Shifted) -> str:
        if not node.offset:
            return node.name
        sign = "+" if node.offset > timedelta(0) else "-"
        return f"{node.name} {sign} {format_duration(abs(node.offset))}"

    def inner(node: Expr, parent: float) -> str:
        prec: float
        match node:
            case Literal(value=None):
                return "null"
            case Literal(value=bool() as value):
                return "true" if value else "false"
            case Literal(value=str() as value):
                return '"' + value.replace('"', '\\"') + '"'
            case Literal(value=value):
                return str(value)
            case Ref(name=name):
                return name
            case Shifted():
                return shifted(node)
            case TimeTest(threshold=threshold, reached=reached):
                text = f"now {'>=' if reached else '<'} {shifted(threshold)}"
                prec = 3
            case Compare(op=op, left=left, right=right):
                text = f"{inner(left, 4)} {op} {inner(right, 4)}"
                prec = 3
            case Arith(op=op, left=left, right=right):
                return f"{inner(left, 4)} {op} {inner(right, 5)}"
            case IsSet(operand=operand, negated=negated):
                text = f"{inner(operand, 4)} is {'null' if negated else 'set'}"
                prec = 3
            case In(operand=operand, values=values, negated=negated):
                items = ", ".join(inner(Literal(v, None), 0) for v in values)
                text = f"{inner(operand, 4)} {'not in' if negated else 'in'} [{items}]"
                prec = 3
            case Not(operand=operand):
                text = f"not {inner(operand, 2)}"
                prec = 2
            case BoolOp(op=op, operands=operands):
                prec = 1 if op == "or" else 1.5
                text = f" {op} ".join(inner(o, prec) for o in operands)
            case _:  # pragma: no cover
                raise AssertionError(node)
        return f"({text})" if prec < parent else text

    return inner(expr, 0)
