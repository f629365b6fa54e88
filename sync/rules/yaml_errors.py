"""PyYAML's complaints, retold for the person who edits the file.

PyYAML reports what its parser expected (``mapping values are not allowed
here``, ``expected <block end>, but found '<block mapping start>'``); the
person who wrote ``rules.yaml`` needs to know which line is off, why, and what
to type instead. ``explain`` looks at the error's positions *and at the text
itself* (indentation of the neighbouring lines, the key on the line, an open
quote or bracket) and returns the line to report and a message in plain words.

Messages never use parser vocabulary (mapping, scalar, token, block): they
speak of lines, names, values, lists, quotes, brackets and spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_UNREADABLE = (
    "this line cannot be read; compare its indentation, colons and quotes with the lines above"
)
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_KEY = re.compile(r"^(\s*)(?:-\s+)?([^\s:#][^:#]*?)\s*:(?:\s|$)")


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based
    indent: int
    text: str  # without the indentation

    @property
    def key(self) -> str | None:
        """The name before ``:`` on this line, when it is a ``name: ...`` line."""
        match = _KEY.match(self.text)
        return match.group(2) if match else None

    @property
    def has_value(self) -> bool:
        """``name: something`` rather than ``name:`` alone."""
        match = _KEY.match(self.text)
        if match is None:
            return False
        rest = self.text[match.end() :].strip()
        return bool(rest) and not rest.startswith("#")

    @property
    def words(self) -> str:
        return self.text.split(" #", 1)[0].strip()


class _Text:
    def __init__(self, text: str) -> None:
        # PyYAML's line breaks, not str.splitlines' (which also splits on \f, \v …),
        # so that line numbers agree with the error's marks.
        self.raw = _BREAK.split(text)

    def line(self, number: int) -> _Line:
        raw = self.raw[number - 1] if 0 < number <= len(self.raw) else ""
        stripped = raw.lstrip(" ")
        return _Line(number, len(raw) - len(stripped), stripped)

    def content_before(self, number: int) -> list[_Line]:
        """Lines above ``number`` that hold something, nearest first."""
        found = []
        for n in range(min(number, len(self.raw) + 1) - 1, 0, -1):
            line = self.line(n)
            if line.text.strip() and not line.text.startswith("#"):
                found.append(line)
        return found


def _spaces(count: int) -> str:
    return "1 space" if count == 1 else f"{count} spaces"


def _name(line: _Line) -> str:
    """How to refer to a line in a message: its name, else its first words."""
    words = line.key or line.words
    return f"`{words if len(words) <= 40 else words[:37] + '...'}`"


def explain(exc: yaml.MarkedYAMLError, text: str) -> tuple[int | None, str]:
    """The line to report and a plain-words message for a PyYAML error in ``text``."""
    problem = exc.problem or ""
    context = exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column if mark is not None else 0
    where = exc.context_mark.line + 1 if exc.context_mark is not None else line
    source = _Text(text)
    if "\\t" in problem or "tab" in problem:
        return line, "a tab is used here; indent and separate with spaces only (replace the tab)"
    if line is None:
        return None, "this file cannot be read; check its indentation, colons and quotes"
    if "quoted scalar" in context and "end of stream" in problem:
        cmark = exc.context_mark
        quoted = source.line(cmark.line + 1) if cmark is not None else None
        at = (cmark.column - quoted.indent) if cmark is not None and quoted is not None else -1
        opened = quoted.text[at] if quoted is not None and 0 <= at < len(quoted.text) else '"'
        return where, (
            f"the quote {opened} opened on this line is never closed; "
            f"add a closing {opened} at the end of the text"
        )
    if "escape character" in problem:
        return line, (
            "a backslash inside double quotes must start a known code like \\n; "
            "put the text in single quotes instead, or write \\\\ for a backslash"
        )
    if "<stream end>" in problem or "end of stream" in problem:
        return _unclosed(source, where or line)
    if "flow mapping" in context or "flow sequence" in context:
        return _bracket(exc, source, where or line, line)
    if problem == "mapping values are not allowed here":
        return _colon(source, line, column)
    if problem == "sequence entries are not allowed here":
        here = source.line(line)
        return line, (
            f"a list cannot start on the same line as {_name(here)}; put each `- item` on its "
            f"own line below it, indented further (or write {here.key}: [first, second])"
        )
    if problem == "could not find expected ':'" and exc.context_mark is not None:
        return _no_colon(source, exc.context_mark.line + 1)
    if "cannot start any token" in problem or "expected the node content" in problem:
        char = problem.rsplit("'", 2)[-2] if problem.count("'") >= 2 else "?"
        here = source.line(line)
        return line, (
            f"a value cannot start with {char}; put the whole value in quotes, "
            f"like {here.key or 'name'}: '{here.text[column - here.indent :].strip()}'"
        )
    if "block scalar" in context:
        return line, (
            "after | or > nothing may follow on the same line; "
            "start the text on the next line, indented"
        )
    if "anchor" in context or "alias" in context or "undefined alias" in problem:
        return line, "a value cannot start with & or *; put the whole value in quotes"
    if "<document start>" in problem:
        return _indented_start(source, line)
    if problem.startswith("expected <block end>") or problem.startswith("did not find expected"):
        return _misaligned(exc, source, line, column)
    return line, _UNREADABLE


def _bracket(
    exc: yaml.MarkedYAMLError, source: _Text, opened: int | None, line: int
) -> tuple[int | None, str]:
    closing = "}" if "mapping" in (exc.context or "") else "]"
    opening = "{" if closing == "}" else "["
    if opened is not None and opened != line:
        return opened, (
            f"the {opening} opened on this line is never closed; "
            f"add {closing} at the end of what it holds"
        )
    return line, (
        f"inside {opening} {closing} the items are separated by commas: "
        f"a comma is missing here (or the closing {closing})"
    )


def _colon(source: _Text, number: int, column: int) -> tuple[int, str]:
    here = source.line(number)
    above = source.content_before(number)
    previous = above[0] if above else None
    before_colon = here.text[: max(column - here.indent, 0)]
    if previous is not None and here.indent > previous.indent and previous.has_value:
        return number, (
            f"{_name(here)} is indented further than {_name(previous)} on line "
            f"{previous.number}, so it reads as the rest of {_name(previous)}'s value; "
            f"indent it by {_spaces(previous.indent)} to line it up with {_name(previous)}"
        )
    if previous is not None and previous.key is None and not previous.text.startswith("- "):
        return previous.number, (
            f"{_name(previous)} is not a `name: value` line: add a : after the name, "
            "or start the line with # to make it a comment"
        )
    if ": " in before_colon or before_colon.count(":") >= 1:
        key = here.key or "name"
        value = here.text.split(": ", 1)[1].split(" #", 1)[0].strip() if ": " in here.text else ""
        return number, (
            f"the value of `{key}` contains ': '; put the whole value in quotes: {key}: \"{value}\""
        )
    return number, (
        "a : here is not expected; if it is part of a text, put the whole text in quotes"
    )


def _no_colon(source: _Text, number: int) -> tuple[int, str]:
    here = source.line(number)
    above = source.content_before(number)
    previous = above[0] if above else None
    fix = "add a : after the name"
    if previous is not None and previous.has_value:
        fix += (
            f", or, if it continues {_name(previous)} on line {previous.number}, "
            f"indent it further than {_name(previous)}"
        )
    return number, f"{_name(here)} has no : after it; every line here is `name: value` ({fix})"


def _misaligned(
    exc: yaml.MarkedYAMLError, source: _Text, number: int, column: int
) -> tuple[int, str]:
    here = source.line(number)
    if number == (exc.context_mark.line + 1 if exc.context_mark else 0) or (column > here.indent):
        head = here.text[: column - here.indent].rstrip()
        if head.endswith(("'", '"')):
            return number, (
                "there is text after the closing quote; put the whole value inside the quotes"
            )
        if here.text[column - here.indent :].startswith(("}", "]")):
            return number, (
                f"this {here.text[column - here.indent]} closes nothing; remove it, "
                "or check the bracket that opens before it"
            )
        return number, _UNREADABLE
    if "block collection" in (exc.context or ""):
        dash = source.line(exc.context_mark.line + 1) if exc.context_mark else here
        return number, (
            f"{_name(here)} is lined up with the `-` of the list item on line {dash.number}; "
            f"to make it part of that item, indent it by {_spaces(dash.indent + 2)}; "
            "to make it a new item, start it with `- `"
        )
    # The nearest line indented less is the name `here` may belong to (`outer`); the
    # shallowest line between them shows where the names under `outer` start (`inner`).
    between: list[_Line] = []
    outer: _Line | None = None
    for line in source.content_before(number):
        if line.indent < here.indent:
            outer = line
            break
        between.append(line)
    inner = min(between, key=lambda line: (line.indent, -line.number), default=None)
    if here.text.startswith("-") and not (inner is not None and inner.text.startswith("-")):
        neighbour = inner or outer or here
        return number, (
            f"`{here.words}` is a list item, but the lines around it are `name: value` lines "
            f"(like {_name(neighbour)} on line {neighbour.number}); a list goes under a name "
            "with nothing after its :, indented further than that name"
        )
    if outer is None or outer.key is None:
        return number, (
            f"{_name(here)} is not lined up with the lines around it; "
            "indent it like the names it belongs with"
        )
    culprit = _first_child_off(source, outer, here)
    if culprit is not None:
        return culprit
    if inner is None:
        return number, (
            f"{_name(here)} is indented by {_spaces(here.indent)}, but {_name(outer)} just "
            f"above it (line {outer.number}) uses {outer.indent}: if they sit side by side, "
            "indent both by the same number of spaces, like the names around them"
        )
    return number, (
        f"{_name(here)} is indented by {_spaces(here.indent)}, but the lines around it use "
        f"{inner.indent} (like {_name(inner)} on line {inner.number}) or {outer.indent} "
        f"(like {_name(outer)} on line {outer.number}): indent it by "
        f"{_spaces(inner.indent)} to put it under {_name(outer)}, or by {_spaces(outer.indent)} "
        f"to put it beside {_name(outer)}"
    )


def _first_child_off(source: _Text, outer: _Line, here: _Line) -> tuple[int, str] | None:
    """The first line of a group indented unlike the names that follow it.

    ``here`` and the names after it agree on an indentation; when ``outer`` is
    the first name under its parent and nothing after it lines up with it,
    ``outer`` is the line that is off; when names after it do line up with
    ``outer``, ``here`` belongs under it and the first name under ``outer`` is off."""
    above = source.content_before(outer.number)
    parent = above[0] if above else None
    if parent is None or parent.indent >= outer.indent or here.indent <= parent.indent:
        return None
    agreeing, like_outer = 0, False
    for n in range(here.number + 1, len(source.raw) + 1):
        line = source.line(n)
        if not line.text.strip() or line.text.startswith("#"):
            continue
        if line.indent <= parent.indent:
            break
        agreeing += line.indent == here.indent
        like_outer = like_outer or line.indent == outer.indent
    if agreeing == 0:
        return None
    off, owner = outer, parent
    if like_outer:
        first = next(
            (
                source.line(n)
                for n in range(outer.number + 1, here.number)
                if source.line(n).text.strip() and not source.line(n).text.startswith("#")
            ),
            None,
        )
        if first is None or first.indent <= here.indent:
            return None
        off, owner = first, outer
    return off.number, (
        f"{_name(off)} is indented by {_spaces(off.indent)}, but the names after it "
        f"under {_name(owner)} use {here.indent} (like {_name(here)} on line {here.number}): "
        f"indent {_name(off)} by {_spaces(here.indent)}"
    )


def _unclosed(source: _Text, number: int) -> tuple[int, str]:
    """The file ended inside brackets: name the last line that opens more than it closes."""
    for n in range(min(number, len(source.raw)), 0, -1):
        text = source.line(n).text.split(" #", 1)[0]
        for opening, closing in (("{", "}"), ("[", "]")):
            if text.count(opening) > text.count(closing):
                return n, (
                    f"the {opening} opened on this line is never closed; "
                    f"add {closing} at the end of what it holds"
                )
    return number, (
        "the file ends while something opened above (a quote or a bracket) is still open; close it"
    )


def _indented_start(source: _Text, number: int) -> tuple[int, str]:
    """The file's first line is indented, the next ones are not."""
    above = source.content_before(number)
    first = above[-1] if above else None
    if first is not None and first.indent > 0:
        return first.number, (
            f"{_name(first)} is indented by {_spaces(first.indent)}, but the lines after it "
            f"start at the beginning of the line: remove the spaces before {_name(first)}"
        )
    if first is not None and first.key is None:
        return first.number, (
            f"{_name(first)} is not a `name: value` line: add a : after the name, "
            "or start the line with # to make it a comment"
        )
    return number, _UNREADABLE
