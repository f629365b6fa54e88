# ruff: noqa: E501  (the pinned messages are kept whole, as a reader sees them)
"""Every kind of PyYAML complaint, retold in plain words with the line and the fix.

Each case is a small text with one typing mistake; the message is pinned in
full, and none may use the parser's vocabulary.
"""

from __future__ import annotations

import re

import pytest

from sync.exceptions import RulesError
from sync.rules.loader import load_yaml

CASES = [
    (
        "first-line-indented",
        "# rules\n version: 1\nladders:\n  a: 1\n",
        2,
        "`version` is indented by 1 space, but the lines after it start at the beginning of the line: remove the spaces before `version`",
    ),
    (
        "two-siblings-disagree",
        "actions:\n signup: {a: 1}\n  wallet: {b: 2}\nstatuses: 1\n",
        3,
        "`wallet` is indented by 2 spaces, but `signup` just above it (line 2) uses 1: if they sit side by side, indent both by the same number of spaces, like the names around them",
    ),
    (
        "file-ends-in-brackets",
        "a:\n  b: [1,\n",
        2,
        "the [ opened on this line is never closed; add ] at the end of what it holds",
    ),
    (
        "anchor-sign-alone",
        "x: 1\na: &\n",
        2,
        "a value cannot start with & or *; put the whole value in quotes",
    ),
    (
        "value-continued",
        "a:\n  when: x > 1\n    ladder: n\n",
        3,
        "`ladder` is indented further than `when` on line 2, so it reads as the rest of `when`'s value; indent it by 2 spaces to line it up with `when`",
    ),
    (
        "colon-in-value",
        "a:\n  description: note: hi\n",
        2,
        "the value of `description` contains ': '; put the whole value in quotes: description: \"note: hi\"",
    ),
    (
        "between-levels",
        "s:\n  a: 1\n b: 2\n",
        3,
        "`b` is indented by 1 space, but the lines around it use 2 (like `a` on line 2) or 0 (like `s` on line 1): indent it by 2 spaces to put it under `s`, or by 0 spaces to put it beside `s`",
    ),
    (
        "list-item-between-levels",
        "s:\n  - a\n - b\n",
        3,
        "`- b` is indented by 1 space, but the lines around it use 2 (like `- a` on line 2) or 0 (like `s` on line 1): indent it by 2 spaces to put it under `s`, or by 0 spaces to put it beside `s`",
    ),
    (
        "no-colon",
        "s:\n  a: 1\n  bnn\n  c: 2\n",
        3,
        "`bnn` has no : after it; every line here is `name: value` (add a : after the name, or, if it continues `a` on line 2, indent it further than `a`)",
    ),
    (
        "unclosed-single-quote",
        "s:\n  a: 'hi\n  b: 2\n",
        2,
        "the quote ' opened on this line is never closed; add a closing ' at the end of the text",
    ),
    (
        "unclosed-double-quote",
        's:\n  a: "hi\n  b: 2\n',
        2,
        'the quote " opened on this line is never closed; add a closing " at the end of the text',
    ),
    (
        "unclosed-brace",
        "s:\n  a: {x: 1, y: 2\n  b: 2\n",
        2,
        "the { opened on this line is never closed; add } at the end of what it holds",
    ),
    (
        "unclosed-bracket",
        "s:\n  a: [x, y\n  b: 2\n",
        2,
        "the [ opened on this line is never closed; add ] at the end of what it holds",
    ),
    (
        "missing-comma",
        "s:\n  a: {x: 1 y: 2}\n",
        2,
        "inside { } the items are separated by commas: a comma is missing here (or the closing })",
    ),
    (
        "tab-indent",
        "s:\n\ta: 1\n",
        2,
        "a tab is used here; indent and separate with spaces only (replace the tab)",
    ),
    (
        "tab-after-colon",
        "s:\n  a:\t1\n  b: 2\n",
        2,
        "a tab is used here; indent and separate with spaces only (replace the tab)",
    ),
    (
        "list-on-key-line",
        "s: - a\n",
        1,
        "a list cannot start on the same line as `s`; put each `- item` on its own line below it, indented further (or write s: [first, second])",
    ),
    (
        "list-among-names",
        "s:\n  a: 1\n  - b\n",
        3,
        "`- b` is a list item, but the lines around it are `name: value` lines (like `a` on line 2); a list goes under a name with nothing after its :, indented further than that name",
    ),
    (
        "at-sign",
        "s:\n  a: @x\n",
        2,
        "a value cannot start with @; put the whole value in quotes, like a: '@x'",
    ),
    (
        "backtick",
        "s:\n  a: `x`\n",
        2,
        "a value cannot start with `; put the whole value in quotes, like a: '`x`'",
    ),
    (
        "text-after-quote",
        "s:\n  a: 'x' y\n",
        2,
        "there is text after the closing quote; put the whole value inside the quotes",
    ),
    (
        "unknown-escape",
        's:\n  a: "x\\q"\n',
        2,
        "a backslash inside double quotes must start a known code like \\n; put the text in single quotes instead, or write \\\\ for a backslash",
    ),
    (
        "name-under-list-dash",
        "r:\n  - a: 1\n  b: 2\n",
        3,
        "`b` is lined up with the `-` of the list item on line 2; to make it part of that item, indent it by 4 spaces; to make it a new item, start it with `- `",
    ),
    (
        "extra-brace",
        "s:\n  a: {x: 1}}\n",
        2,
        "this } closes nothing; remove it, or check the bracket that opens before it",
    ),
    (
        "value-starts-with-bracket",
        "s:\n  a: ]\n",
        2,
        "a value cannot start with ]; put the whole value in quotes, like a: ']'",
    ),
    (
        "percent",
        "s:\n  a: %x\n",
        2,
        "a value cannot start with %; put the whole value in quotes, like a: '%x'",
    ),
    (
        "pipe-with-text",
        "s:\n  a: |x\n",
        2,
        "after | or > nothing may follow on the same line; start the text on the next line, indented",
    ),
    (
        "prose-line",
        "hello\nfoo: bar\n",
        1,
        "`hello` is not a `name: value` line: add a : after the name, or start the line with # to make it a comment",
    ),
    (
        "first-line-too-deep",
        "s:\n    a: 1\n  b: 2\n",
        3,
        "`b` is indented by 2 spaces, but the lines around it use 4 (like `a` on line 2) or 0 (like `s` on line 1): indent it by 4 spaces to put it under `s`, or by 0 spaces to put it beside `s`",
    ),
    (
        "nested-between-levels",
        "s:\n  st:\n    r:\n      l: x\n   w: 1\n",
        5,
        "`w` is indented by 3 spaces, but the lines around it use 4 (like `r` on line 3) or 2 (like `st` on line 2): indent it by 4 spaces to put it under `st`, or by 2 spaces to put it beside `st`",
    ),
    (
        "dash-at-column-0",
        "s:\n  a: 1\n- b\n",
        3,
        "`- b` is a list item, but the lines around it are `name: value` lines (like `s` on line 1); a list goes under a name with nothing after its :, indented further than that name",
    ),
]
PARSER_WORDS = re.compile(r"\b(mapping|scalar|token|block|node|stream|YAML)\b", re.I)


@pytest.mark.parametrize(
    ("text", "line", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_yaml_mistake_gets_its_line_and_a_plain_fix(text, line, message):
    with pytest.raises(RulesError) as info:
        load_yaml(text, "f.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.message) == (line, message)
    assert not PARSER_WORDS.search(problem.message)


def test_a_value_over_several_lines_remembers_where_it_ran():
    doc = load_yaml("s:\n  when: a > 1\n    and b\n  tags: [x]\n", "f.yaml")
    assert doc.data["s"].value_spans == {"when": (2, 3)}
