"""``mailsync check`` and ``mailsync test`` as a marketer meets them: exit codes and messages."""

import textwrap

import pytest

from sync.cli import main

RULES = """\
entities:
  user:
    actions:
      signup: {enters: registered, code: welcome}
    statuses:
      registered: {ladder: {_H24: 24h}}
    merge_fields: {MMERGE28: action_code}
"""


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def write_test(tmp_path, body):
    path = tmp_path / "rules.test.yaml"
    path.write_text("rules: rules.yaml\n" + textwrap.dedent(body))
    return str(path)


def test_check_valid_rules_exits_0(rules, capsys):
    assert main(["check", "--rules", str(rules)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_invalid_rules_exits_2_with_located_messages_and_no_traceback(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("enters: registered", "enters: registred").replace("24h", "soon"))
    assert main(["check", "--rules", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: entities ==> user ==> actions ==> signup ==> enters: unknown status" in err
    assert "(did you mean 'registered'?)" in err
    assert f"{path}:6:" in err
    assert "2 errors found." in err
    assert "Traceback" not in err


def test_check_missing_file_exits_2(tmp_path, capsys):
    assert main(["check", "--rules", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_verbose_shows_traceback_only_for_internal_errors(rules, capsys, monkeypatch):
    import sync.cli.check as check_module

    def boom(path):
        raise RuntimeError("bug")

    monkeypatch.setattr(check_module, "load_rules", boom)
    assert main(["check", "--rules", str(rules)]) == 70
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-v", "check", "--rules", str(rules)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_test_command_all_pass(rules, tmp_path, capsys):
    path = write_test(
        tmp_path,
        """\
        tests:
          - name: ladder
            events: [{action: signup, at: "2026-01-01T10:00:00Z"}]
            expect:
              - {at: "2026-01-02T09:59:59Z", status: registered}
              - {at: "2026-01-02T10:00:00Z", status: registered_H24,
                 merge_fields: {MMERGE28: welcome}}
              - {at: "2025-12-31T00:00:00Z", status: null}
        """,
    )
    assert main(["test", path]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 passed, 0 failed"


def test_test_command_reports_each_failure(rules, tmp_path, capsys):
    path = write_test(
        tmp_path,
        """\
        tests:
          - name: wrong on purpose
            events: [{action: signup, at: "2026-01-01T10:00:00Z"}]
            expect:
              - {at: "2026-01-02T09:59:59Z", status: registered_H24}
              - {at: "2026-01-02T10:00:00Z", status: registered_H24, merge_fields: {MMERGE28: abo}}
              - {at: "2026-01-03T10:00:00Z", status: registered_H24}
        """,
    )
    assert main(["test", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"FAIL {path}:6: wrong on purpose at 2026-01-02T09:59:59+00:00: "
        "expected status registered_H24, got registered",
        f"FAIL {path}:7: wrong on purpose at 2026-01-02T10:00:00+00:00: "
        "expected MMERGE28=abo, got MMERGE28=welcome",
        "1 passed, 2 failed",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'tests:\n  - name: t\n    expect: [{at: "2026-01-01T10:00:00", status: null}]\n',
            "has no offset; add Z (UTC) or +02:00",
        ),
        (
            'tests:\n  - name: t\n    expect: [{at: "2026-01-01T10:00:00Z", status: registred}]\n',
            "unknown status 'registred' (did you mean 'registered'?)",
        ),
        (
            'tests:\n  - name: t\n    events: [{action: sign_up, at: "2026-01-01T10:00:00Z"}]\n'
            '    expect: [{at: "2026-01-01T10:00:00Z", status: null}]\n',
            "unknown action 'sign_up' (did you mean 'signup'?)",
        ),
        (
            "tests:\n  - name: t\n    facts: {wallet: true}\n"
            '    expect: [{at: "2026-01-01T10:00:00Z", status: null}]\n',
            "unknown fact 'wallet'",
        ),
        (
            'tests:\n  - name: t\n    expect: [{at: "2026-01-01T10:00:00Z", status: null, '
            "merge_fields: {MMERGE82: x}}]\n",
            "unknown merge tag 'MMERGE82' (did you mean 'MMERGE28'?)",
        ),
        ("tests: []\n", "expected a non-empty list of tests"),
        ("tests:\n  - name: [unclosed\n", "the [ opened on this line is never closed"),
    ],
)
def test_test_command_invalid_file_exits_2(rules, tmp_path, capsys, body, message):
    path = write_test(tmp_path, body)
    assert main(["test", path]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert path in err
    assert "Traceback" not in err


def test_test_command_invalid_rules_names_the_rule_file(tmp_path, capsys):
    (tmp_path / "rules.yaml").write_text(RULES.replace("24h", "soon"))
    path = write_test(
        tmp_path, 'tests:\n  - name: t\n    expect: [{at: "2026-01-01T10:00:00Z", status: null}]\n'
    )
    assert main(["test", path]) == 2
    assert "rules.yaml:6:" in capsys.readouterr().err
