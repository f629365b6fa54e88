"""Broken rule files as marketers write them: every one is refused clearly.

``tests/bad_rules/`` holds one small, realistic mistake per file: its first
line says what the marketer did (``# mistake: wallet_ok one space to the
left``), and ``NAME.expected`` beside it holds, byte for byte, what
``mailsync check --rules NAME.yaml`` must print on stderr. Every message names
the line and says what to do, in words: no parser vocabulary (mapping, scalar,
token, block). The check must exit 2 and never show a traceback. Files too big
to commit (over the size limit, 10 000 statuses) are generated here.

The fuzz tests below throw random text and random mutations of the shipped
rule files at ``mailsync check``: whatever comes in, the answer is exit 0 or
2, with no traceback, in bounded time. ``MAILSYNC_FUZZ_EXAMPLES`` raises the
number of examples (and makes them random rather than derandomized).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.cli import main
from sync.rules.loader import MAX_BYTES

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "bad_rules"
SHIPPED = [
    ROOT / "rules.yaml",
    ROOT / "examples/littleworld/rules.yaml",
    ROOT / "examples/rallia/rules.yaml",
]
MISTAKE = re.compile(rb"^# mistake: .+$")
LOCATED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<message>.+)$")
#: Words of the YAML parser's trade that a marketer should never have to read.
PARSER_WORDS = re.compile(r"\b(mapping|scalar|token|block|node|stream|YAML syntax)\b", re.I)


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def expected_output(path: Path) -> str:
    """What ``mailsync check --rules NAME.yaml`` must print on stderr, run from the corpus."""
    return path.with_suffix(".expected").read_text()


def expectation(path: Path) -> tuple[int, str]:
    """Line and message of the first error ``path`` must get."""
    first = LOCATED.match(expected_output(path).splitlines()[0])
    assert first is not None, path
    return int(first["line"]), first["message"]


def run(*argv: str) -> tuple[int, str, str]:
    """``mailsync ARGV`` in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_no_crash(output: str) -> None:
    assert "Traceback" not in output
    assert "Internal error" not in output
    assert "This is a bug in mailsync" not in output


def test_the_corpus_is_large_and_every_file_says_what_mistake_it_shows():
    files = corpus()
    assert len(files) >= 100
    for path in files:
        assert MISTAKE.match(path.read_bytes().split(b"\n", 1)[0]), path.name
        assert path.with_suffix(".expected").exists(), f"{path.name} has no .expected beside it"
    orphans = {p.stem for p in CORPUS.glob("*.expected")} - {p.stem for p in files}
    assert not orphans


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_check_answers_each_mistake_with_exactly_the_pinned_message(path, monkeypatch):
    monkeypatch.chdir(CORPUS)
    code, out, err = run("check", "--rules", path.name)
    assert code == 2, err
    assert_no_crash(out + err)
    assert err == expected_output(path)


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_pinned_messages_are_located_and_free_of_parser_words(path):
    lines = expected_output(path).splitlines()
    assert re.fullmatch(r"\d+ errors? found\.", lines[-1])
    for line in lines[:-1]:
        located = LOCATED.match(line)
        assert located is not None, line
        assert located["file"] == path.name, line
        assert not PARSER_WORDS.search(located["message"]), line


def test_a_file_over_the_size_limit_is_refused_quickly(tmp_path):
    path = tmp_path / "rules.yaml"
    with path.open("w") as out:
        out.write("# a rule file pasted into itself until it weighs 3 MB\nentities:\n")
        out.write("  # filler\n" * (3 * 1024 * 1024 // 11))
    assert path.stat().st_size > MAX_BYTES
    started = time.monotonic()
    code, _, err = run("check", "--rules", str(path))
    assert time.monotonic() - started < 2
    assert code == 2
    assert_no_crash(err)
    assert f"{path}: file is larger than 2048 KiB" in err


def test_ten_thousand_statuses_are_checked_quickly_and_clearly(tmp_path):
    # A generated file of valid statuses: accepted, with a plain summary line.
    lines = ["entities:", "  user:", "    facts: {score: number}", "    statuses:"]
    lines += [f"      level_{i}: score >= {10_000 - i}" for i in range(10_000)]
    lines += ["      beginner: {when: otherwise}", "    merge_fields: {MMERGE25: status}"]
    path = tmp_path / "rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    code, out, err = run("check", "--rules", str(path))
    assert time.monotonic() - started < 20
    assert code == 0, err
    assert_no_crash(out + err)
    assert "10001 statuses entered by conditions" in out
    assert f"{path}: OK" in out


# -- mailsync test on rules-test files whose rule file is broken ------------------------

BROKEN_FOR_RULETEST = [
    "unknown_status_typo",
    "duration_soon",
    "yaml_tab_indent",
    "condition_dunder_import",
    "not_utf8",
    "empty_file",
]


@pytest.mark.parametrize("name", BROKEN_FOR_RULETEST)
def test_rules_test_naming_a_broken_rule_file_exits_2_naming_that_file(tmp_path, name):
    rules = CORPUS / f"{name}.yaml"
    line, fragment = expectation(rules)
    test_file = tmp_path / "rules.test.yaml"
    test_file.write_text(
        textwrap.dedent(
            f"""\
            rules: {rules}
            tests:
              - name: signup
                events: [{{action: signup, at: "2026-01-01T10:00:00Z"}}]
                expect: [{{at: "2026-01-01T10:00:00Z", status: registered}}]
            """
        )
    )
    code, out, err = run("test", str(test_file))
    assert code == 2
    assert_no_crash(out + err)
    assert any(m.startswith(f"{rules}:{line}: ") and fragment in m for m in err.splitlines()), err


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("rules: missing.yaml\ntests: []\n", None, "cannot read file"),
        ("rules: RULES\ntests:\n\t- name: x\n", 3, "a tab is used here"),
        (
            "rules: RULES\ntests:\n  - name: naive\n    events: []\n"
            "    expect: [{at: '2026-01-01T10:00:00', status: null}]\n",
            5,
            "offset",
        ),
        ("rules: RULES\nrules: RULES\ntests: []\n", 2, "appears twice"),
    ],
    ids=["missing-rules", "tab", "naive-instant", "duplicate-key"],
)
def test_broken_rules_test_files_exit_2_with_located_messages(tmp_path, body, line, fragment):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "entities:\n  user:\n    actions: {signup: {enters: registered}}\n"
        "    statuses: {registered: {}}\n"
    )
    test_file = tmp_path / "rules.test.yaml"
    test_file.write_text(body.replace("RULES", str(rules)))
    code, out, err = run("test", str(test_file))
    assert code == 2
    assert_no_crash(out + err)
    where = str(tmp_path / "missing.yaml") if line is None else f"{test_file}:{line}: "
    assert any(m.startswith(where) and fragment in m for m in err.splitlines()), err


# -- fuzzing -------------------------------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("MAILSYNC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES or 120,
    derandomize=not FUZZ_EXAMPLES,
    deadline=None,  # bounded below by an explicit, generous time limit instead
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: One check of a small file takes milliseconds; this only catches hangs.
SECONDS_PER_CHECK = 5.0

SHIPPED_LINES = [p.read_text().splitlines() for p in SHIPPED]
# fmt: off
YAMLISH = st.sampled_from(
    [
        "entities:", "  user:", "    statuses:", "    actions:", "    facts:", "    reinit:",
        "      registered: {ladder: nurture}", "      - money_ok: otherwise", "ladders:",
        "  nurture: {_H24: 24h, _J7: 7d}", "    merge_fields: {MMERGE25: status}",
        "      signup: {enters: registered, code: welcome, event: welcome}",
        "      expired: now >= start_at and not full", "      x: {when: otherwise}",
        "      then: {after: 0, enter: registered}", "      loop: {after: 31d, back_to: _J15}",
        "- ", ": ", "{", "}", "[", "]", "&a", "*a", "!!python/object", "\t", "'", '"', "#",
        "---", "...", "|", ">", "? ", "%YAML 1.1", "\x00", "\x07", "\ufeff", "é", "😀",
        "__import__('os')", "now > x", "1.5h", "-1h", "99999999999999999999d", "null", "~",
    ]
)
# fmt: on


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    # Not tmp_path: hypothesis runs many examples inside one function-scoped test.
    with tempfile.TemporaryDirectory(prefix="mailsync-fuzz-") as directory:
        yield Path(directory) / "rules.yaml"


def check_never_crashes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    started = time.monotonic()
    code, out, err = run("check", "--rules", str(path))
    assert time.monotonic() - started < SECONDS_PER_CHECK
    assert code in (0, 2), out + err
    assert_no_crash(out + err)


@FUZZ
@given(
    pieces=st.lists(
        st.one_of(YAMLISH, st.text(max_size=12), st.just("\n"), st.just("  ")), max_size=60
    )
)
def test_fuzz_random_yamlish_text_never_crashes_check(pieces):
    with scratch() as path:
        check_never_crashes(path, "".join(pieces).encode("utf-8", errors="surrogatepass"))


MUTATION = st.tuples(
    st.sampled_from(["delete", "duplicate", "swap", "flip", "indent", "dedent", "insert"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
    st.one_of(YAMLISH, st.characters(codec="utf-8")),
)


def mutate(lines: list[str], mutations: list[tuple[str, int, int, str]]) -> list[str]:
    lines = list(lines)
    for op, i, j, text in mutations:
        if not lines:
            break
        i %= len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j %= len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "flip" and lines[i]:
            k = j % len(lines[i])
            lines[i] = lines[i][:k] + text[:1] + lines[i][k + 1 :]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        else:
            lines.insert(i, text)
    return lines


@FUZZ
@given(
    which=st.integers(min_value=0, max_value=len(SHIPPED) - 1),
    mutations=st.lists(MUTATION, min_size=1, max_size=6),
)
def test_fuzz_mutated_shipped_rules_never_crash_check(which, mutations):
    text = "\n".join(mutate(SHIPPED_LINES[which], mutations)) + "\n"
    with scratch() as path:
        check_never_crashes(path, text.encode("utf-8", errors="surrogatepass"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_the_fuzz_starts_from_valid_files(path):
    assert run("check", "--rules", str(path))[0] == 0
