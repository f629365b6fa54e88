"""The project's own rule files pass their own rules-test files."""

from pathlib import Path

from sync.cli import main

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = sorted([ROOT / "rules.test.yaml", *(ROOT / "examples").glob("*/rules*.test.yaml")])


def test_there_is_a_test_file_per_entity_type():
    names = {p.relative_to(ROOT).as_posix() for p in TEST_FILES}
    assert names == {
        "rules.test.yaml",
        "examples/littleworld/rules.test.yaml",
        "examples/littleworld/rules.user.test.yaml",
        "examples/rallia/rules.test.yaml",
        "examples/rallia/rules.participant.test.yaml",
    }


def test_every_shipped_rules_test_passes(capsys):
    assert main(["test", *map(str, TEST_FILES)]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    passed = int(summary.split()[0])
    assert summary == f"{passed} passed, 0 failed"
    assert passed > 400
