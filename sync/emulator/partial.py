"""Partial responses: the ``fields`` and ``exclude_fields`` query parameters.

Every Mailchimp API 3.0 answer can be cut down to the fields a caller needs:
"a comma-separated list of fields to return" (``fields``) or "to exclude"
(``exclude_fields``), "parameters of sub-objects with dot notation" (the
official client's own docstrings, e.g. ``ListsApi.get_list_member``). A path
that goes through a list applies to each of its items:
``new_members.email_address`` keeps the address of every new member.
``docs/emulator.md`` cites the sources.

Only a successful answer that is a JSON object is cut; an error
(``application/problem+json``) always comes whole. A name that the answer
does not have selects nothing, and is no error: an assumption (no source
says what Mailchimp does then), and mailsync never asks for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: A tree of dotted paths: ``{"new_members": {"email_address": {}}}``; an empty
#: tree means "the whole value".
Paths = dict[str, "Paths"]


def parse_paths(text: str) -> Paths:
    """``a.b,c`` as a tree of names; blanks around names are ignored."""
    tree: Paths = {}
    for path in text.split(","):
        names = [name.strip() for name in path.split(".")]
        if not all(names):
            continue
        node = tree
        for name in names[:-1]:
            # A path that stops at a name already selected whole stays whole.
            if name in node and not node[name]:
                break
            node = node.setdefault(name, {})
        else:
            node[names[-1]] = {}
    return tree


def keep(value: Any, paths: Paths) -> Any:
    """Only ``paths`` of ``value`` (through lists, item by item)."""
    if not paths:
        return value
    if isinstance(value, list):
        return [keep(item, paths) for item in value]
    if not isinstance(value, Mapping):
        return value
    return {name: keep(value[name], sub) for name, sub in paths.items() if name in value}


def drop(value: Any, paths: Paths) -> Any:
    """``value`` without ``paths`` (through lists, item by item)."""
    if isinstance(value, list):
        return [drop(item, paths) for item in value]
    if not isinstance(value, Mapping):
        return value
    out = {}
    for name, item in value.items():
        sub = paths.get(name)
        if sub is None:
            out[name] = item
        elif sub:
            out[name] = drop(item, sub)
        # An empty tree: the field itself is dropped.
    return out


def partial_response(body: Any, query: Mapping[str, str]) -> Any:
    """``body`` as the query's ``fields`` and ``exclude_fields`` ask for it."""
    if not isinstance(body, Mapping):
        return body
    fields = query.get("fields")
    if fields:
        body = keep(body, parse_paths(fields))
    excluded = query.get("exclude_fields")
    if excluded:
        body = drop(body, parse_paths(excluded))
    return body
