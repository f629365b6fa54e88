"""The shape checks every endpoint shares: a JSON object body, paging, instants.

Each answers Mailchimp's 400 "Invalid Resource" with the field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sync.emulator.problems import FieldError, invalid

PAGE_MAX = 1000


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(errors=[FieldError("", "Schema describes object")])
    return body


def page(query: Mapping[str, str], default_count: int) -> tuple[int, int]:
    try:
        count = int(query.get("count", default_count))
        offset = int(query.get("offset", 0))
    except ValueError as exc:
        raise invalid(errors=[FieldError("count", "Schema describes integer")]) from exc
    if count < 0 or count > PAGE_MAX:
        raise invalid(errors=[FieldError("count", f"Must be between 0 and {PAGE_MAX}")])
    if offset < 0:
        raise invalid(errors=[FieldError("offset", "Must be 0 or more")])
    return count, offset


def is_instant(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def instant(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not is_instant(raw):
        raise invalid(errors=[FieldError(name, "This value should be a valid ISO 8601 date")])
    # Mailchimp ignores the offset and reads the wall-clock time as UTC
    # (mailchimp/mailchimp-client-lib-codegen#241): so does the emulator.
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)
