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

This module holds the typed tree and its printing. The text becomes a tree
in ``sync.rules.expression_parser`` (tokens, untyped nodes) and
``sync.rules.expression_checker`` (types, time tests);
``sync.rules.expression_eval`` evaluates it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Union

from sync.rules.durations import format_duration


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


# ---------------------------------------------------------------- printing


def unparse(expr: Expr) -> str:
    """Readable text of ``expr`` (used by ``graph`` and in messages)."""

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
