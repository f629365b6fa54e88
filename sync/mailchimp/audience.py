"""Audience checks for ``mailsync check``: the key, the audience, its merge fields.

``check_audience`` and ``fix_merge_fields`` return human-readable, located
problem strings (or what was done), one line each.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sync.exceptions import FatalError
from sync.mailchimp.answers import Answer, answer_of
from sync.rules.model import Entity

log = logging.getLogger(__name__)


#: Merge-field types that accept what the rules push, per kind of value.
SUITABLE_TYPES: Mapping[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "number": frozenset({"number", "text"}),
    "date": frozenset({"date", "text"}),
    "url": frozenset({"url", "text"}),
}

_MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")


def _call_once(what: str, fn: Callable[[], object]) -> Answer:
    answer = answer_of(fn, scope="run")
    if not answer.ok:
        log.info("%s: %s", what, answer.reason)
    return answer


def wanted_merge_fields(entities: Iterable[Entity]) -> dict[str, str]:
    """Merge tag -> kind of value the rules push (``text``, ``number``,
    ``date``, ``url``), over ``entities``: the ``wanted`` of ``check_audience``
    and ``fix_merge_fields``."""
    return {f.tag: f.type for e in entities for f in e.merge_fields}


def check_key(client: Any) -> list[str]:
    """Problems with the API key (``GET /ping``); empty when it works."""
    answer = _call_once("GET /ping", lambda: client.ping.get())
    if answer.ok:
        return []
    return [f"Mailchimp API key: {answer.reason} ({answer.kind.value})"]


def existing_merge_fields(client: Any, list_id: str) -> dict[str, str]:
    """Merge tag -> type of the audience; raises ``FatalError`` if unreadable."""
    answer = _call_once(
        f"GET /lists/{list_id}/merge-fields",
        lambda: client.lists.get_list_merge_fields(list_id, count=1000),
    )
    if not answer.ok or not isinstance(answer.body, Mapping):
        raise FatalError(f"audience {list_id}: cannot read merge fields: {answer.reason}")
    return {
        str(f.get("tag")): str(f.get("type"))
        for f in answer.body.get("merge_fields", [])
        if isinstance(f, Mapping)
    }


def check_audience(client: Any, list_id: str, wanted: Mapping[str, str]) -> list[str]:
    """Every problem that would stop a push to ``list_id``.

    ``wanted`` maps each merge tag the rules push to the kind of value pushed
    (``text``, ``number``, ``date``, ``url``). Returns located, human-readable
    problems; an empty list means the audience is ready.
    """
    problems = check_key(client)
    if problems:
        return problems
    answer = _call_once(f"GET /lists/{list_id}", lambda: client.lists.get_list(list_id))
    if not answer.ok:
        return [f"audience {list_id}: {answer.reason}"]
    try:
        existing = existing_merge_fields(client, list_id)
    except FatalError as exc:
        return [str(exc)]
    for tag, kind in sorted(wanted.items()):
        where = f"audience {list_id}: merge tag {tag}"
        if not _MERGE_TAG.match(tag):
            problems.append(f"{where}: invalid tag (1-10 upper-case letters, digits or _)")
        elif tag not in existing:
            problems.append(
                f"{where}: does not exist (the rules push {kind} values); "
                "`mailsync check --fix` creates it"
            )
        elif existing[tag] not in SUITABLE_TYPES.get(kind, frozenset({kind})):
            problems.append(
                f"{where}: has type {existing[tag]!r}, unsuitable for the {kind} values "
                "the rules push; change its type in Mailchimp or the rules"
            )
    return problems


def fix_merge_fields(client: Any, list_id: str, wanted: Mapping[str, str]) -> list[str]:
    """Create the merge fields of ``wanted`` that are missing; returns what was
    done, one line each. Existing fields are never changed."""
    existing = existing_merge_fields(client, list_id)
    done: list[str] = []
    for tag, kind in sorted(wanted.items()):
        if tag in existing or not _MERGE_TAG.match(tag):
            continue
        body = {"tag": tag, "name": tag, "type": kind, "required": False, "public": False}
        answer = _call_once(
            f"POST /lists/{list_id}/merge-fields",
            lambda body=body: client.lists.add_list_merge_field(list_id, body),  # type: ignore[misc]
        )
        if answer.ok:
            done.append(f"audience {list_id}: created merge field {tag} ({kind})")
        else:
            done.append(f"audience {list_id}: could not create merge field {tag}: {answer.reason}")
    return done
