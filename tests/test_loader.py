import pytest

from sync.exceptions import RulesError
from sync.rules.loader import MarkedDict, MarkedList, line_of, load_yaml, read_yaml_file


def test_keeps_lines_of_keys_and_items():
    doc = load_yaml("a: 1\nb:\n  - x\n  - y\nc: {d: 2}\n", "f.yaml")
    assert doc.problems == []
    assert isinstance(doc.data, MarkedDict)
    assert doc.data.line_of("b") == 2
    assert isinstance(doc.data["b"], MarkedList)
    assert doc.data["b"].line_of(1) == 4
    assert line_of(doc.data["c"], "d") == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v: on", "on"),
        ("v: no", "no"),
        ("v: yes", "yes"),
        ("v: 2026-01-01", "2026-01-01"),
        ("v: 2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z"),
        ("v: 10:30", "10:30"),
        ("v: 24h", "24h"),
        ("v: true", True),
        ("v: False", False),
        ("v: null", None),
        ("v:", None),
        ("v: 12", 12),
        ("v: -1.5", -1.5),
        ("v: 0x10", "0x10"),
    ],
    ids=lambda v: repr(v),
)
def test_scalar_typing_is_conservative(text, expected):
    assert load_yaml(text, "f.yaml").data["v"] == expected


def test_duplicate_keys_are_all_reported_with_lines():
    doc = load_yaml("a: 1\nb: 2\na: 3\nm:\n  x: 1\n  x: 2\n", "f.yaml")
    messages = [(p.line, p.path, p.message) for p in doc.problems]
    assert messages == [
        (3, (), "`a` appears twice here (first on line 1); keep only one"),
        (6, ("m",), "`x` appears twice here (first on line 5); keep only one"),
    ]


def test_keys_that_yaml_would_turn_into_booleans_stay_names():
    assert list(load_yaml("no: 1\nnull: 2\n", "f.yaml").data) == ["no", "null"]


def test_syntax_error_names_file_and_line():
    with pytest.raises(RulesError) as info:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n", "broken.yaml")
    (problem,) = info.value.problems
    assert problem.file == "broken.yaml"
    assert problem.line is not None
    assert problem.message == (
        "the [ opened on this line is never closed; add ] at the end of what it holds"
    )


def test_aliases_are_refused():
    with pytest.raises(RulesError, match="a value cannot start with & or \\*"):
        load_yaml("a: &x {b: 1}\nc: *x\n", "f.yaml")


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(RulesError) as info:
        read_yaml_file(path)
    assert info.value.problems[0].line == 2
    assert "UTF-8" in info.value.problems[0].message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read file"):
        read_yaml_file(tmp_path / "nope.yaml")


def test_huge_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * (3 * 1024 * 1024))
    with pytest.raises(RulesError, match="larger than"):
        read_yaml_file(path)


def test_empty_document_is_none():
    assert load_yaml("", "f.yaml").data is None


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: 1\nb: x\x07y\n", 2), ("a:\x00 1\n", 1), ('a: 1\nb: 2\nc: "\x1b[31m"\n', 3)],
    ids=["bell", "nul", "escape"],
)
def test_control_characters_are_located_problems(text, line):
    # PyYAML's reader rejects them while being built, before parsing starts.
    with pytest.raises(RulesError) as info:
        load_yaml(text, "f.yaml")
    (problem,) = info.value.problems
    assert problem.line == line
    assert "invisible control character" in problem.message


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 5000 + "]" * 5000, "a: " + "{b: " * 3000 + "1" + "}" * 3000],
    ids=["lists", "mappings"],
)
def test_deep_nesting_is_refused_instead_of_exhausting_the_stack(text):
    with pytest.raises(RulesError, match="indented more than 32 levels deep"):
        load_yaml(text, "f.yaml")


def test_nesting_within_the_limit_is_read():
    assert load_yaml("a: " + "[" * 30 + "]" * 30, "f.yaml").problems == []
