"""The layout of a rule file, and what a misplaced name says about indentation.

A line indented one step too little or too much is still valid YAML: a
dedented ``then:`` under a status becomes a *status* named ``then``, an
over-indented ``reinit:`` becomes a setting of the last status. Reported as
"unknown status" or "unknown key" such slips send the reader hunting for a
typo. Because every level of a rule file has its own known names, a name that
is known *at another level* is almost surely an indentation slip; the
functions here say so, in words, with the fix.
"""

from __future__ import annotations

import difflib

TOP_KEYS = ("version", "ladders", "entities")
ENTITY_KEYS = (
    "description",
    "since",
    "facts",
    "derived",
    "actions",
    "statuses",
    "reinit",
    "merge_fields",
)
ACTION_KEYS = ("enters", "code", "event", "description")
STATE_KEYS = ("when", "ladder", "then", "loop", "event", "tags", "description")
THEN_KEYS = ("after", "enter")
LOOP_KEYS = ("after", "back_to")

#: Entity sections that hold named things, and what those things are called.
GROUPS = {
    "facts": "a fact",
    "derived": "a derived fact",
    "actions": "an action",
    "statuses": "a status",
    "merge_fields": "a merge tag",
}

#: Level of a group of settings → the names allowed there.
LEVELS = {
    "top": TOP_KEYS,
    "entity": ENTITY_KEYS,
    "status": STATE_KEYS,
    "action": ACTION_KEYS,
    "then": THEN_KEYS,
    "loop": LOOP_KEYS,
}


def _section_only(name: str) -> bool:
    """A section of the entity that is not also a setting of a status or an action."""
    return name in ENTITY_KEYS and name not in STATE_KEYS and name not in ACTION_KEYS


def misplaced_name(name: object, group: str, previous: str | None) -> str | None:
    """Why ``name``, found as one of the named things of entity section ``group``
    (``statuses``, ``actions``, ...), is probably an indentation slip; None if not.
    ``previous`` is the name just above it in that section."""
    if not isinstance(name, str) or group not in GROUPS:
        return None
    what = GROUPS[group]
    if _section_only(name):
        return (
            f"`{name}` is indented like {what} name, but it is a section of the entity: "
            f"move it left to line up with `{group}`"
        )
    own = {"statuses": STATE_KEYS, "actions": ACTION_KEYS}.get(group, ())
    if name in own:
        noun = what.split(" ", 1)[1]
        under = f"`{previous}`" if previous else f"the {noun} it belongs to"
        return f"`{name}` is indented like {what} name; indent it under {under}"
    return None


def misplaced_key(
    key: object, level: str, owner: str | None, *, then_line: int | None = None
) -> str | None:
    """Why ``key``, unknown among the settings of ``level`` (owned by ``owner``: the
    entity, status or action they describe), is probably an indentation slip."""
    if not isinstance(key, str):
        return None
    if level == "top" and key in ENTITY_KEYS:
        under = f"under `{owner}`" if owner else "under the entity it belongs to"
        return (
            f"`{key}` starts at the beginning of the line, but it is a section of an "
            f"entity: indent it {under}, like the other sections"
        )
    if level == "entity":
        if key in TOP_KEYS:
            return (
                f"`{key}` is indented as part of the entity `{owner}`, but it is a section "
                "of its own: move it left to the start of the line, like `entities`"
            )
        if key in STATE_KEYS:
            return (
                f"`{key}` is indented like a section of the entity `{owner}`, but it is a "
                "setting of a status: indent it under the status it belongs to"
            )
        if key in ACTION_KEYS:
            return (
                f"`{key}` is indented like a section of the entity `{owner}`, but it is a "
                "setting of an action: indent it under the action it belongs to"
            )
    if level in ("status", "action"):
        group = "statuses" if level == "status" else "actions"
        if _section_only(key):
            return (
                f"`{key}` is indented as part of the {level} `{owner}`, but it is a section "
                f"of the entity: move it left to line up with `{group}`"
            )
        if level == "status" and key in THEN_KEYS + LOOP_KEYS:
            parent = "loop" if key == "back_to" else "then"
            where = f" (line {then_line})" if then_line else ""
            return (
                f"`{key}` is a setting of `{parent}`, indented here like a setting of the "
                f"status `{owner}`: indent it further, under `{parent}`{where}"
            )
        allowed = LEVELS[level]
        if not difflib.get_close_matches(key, allowed, n=1, cutoff=0.6):
            article = "an" if level == "action" else "a"
            return (
                f"`{key}` is not a setting of {'statuses' if level == 'status' else 'actions'} "
                f"({', '.join(allowed)}); if `{key}` is "
                f"{article} {level} of its own, line it up with `{owner}`"
            )
    if level in ("then", "loop") and key in STATE_KEYS:
        return (
            f"`{key}` is indented under `{level}`, but it is a setting of the status "
            f"`{owner}`: line it up with `{level}`"
        )
    return None
