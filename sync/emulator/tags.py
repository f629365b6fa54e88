"""Member tags: ``GET``/``POST …/members/{hash}/tags``, and the tags a body carries.

Tags are applied on creation (``tags`` in a PUT or a batch subscribe item),
replaced by a batch subscribe with ``sync_tags``, and changed one by one
through ``POST …/members/{hash}/tags``; the roster keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sync.emulator.bodies import json_object
from sync.emulator.members import timestamp
from sync.emulator.problems import FieldError, invalid

if TYPE_CHECKING:
    from sync.emulator.audience import Audience


def tag_names(body: Mapping[str, Any]) -> list[str]:
    """The ``tags`` of a member body: a list of names (anything else ignored)."""
    tags = body.get("tags")
    if not isinstance(tags, list):
        return []
    return [t for t in tags if isinstance(t, str) and t]


def tag_changes(body: Any) -> list[dict[str, Any]]:
    """The ``tags`` of a ``POST …/tags`` body, each ``{name, status}`` checked."""
    body = json_object(body)
    tags = body.get("tags")
    problems: list[FieldError] = []
    if not isinstance(tags, list):
        raise invalid(errors=[FieldError("tags", "Schema describes array")])
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag["name"]:
            problems.append(FieldError(f"tags.{i}.name", "This value should not be blank."))
        elif tag.get("status") not in ("active", "inactive"):
            problems.append(FieldError(f"tags.{i}.status", "Value is not one of: active, inactive"))
    if problems:
        raise invalid(errors=problems)
    return tags


def update_tags(audience: Audience, key: str, body: Any) -> None:
    """``POST …/members/{hash}/tags``: each tag made active or inactive."""
    tags = tag_changes(body)
    with audience.lock:
        member = audience.roster.existing(key)
        for tag in tags:
            if tag["status"] == "active":
                audience.roster.add_tag(member, tag["name"])
            else:
                member.tags.pop(tag["name"], None)


def tags_json(audience: Audience, key: str) -> dict[str, Any]:
    """``GET …/members/{hash}/tags``."""
    with audience.lock:
        member = audience.roster.existing(key)
        tags = [
            {"id": audience.roster.tag_ids[name], "name": name, "date_added": timestamp(added)}
            for name, added in member.tags.items()
        ]
        return {"tags": tags, "total_items": len(tags), "_links": []}
