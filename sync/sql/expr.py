"""Conditions and instants as SQL: the expression half of ``sync.sql.compiler``.

The condition language (``sync.rules.expressions``) is compiled to SQLAlchemy Core
column expressions that mean exactly what the Python evaluator computes:

* every instant is carried as **epoch microseconds** in a BIGINT, whatever
  the dialect stores, so that offsets, comparisons and the timeline
  arithmetic are plain integer operations that behave the same on SQLite and
  PostgreSQL, and microsecond ties stay exact;
* every *condition* is compiled to a never-null boolean: SQL's three-valued
  logic would make ``not (x > 0)`` null (false) where Python's is true, so
  each comparison is wrapped in ``COALESCE(..., FALSE)`` (a comparison with
  null is false) and a boolean value used as a condition counts null as
  false, like ``expression_eval.truth``;
* ``now`` is not special here: the caller passes the SQL expression that
  stands for it (the ``:mailsync_now_us`` parameter, or a candidate instant
  when the condition-mode query looks for the instants at which the chosen
  state changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import FromClause
from sqlalchemy.sql.visitors import replacement_traverse

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
)
from sync.rules.model import Entity

SqlExpr = ColumnElement[Any]
S = TypeVar("S")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds (timedelta's own resolution)."""
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def to_micros(instant: datetime) -> int:
    """An aware instant as epoch microseconds (exact, unlike ``timestamp()``)."""
    return micros(instant - EPOCH)


def from_micros(value: int | None) -> datetime | None:
    """Epoch microseconds back to an aware UTC instant."""
    if value is None:
        return None
    return EPOCH + timedelta(microseconds=int(value))


def instant_micros(value: SqlExpr, dialect: str) -> SqlExpr:
    """Epoch microseconds of whatever instant a source query returned.

    PostgreSQL: ``timestamp`` values are read in the session's time zone
    (the reader sets it to the source's ``naive_timezone``) by the cast to
    ``timestamptz``; ``date_part`` returns a double whose seconds carry 0.2 µs
    of precision for present-day instants, so rounding gives the exact
    microsecond (``EXTRACT`` would return numeric, several times slower).

    SQLite stores instants as text (``YYYY-MM-DD HH:MM:SS.ffffff``, maybe with
    ``T``, ``Z`` or an offset). ``strftime('%s')`` rounds fractional seconds
    to milliseconds and may carry into the next second, so the seconds come
    from the text with its fraction removed, and the fraction is read
    separately (six digits at most). Naive text is taken as UTC: SQLite has no
    time-zone database (``SqlEvaluator`` refuses other naive zones).
    """
    if dialect == "postgresql":
        epoch_s = sa.func.date_part("epoch", sa.cast(value, sa.DateTime(timezone=True)))
        return sa.cast(sa.func.round(epoch_s * _US), sa.BigInteger)
    text = sa.cast(value, sa.Text)
    has_fraction = sa.func.substr(text, 20, 1) == "."
    whole = sa.case(
        (
            has_fraction,
            sa.func.substr(text, 1, 19, type_=sa.Text).concat(
                sa.func.ltrim(sa.func.substr(text, 21), "0123456789", type_=sa.Text)
            ),
        ),
        else_=text,
    )
    seconds = sa.cast(sa.func.strftime("%s", whole), sa.BigInteger)
    fraction = sa.case(
        (
            has_fraction,
            sa.cast(
                sa.func.round(
                    sa.cast(sa.literal("0.", sa.Text).concat(sa.func.substr(text, 21, 6)), sa.Float)
                    * _US
                ),
                sa.BigInteger,
            ),
        ),
        else_=0,
    )
    return seconds * _US + fraction


def inline_constants(statement: S, keep: Iterable[str]) -> S:
    """``statement`` with its constant bound values written into the SQL.

    The compiled query has hundreds of constants (offsets, state numbers,
    SQLite's date-parsing positions); bound, they would exceed SQLite's
    parser and parameter limits and hide them from PostgreSQL's planner.
    Only booleans, integers and strings are inlined; ``keep`` names the real
    parameters (``now``, ids), which stay bound.
    """
    kept = set(keep)

    def replace(element: Any) -> Any:
        if not isinstance(element, BindParameter) or element.key in kept:
            return None
        value = element.value
        if element.callable is not None:
            return None
        if isinstance(value, bool):
            return sa.true() if value else sa.false()
        if isinstance(value, int):
            return sa.literal_column(str(value), element.type)
        if isinstance(value, str):
            quoted = "'" + value.replace("'", "''") + "'"
            return sa.literal_column(quoted, element.type)
        return None

    return replacement_traverse(statement, {}, replace)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class Naming:
    """Where derived tables go: nested subqueries on PostgreSQL, a flat
    ``WITH`` list on SQLite (whose parser overflows on deep nesting);
    ``prefix`` keeps a related entity's tables apart.

    On PostgreSQL every stage is fenced with ``OFFSET 0``: otherwise the
    planner pulls the subqueries up and substitutes each stage's expressions
    into the next, and since every stage reads the previous one's columns
    several times the expression tree grows exponentially (planning one
    BlouseBrothers query ran out of memory). Fenced, each column is computed
    once per row.
    """

    dialect: str
    prefix: str = ""

    def table(self, select: sa.Select[Any], name: str) -> FromClause:
        if self.dialect == "sqlite":
            # MATERIALIZED for the same reason as the fence below: SQLite
            # would otherwise inline each stage's expressions into the next.
            return select.cte(self.prefix + name).prefix_with("MATERIALIZED")
        return select.offset(0).subquery(self.prefix + name)

    def nested(self, prefix: str) -> Naming:
        return Naming(self.dialect, self.prefix + prefix)


def least(a: SqlExpr, b: SqlExpr) -> SqlExpr:
    """The smaller of two nullable values, ignoring nulls (PostgreSQL's
    ``LEAST`` does, SQLite's multi-argument ``min`` does not)."""
    return sa.case((a.is_(None), b), (b.is_(None), a), (a <= b, a), else_=b)


_CONDITIONS = (Compare, TimeTest, IsSet, In, Not, BoolOp)
_COMPARE: Mapping[str, Callable[[SqlExpr, SqlExpr], SqlExpr]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class ExprCompiler:
    """Compiles expressions of one entity against one row source.

    ``facts`` maps each fact name to its SQL value (instants already in epoch
    microseconds, booleans as booleans); derived facts are compiled on
    demand, in terms of the facts, and memoised. ``now`` is the SQL value of
    the evaluation instant, in epoch microseconds.
    """

    def __init__(self, entity: Entity, facts: Mapping[str, SqlExpr], now: SqlExpr) -> None:
        self.entity = entity
        self.facts = facts
        self.now = now
        self._derived = {d.name: d for d in entity.derived}
        self._memo: dict[str, SqlExpr] = {}

    def value(self, name: str) -> SqlExpr:
        """A fact or derived fact; a fact the sources do not give is null,
        as ``env.get`` makes it in the engine."""
        if name in self._memo:
            return self._memo[name]
        if name in self._derived:
            result = self.compile(self._derived[name].expr)
        else:
            result = self.facts.get(name, sa.null())
        self._memo[name] = result
        return result

    def condition(self, expr: Expr) -> SqlExpr:
        """``expr`` as a never-null boolean (null counts as false)."""
        compiled = self.compile(expr)
        if isinstance(expr, _CONDITIONS):
            return compiled
        return sa.func.coalesce(compiled, sa.false())

    def compile(self, expr: Expr) -> SqlExpr:
        """The SQL value of ``expr`` (conditions are never null)."""
        match expr:
            case Literal(value=None):
                return sa.null()
            case Literal(value=bool() as flag):
                return sa.true() if flag else sa.false()
            case Literal(value=value):
                return sa.literal(value)
            case Ref(name=name):
                return self.value(name)
            case Shifted(name=name, offset=offset):
                return self.value(name) + micros(offset)
            case TimeTest(threshold=threshold, reached=reached):
                instant = self.compile(threshold)
                test = self.now >= instant if reached else self.now < instant
                return sa.func.coalesce(test, sa.false())
            case Compare(op=op, left=left, right=right):
                test = _COMPARE[op](self.compile(left), self.compile(right))
                return sa.func.coalesce(test, sa.false())
            case Arith(op=op, left=left, right=right):
                a, b = self.compile(left), self.compile(right)
                return a + b if op == "+" else a - b
            case IsSet(operand=operand, negated=negated):
                operand_sql = self.compile(operand)
                return operand_sql.is_(None) if negated else operand_sql.is_not(None)
            case In(operand=operand, values=values, negated=negated):
                item = self.compile(operand)
                test = item.not_in(values) if negated else item.in_(values)
                # A null item is in no list and outside none: false both ways.
                return sa.func.coalesce(test, sa.false())
            case Not(operand=operand):
                return sa.not_(self.condition(operand))
            case BoolOp(op="and", operands=operands):
                return sa.and_(*(self.condition(o) for o in operands))
            case BoolOp(operands=operands):
                return sa.or_(*(self.condition(o) for o in operands))
        raise AssertionError(f"unknown expression {expr!r}")  # pragma: no cover
