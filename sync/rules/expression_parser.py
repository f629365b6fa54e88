"""Condition text to an untyped tree: the tokenizer and the recursive-descent parser.

The parser only knows the constructs of the condition language
(``sync.rules.expressions``); nothing is ever handed to ``eval``. Its
untyped nodes (``Raw``) are typed by ``sync.rules.expression_checker``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sync.rules.durations import DurationError, duration_suggestion, parse_duration
from sync.rules.expressions import ExpressionError

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
class Raw:
    kind: str  # lit dur name now cmp arith is in not and or neg
    column: int
    value: object = None
    children: tuple[Raw, ...] = ()


#: Parentheses, ``not``, ``-`` and chains of operators nest at most this deep:
#: the parser, the checker and the evaluator recurse once per level.
MAX_NESTING = 50


def _depth(node: Raw) -> int:
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

    def parse(self) -> Raw:
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

    def or_(self) -> Raw:
        node = self.and_()
        while (token := self.accept("or")) is not None:
            node = Raw("or", token.column, children=(node, self.and_()))
        return node

    def and_(self) -> Raw:
        node = self.not_()
        while (token := self.accept("and")) is not None:
            node = Raw("and", token.column, children=(node, self.not_()))
        return node

    def not_(self) -> Raw:
        if (token := self.accept("not")) is not None:
            self.nest(token.column)
            node = Raw("not", token.column, children=(self.not_(),))
            self.nesting -= 1
            return node
        return self.comparison()

    def comparison(self) -> Raw:
        left = self.additive()
        token = self.token
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.advance()
            node = Raw("cmp", token.column, token.text, (left, self.additive()))
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
            return Raw("is", token.column, is_null, (left,))
        negated_in = False
        if token.text == "not" and self.tokens[self.index + 1].text == "in":
            self.advance()
            negated_in = True
        if self.accept("in") is not None:
            self.expect("[")
            items: list[Raw] = []
            if self.accept("]") is None:
                items.append(self.unary())
                while self.accept(",") is not None:
                    items.append(self.unary())
                self.expect("]")
            return Raw("in", token.column, negated_in, (left, *items))
        return left

    def additive(self) -> Raw:
        node = self.unary()
        while self.token.kind == "op" and self.token.text in ("+", "-"):
            token = self.advance()
            node = Raw("arith", token.column, token.text, (node, self.unary()))
        return node

    def unary(self) -> Raw:
        if (token := self.accept("-")) is not None:
            self.nest(token.column)
            node = Raw("neg", token.column, children=(self.unary(),))
            self.nesting -= 1
            return node
        return self.atom()

    def atom(self) -> Raw:
        token = self.advance()
        if token.kind == "number":
            value: int | float = float(token.text) if "." in token.text else int(token.text)
            return Raw("lit", token.column, value)
        if token.kind == "duration":
            try:
                return Raw("dur", token.column, parse_duration(token.text))
            except DurationError as exc:
                raise ExpressionError(str(exc), token.column) from None
        if token.kind == "string":
            body = token.text[1:-1]
            return Raw("lit", token.column, re.sub(r"\\(.)", r"\1", body))
        if token.kind == "keyword":
            if token.text in ("true", "false"):
                return Raw("lit", token.column, token.text == "true")
            if token.text == "null":
                return Raw("null", token.column)
            if token.text == "now":
                return Raw("now", token.column)
        if token.kind == "name":
            if self.token.text == "(":
                raise ExpressionError("function calls are not supported", self.token.column)
            return Raw("name", token.column, token.text)
        if token.text == "(":
            self.nest(token.column)
            node = self.or_()
            self.expect(")")
            self.nesting -= 1
            return node
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExpressionError(f"expected a value or a name, found {found}", token.column)


def parse_raw(text: str) -> Raw:
    """The untyped tree of ``text``; ``ExpressionError`` says where it is wrong."""
    return _Parser(text).parse()
