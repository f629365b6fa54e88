"""Batch subscribe, ``POST /lists/{id}``: up to 500 members in one call.

The request is refused whole (400) only when it does not fit the schema;
otherwise each member gets its own outcome, created, updated or an entry in
``errors[]`` (``ERROR_CONTACT_EXISTS`` for an existing member without
``update_existing``, ``ERROR_GENERIC`` with Mailchimp's text for the rest),
by the same rules as a ``PUT`` of that member.
"""

from __future__ import annotations

from typing import Any

from sync.addresses import subscriber_hash
from sync.emulator.audience import Audience
from sync.emulator.bodies import json_object
from sync.emulator.members import REQUEST_STATUSES
from sync.emulator.problems import ApiProblem, FieldError, invalid
from sync.emulator.roster import apply_profile
from sync.emulator.tags import tag_names

BATCH_MAX = 500
ERROR_CONTACT_EXISTS = "ERROR_CONTACT_EXISTS"
ERROR_GENERIC = "ERROR_GENERIC"


def batch_subscribe(
    audience: Audience, body: Any, *, skip_merge_validation: bool, skip_duplicate_check: bool
) -> dict[str, Any]:
    """``POST /lists/{id}``: per-member outcomes, never a whole failure."""
    body = json_object(body)
    items = body.get("members")
    if not isinstance(items, list):
        raise invalid(errors=[FieldError("members", "Schema describes array")])
    if len(items) > BATCH_MAX:
        raise invalid(
            errors=[
                FieldError(
                    "members",
                    f"At most {BATCH_MAX} members per call, {len(items)} found",
                )
            ]
        )
    _check_batch_schema(items)
    update_existing = body.get("update_existing") is True
    sync_tags = body.get("sync_tags") is True
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    roster = audience.roster
    with audience.lock:
        for item in items:
            email = item["email_address"]
            h = subscriber_hash(email)
            if h in seen:
                if not skip_duplicate_check:
                    errors.append(
                        _batch_error(email, f"{email} appears more than once in this request")
                    )
                continue
            seen.add(h)
            member = roster.get(h)
            try:
                if member is None:
                    roster.check_new_email(email)
                    values = audience.merge_values(item, None, skip_merge_validation)
                    roster.check_may_subscribe(h, None, email, item["status"])
                    new = roster.create(email, item["status"], values, tag_names(item), by_api=True)
                    apply_profile(new, item)
                    created.append(audience.render(new))
                    continue
                if not update_existing:
                    errors.append(
                        _batch_error(
                            email,
                            f"{email} is already a list member, do you want to update? "
                            "please provide update_existing:true in the request body",
                            ERROR_CONTACT_EXISTS,
                        )
                    )
                    continue
                roster.check_may_subscribe(h, member, email, item["status"])
                values = audience.merge_values(item, member.merge_fields, skip_merge_validation)
                roster.update(member, item["status"], values)
                if sync_tags:
                    roster.replace_tags(member, tag_names(item))
                apply_profile(member, item)
                updated.append(audience.render(member))
            except ApiProblem as problem:
                errors.append(_batch_problem(email, problem))
    return {
        "new_members": created,
        "updated_members": updated,
        "errors": errors,
        "total_created": len(created),
        "total_updated": len(updated),
        "error_count": len(errors),
        "_links": [],
    }


def _check_batch_schema(items: list[Any]) -> None:
    problems: list[FieldError] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(FieldError(f"members.{i}", "Schema describes object"))
            continue
        if not isinstance(item.get("email_address"), str):
            problems.append(
                FieldError(
                    f"members.{i}.email_address", "Required property email_address is missing"
                )
            )
        if "status" not in item:
            problems.append(
                FieldError(f"members.{i}.status", "Required property status is missing")
            )
        elif item["status"] not in REQUEST_STATUSES:
            problems.append(
                FieldError(
                    f"members.{i}.status",
                    f"Value is not one of: {', '.join(REQUEST_STATUSES)}",
                )
            )
    if problems:
        raise invalid(errors=problems)


def _batch_error(email: str, error: str, code: str = ERROR_GENERIC) -> dict[str, Any]:
    return {
        "email_address": email,
        "error": error,
        "error_code": code,
        "field": "",
        "field_message": "",
    }


def _batch_problem(email: str, problem: ApiProblem) -> dict[str, Any]:
    entry = _batch_error(email, problem.detail)
    if problem.errors:
        entry["field"] = problem.errors[0].field
        entry["field_message"] = problem.errors[0].message
    return entry
