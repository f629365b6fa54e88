"""Merge fields of an audience: their definitions and the checks on values.

A merge field is a typed column of an audience (``FNAME``, ``SCORE`` …).
Mailchimp creates four on every new audience (FNAME, LNAME, ADDRESS, PHONE),
refuses values that do not fit the field's type, and **silently drops** a
value whose tag the audience does not have: the answer is 200 and the tag is
missing from the returned ``merge_fields`` (recorded answers in
``grouparoo/grouparoo``'s Mailchimp plugin fixtures). Required fields are
enforced on updates as well as on creation unless ``skip_merge_validation``
is true (``drewm/mailchimp-api#298``, ``brandonseydel/MailChimp.Net#312``).
The sink depends on every one of these facts, so :func:`checked_values` is
the one place the emulator applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.emulator.problems import FieldError, invalid

MAX_MERGE_FIELDS = 30
TAG_PATTERN = re.compile(r"[A-Z0-9_]{1,10}")
TYPES = (
    "text",
    "number",
    "address",
    "phone",
    "date",
    "url",
    "imageurl",
    "radio",
    "dropdown",
    "birthday",
    "zip",
)
TEXT_MAX = 255
URL_PATTERN = re.compile(r"https?://\S+", re.IGNORECASE)
ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")

# Python strptime formats for Mailchimp's date_format option values.
DATE_FORMATS = {"MM/DD/YYYY": "%m/%d/%Y", "DD/MM/YYYY": "%d/%m/%Y"}
BIRTHDAY_FORMATS = {"MM/DD": "%m/%d", "DD/MM": "%d/%m"}


@dataclass
class MergeField:
    """One merge field definition, as ``GET /lists/{id}/merge-fields`` shows it."""

    merge_id: int
    tag: str
    name: str
    type: str
    required: bool = False
    default_value: str = ""
    public: bool = True
    display_order: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    help_text: str = ""

    def to_json(self, list_id: str) -> dict[str, Any]:
        return {
            "merge_id": self.merge_id,
            "tag": self.tag,
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default_value": self.default_value,
            "public": self.public,
            "display_order": self.display_order,
            "options": dict(self.options),
            "help_text": self.help_text,
            "list_id": list_id,
            "_links": [],
        }

    def check(self, value: Any) -> str | None:
        """Why ``value`` is refused for this field, or None when it fits.

        An empty string always fits: it is how Mailchimp clears a field.
        """
        if value == "" or value is None:
            return None
        if isinstance(value, bool) or isinstance(value, list):
            return f"Invalid value for {self.type} field"
        if self.type == "address":
            return _check_address(value)
        if isinstance(value, dict):
            return f"Invalid value for {self.type} field"
        text = str(value)
        if self.type == "number":
            return None if _is_number(value) else "Please enter a number"
        if self.type in ("text", "phone", "zip"):
            return (
                None if len(text) <= TEXT_MAX else f"Value must be {TEXT_MAX} characters or fewer"
            )
        if self.type in ("url", "imageurl"):
            return None if URL_PATTERN.fullmatch(text) else "Please enter a valid URL"
        if self.type == "date":
            fmt = DATE_FORMATS.get(str(self.options.get("date_format")), "%m/%d/%Y")
            ok = _parses(text, fmt) or _parses(text, "%Y-%m-%d")
            return None if ok else "Please enter a date"
        if self.type == "birthday":
            fmt = BIRTHDAY_FORMATS.get(str(self.options.get("date_format")), "%m/%d")
            # A leap year, so that 02/29 is a valid birthday.
            return None if _parses(f"{text}/2000", f"{fmt}/%Y") else "Please enter a date"
        if self.type in ("dropdown", "radio"):
            choices = [str(c) for c in self.options.get("choices", [])]
            return None if text in choices else "Please choose one of the offered options"
        return None


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _parses(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _check_address(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "Please enter a complete address"
    if any(not str(value.get(part) or "").strip() for part in ADDRESS_REQUIRED):
        return "Please enter a complete address"
    return None


def default_fields() -> list[MergeField]:
    """The merge fields Mailchimp creates on every new audience: four, as a
    real audience answers in recorded responses (no BIRTHDAY)."""
    return [
        MergeField(1, "FNAME", "First Name", "text", display_order=2, options={"size": 25}),
        MergeField(2, "LNAME", "Last Name", "text", display_order=3, options={"size": 25}),
        MergeField(
            3, "ADDRESS", "Address", "address", display_order=4, options={"default_country": 164}
        ),
        MergeField(
            4, "PHONE", "Phone Number", "phone", display_order=5, options={"phone_format": "none"}
        ),
    ]


def checked_values(
    fields: list[MergeField],
    values: Any,
    *,
    stored: dict[str, Any] | None,
    skip_required: bool = False,
) -> dict[str, Any]:
    """The values of ``values`` that Mailchimp keeps, or ``ApiProblem`` 400.

    Tags the audience does not have are dropped, not refused. A value that
    does not fit its field is refused ("Your merge fields were invalid.",
    one ``errors[]`` entry per field). A required field left empty is
    refused too, on creation (``stored`` is None) and on update (the value
    the member would keep: the one sent, else the stored one), unless
    ``skip_required`` (the ``skip_merge_validation`` query parameter).
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise invalid(errors=[FieldError("merge_fields", "Schema describes object")])
    by_tag = {f.tag: f for f in fields}
    kept = {tag: value for tag, value in values.items() if tag in by_tag}
    problems: list[FieldError] = []
    for tag, value in kept.items():
        why = by_tag[tag].check(value)
        if why is not None:
            problems.append(FieldError(tag, why))
    if not skip_required:
        after = {**(stored or {}), **kept}
        for f in fields:
            if f.required and after.get(f.tag) in (None, "") and not f.default_value:
                problems.append(FieldError(f.tag, "Please enter a value"))
    if problems:
        raise invalid("Your merge fields were invalid.", problems)
    return kept


def new_field(body: Any, existing: list[MergeField]) -> MergeField:
    """Validate a ``POST /merge-fields`` body and build the field it asks for."""
    if not isinstance(body, dict):
        raise invalid(errors=[FieldError("", "Schema describes object")])
    errors: list[FieldError] = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(FieldError("name", "This value should not be blank."))
    kind = body.get("type")
    if kind not in TYPES:
        errors.append(FieldError("type", f"Value is not one of: {', '.join(TYPES)}"))
    next_id = max((f.merge_id for f in existing), default=0) + 1
    raw_tag = body.get("tag")
    if raw_tag is None or raw_tag == "":
        tag = f"MMERGE{next_id}"
    elif not isinstance(raw_tag, str):
        errors.append(FieldError("tag", "Schema describes string"))
        tag = ""
    else:
        # Mailchimp upper-cases the tag it is given before checking it.
        tag = raw_tag.upper()
        if not TAG_PATTERN.fullmatch(tag):
            errors.append(
                FieldError(
                    "tag",
                    "Merge tags must be 10 characters or fewer and contain only "
                    "letters, digits and underscores.",
                )
            )
    if errors:
        raise invalid(errors=errors)
    if any(f.tag == tag for f in existing):
        raise invalid(f'A Merge Field with the tag "{tag}" already exists for this list.')
    if len(existing) >= MAX_MERGE_FIELDS:
        raise invalid(f"This audience already has the maximum of {MAX_MERGE_FIELDS} merge fields.")
    options = body.get("options") or {}
    if kind == "date":
        options.setdefault("date_format", "MM/DD/YYYY")
    elif kind == "birthday":
        options.setdefault("date_format", "MM/DD")
    return MergeField(
        merge_id=next_id,
        tag=tag,
        name=str(name),
        type=str(kind),
        required=bool(body.get("required", False)),
        default_value=str(body.get("default_value") or ""),
        public=bool(body.get("public", True)),
        display_order=next_id + 1,
        options=dict(options),
        help_text=str(body.get("help_text") or ""),
    )
