"""Validation of rule files: every problem found, located and explained."""

import textwrap
from datetime import timedelta

import pytest

from sync.exceptions import RulesError
from sync.rules.model import Mode
from sync.rules.schema import load_rules, parse_rules

BASE = """\
version: 1
ladders:
  nurture: {_H24: 24h, _J7: 7d}
entities:
  user:
    facts:
      has_wallet: bool
      first_name: string
    actions:
      signup: {enters: registered, code: welcome, event: welcome}
      paid: {enters: money_ok}
    statuses:
      registered: {ladder: nurture}
      money_ok: {ladder: nurture, then: {after: 8d, enter: registered}}
    reinit:
      - registered: not has_wallet
      - money_ok: otherwise
    merge_fields:
      MMERGE25: status
      FNAME: first_name
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(textwrap.dedent(text), "r.yaml")
    return [str(p) for p in info.value.problems]


def test_base_is_valid():
    ruleset = parse_rules(BASE)
    user = ruleset.entity("user")
    assert user.mode is Mode.ACTIONS
    assert user.status_names == (
        "registered",
        "registered_H24",
        "registered_J7",
        "money_ok",
        "money_ok_H24",
        "money_ok_J7",
    )
    then = user.states["money_ok"].then
    assert then is not None
    assert then.after == timedelta(days=8)
    assert ruleset.warnings == ()


# Each case: a replacement applied to BASE, and the message expected (file:line: path: text).
CASES = [
    (
        "typo in entered status",
        ("{enters: money_ok}", "{enters: mony_ok}"),
        "r.yaml:11: entities ==> user ==> actions ==> paid ==> enters: "
        "unknown status 'mony_ok' (did you mean 'money_ok'?)",
    ),
    (
        "typo in then target",
        ("enter: registered}", "enter: registred}"),
        "r.yaml:14: entities ==> user ==> statuses ==> money_ok ==> then ==> enter: "
        "unknown status 'registred' (did you mean 'registered'?)",
    ),
    (
        "bad duration",
        ("after: 8d", "after: soon"),
        "r.yaml:14: entities ==> user ==> statuses ==> money_ok ==> then ==> after: "
        "expected a duration like 10min, 3h, 7d or 12w, found 'soon'",
    ),
    (
        "ambiguous minutes",
        ("_J7: 7d", "_J7: 7m"),
        "`m` is ambiguous: write 7min for 7 minutes, or 210d for 7 months",
    ),
    (
        "unknown ladder",
        ("registered: {ladder: nurture}", "registered: {ladder: nuture}"),
        "r.yaml:13: entities ==> user ==> statuses ==> registered ==> ladder: "
        "unknown ladder 'nuture' (did you mean 'nurture'?); declared ladders: nurture",
    ),
    (
        "ladder out of order",
        ("{_H24: 24h, _J7: 7d}", "{_H24: 24h, _J7: 12h}"),
        "r.yaml:3: ladders ==> nurture ==> _J7: steps must come in time order",
    ),
    (
        "then before last step",
        ("after: 8d", "after: 2d"),
        "'then' must come after the last ladder step (_J7 at 7d), found 2d",
    ),
    (
        "unknown fact in reinit",
        ("not has_wallet", "not has_walet"),
        "r.yaml:16: entities ==> user ==> reinit ==> 1: in 'not has_walet' at column 5: "
        "unknown fact 'has_walet' (did you mean 'has_wallet'?)",
    ),
    (
        "merge tag too long",
        ("MMERGE25: status", "MMERGE25XYZ: status"),
        "r.yaml:19: entities ==> user ==> merge_fields ==> MMERGE25XYZ: a merge tag has 1 to 10",
    ),
    (
        "merge tag lower case",
        ("FNAME: first_name", "fname: first_name"),
        "merge_fields ==> fname: a merge tag has 1 to 10",
    ),
    (
        "merge field from unknown fact",
        ("FNAME: first_name", "FNAME: firstname"),
        "unknown value 'firstname' (did you mean 'first_name'?)",
    ),
    (
        "event name too long",
        ("event: welcome}", "event: welcome_welcome_welcome_welcome}"),
        "r.yaml:10: entities ==> user ==> actions ==> signup ==> event ==> name: "
        "a Mailchimp event name has 2 to 30",
    ),
    (
        "event name with a dot",
        ("event: welcome}", "event: sign.up}"),
        "a Mailchimp event name has 2 to 30",
    ),
    (
        "unknown key",
        ("    reinit:", "    renit:"),
        "r.yaml:15: entities ==> user ==> renit: unknown key 'renit' (did you mean 'reinit'?)",
    ),
    (
        "unknown fact type",
        ("has_wallet: bool", "has_wallet: boolean"),
        "expected a fact type (bool, number, string, instant) (did you mean 'bool'?)",
    ),
    (
        "duplicate key",
        ("      paid: {enters: money_ok}", "      paid: {enters: money_ok}\n      paid: {}"),
        "r.yaml:12: entities ==> user ==> actions: `paid` appears twice here (first on line 11); "
        "keep only one",
    ),
    (
        "line after otherwise",
        (
            "      - money_ok: otherwise",
            "      - money_ok: otherwise\n      - registered: has_wallet",
        ),
        "never used: an 'otherwise' line above always matches",
    ),
    (
        "zero-delay cycle",
        (
            "money_ok: {ladder: nurture, then: {after: 8d, enter: registered}}",
            "money_ok: {then: {after: 0, enter: limbo}}\n"
            "      limbo: {then: {after: 0, enter: money_ok}}",
        ),
        "form a cycle with no delay",
    ),
    (
        "status colliding with a step",
        ("      money_ok: {ladder", "      registered_H24: {}\n      money_ok: {ladder"),
        "status 'registered_H24' is also a step of 'registered'",
    ),
    (
        "reserved fact name",
        ("first_name: string", "now: string"),
        "a fact name is a word",
    ),
    (
        "yaml syntax",
        ("{_H24: 24h, _J7: 7d}", "{_H24: 24h, _J7: 7d"),
        "r.yaml:3: the { opened on this line is never closed; add } at the end of what it holds",
    ),
]


@pytest.mark.parametrize(("name", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_rules_are_explained(name, change, expected):
    old, new = change
    assert old in BASE, name
    found = problems(BASE.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    text = BASE.replace("mony", "x").replace("{enters: money_ok}", "{enters: mony_ok}")
    text = text.replace("not has_wallet", "not has_walet").replace("after: 8d", "after: soon")
    assert len(problems(text)) == 3


def test_unreachable_status_is_a_warning_not_an_error():
    ruleset = parse_rules(
        BASE.replace("      money_ok: {ladder", "      orphan: {}\n      money_ok: {ladder")
    )
    (warning,) = ruleset.warnings
    assert warning.warning
    assert "orphan" in str(warning)
    assert "no action, condition, re-initialisation or 'then' ever enters this status" in str(
        warning
    )


def test_loop_must_go_back_to_an_existing_earlier_step():
    text = BASE.replace(
        "money_ok: {ladder: nurture, then: {after: 8d, enter: registered}}",
        "money_ok: {ladder: nurture, loop: {after: 8d, back_to: _J15}}",
    )
    assert any("expected a step of this status's ladder" in p for p in problems(text))
    text = text.replace("_J15", "_J7")
    assert any("going back to the last step changes nothing" in p for p in problems(text))


CONDITIONS = """\
entities:
  match:
    since: created_at
    facts: {created_at: instant, start_at: instant, n: number}
    statuses:
      started: now >= start_at
      big: n > 3
      waiting: {when: otherwise}
"""


def test_condition_mode_is_detected():
    match = parse_rules(CONDITIONS).entity()
    assert match.mode is Mode.CONDITIONS
    assert [c.state for c in match.choices] == ["started", "big", "waiting"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("n > 3", "now > start_at"), "use 'now >= X' or 'now < X'"),
        (
            (
                "      waiting: {when: otherwise}",
                "      waiting: {when: otherwise}\n      late: n > 9",
            ),
            "never chosen: 'waiting' above it says 'otherwise'",
        ),
        (("since: created_at", "since: n"), "expected the name of an instant fact"),
        (
            ("statuses:", "actions: {go: {enters: big}}\n    statuses:"),
            "actions cannot enter statuses here",
        ),
        (
            ("statuses:", "reinit:\n      - big: n > 1\n    statuses:"),
            "re-initialisation applies to statuses entered by actions",
        ),
    ],
)
def test_condition_mode_problems(change, expected):
    old, new = change
    assert old in CONDITIONS
    assert any(expected in p for p in problems(CONDITIONS.replace(old, new, 1)))


def test_not_a_mapping():
    assert any("expected `entities:` at the top of the file" in p for p in problems("- a\n- b\n"))


@pytest.mark.parametrize(
    "path", ["rules.yaml", "examples/littleworld/rules.yaml", "examples/rallia/rules.yaml"]
)
def test_shipped_rule_files_are_valid_without_warnings(path):
    assert load_rules(path).warnings == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An entity with no statuses at all used to crash the whole-entity checks.
        (
            "entities:\n  user: {}\n",
            "r.yaml:2: entities ==> user ==> statuses: expected the statuses",
        ),
        (
            "entities:\n  user:\n    facts: {a: bool}\n",
            "r.yaml:3: entities ==> user ==> statuses: expected the statuses",
        ),
        # A list or mapping where a name is expected used to raise "unhashable type".
        (
            "entities:\n  user:\n    facts: {a: [bool]}\n    statuses: {s: {}}\n",
            "r.yaml:3: entities ==> user ==> facts ==> a: expected a fact type",
        ),
        (
            "entities:\n  user:\n    since: [a]\n    statuses: {s: {}}\n",
            "r.yaml:3: entities ==> user ==> since: expected the name of an instant fact",
        ),
        (
            "entities:\n  user:\n    actions:\n"
            "      a: {event: {name: ev, properties: {p: {x: 1}}}}\n"
            "    statuses: {s: {}}\n",
            "r.yaml:4: entities ==> user ==> actions ==> a ==> event ==> properties ==> p: "
            "unknown fact",
        ),
    ],
    ids=["no-statuses", "facts-only", "list-as-type", "list-as-since", "mapping-as-property"],
)
def test_wrong_shapes_are_problems_not_crashes(text, expected):
    assert any(p.startswith(expected) for p in problems(text)), problems(text)
