"""Mailchimp's error answers: ``application/problem+json`` documents.

Everything the emulator refuses is raised as an :class:`ApiProblem` deep in
the store or the routes and turned into an HTTP answer in one place (the
server), so the shapes of error bodies are defined only here. Titles and
details copy the wording Mailchimp is known to use, because callers (the
sink) tell causes apart by that text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ERROR_DOC_URL = "https://mailchimp.com/developer/marketing/docs/errors/"

INVALID_RESOURCE_DETAIL = (
    "The resource submitted could not be validated. "
    "For field-specific details, see the 'errors' array."
)


@dataclass(frozen=True)
class FieldError:
    """One entry of a validation problem's ``errors[]``."""

    field: str
    message: str


@dataclass
class ApiProblem(Exception):
    """An answer Mailchimp gives as problem+json; raise it to answer with it.

    ``type`` is None for the answers Mailchimp sends without one (recorded
    "Member Exists" answers carry only title, status, detail and instance);
    ``instance`` is ``""`` where Mailchimp leaves it empty (a 405 recorded in
    drewm/mailchimp-api#132, and ``/batches`` results)."""

    status: int
    title: str
    detail: str
    errors: tuple[FieldError, ...] = ()
    instance: str = field(default_factory=lambda: str(uuid.uuid4()))
    type: str | None = ERROR_DOC_URL

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.title}: {self.detail}")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {} if self.type is None else {"type": self.type}
        body.update(
            title=self.title, status=self.status, detail=self.detail, instance=self.instance
        )
        # Mailchimp only sends errors[] on validation failures; an empty list
        # elsewhere would let a caller rely on a key the real API omits.
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


def invalid(detail: str = INVALID_RESOURCE_DETAIL, errors: Sequence[FieldError] = ()) -> ApiProblem:
    """A 400 "Invalid Resource", Mailchimp's answer to most bad input."""
    return ApiProblem(400, "Invalid Resource", detail, tuple(errors))


def not_found(detail: str = "The requested resource could not be found.") -> ApiProblem:
    return ApiProblem(404, "Resource Not Found", detail)


def compliance_state(email: str) -> ApiProblem:
    # Member-specific titled answers come without `type`, as recorded
    # "Member Exists" ones do: callers must classify on title and detail.
    return ApiProblem(400, "Member In Compliance State", compliance_detail(email), type=None)


def compliance_detail(email: str) -> str:
    return (
        f"{email} is in a compliance state due to unsubscribe, bounce, "
        "or compliance review and cannot be subscribed."
    )


def forgotten(email: str) -> ApiProblem:
    return ApiProblem(400, "Forgotten Email Not Subscribed", forgotten_detail(email), type=None)


def forgotten_detail(email: str) -> str:
    return (
        f"{email} was permanently deleted and cannot be re-imported. "
        "The contact must re-subscribe to get back on the list."
    )


def fake_email(email: str) -> ApiProblem:
    return invalid(fake_detail(email))


#: Mailchimp's answer to an address that is not one at all ("AAAAA", "a@b");
#: "… looks fake or invalid" is for addresses its heuristics distrust.
MALFORMED_EMAIL_DETAIL = "Please provide a valid email address."


def malformed_email() -> ApiProblem:
    return invalid(MALFORMED_EMAIL_DETAIL)


def properties_too_long(size: int) -> str:
    """The ``errors[].message`` for oversize event properties (wording assumed:
    no public source shows Mailchimp's refusal)."""
    return f"Event properties must be 1000 characters or fewer in total, {size} found"


def fake_detail(email: str) -> str:
    return f"{email} looks fake or invalid, please enter a real email address."


def api_key_missing() -> ApiProblem:
    return ApiProblem(401, "API Key Missing", "Your request did not include an API key.")


def api_key_invalid() -> ApiProblem:
    return ApiProblem(
        401,
        "API Key Invalid",
        "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
    )


def forbidden() -> ApiProblem:
    return ApiProblem(403, "Forbidden", "You don't have permission to access this resource.")


def too_many_requests(limit: int) -> ApiProblem:
    return ApiProblem(
        429,
        "Too Many Requests",
        f"You have exceeded the limit of {limit} simultaneous connections.",
    )


def internal_error() -> ApiProblem:
    return ApiProblem(
        500,
        "Internal Server Error",
        "An unexpected internal error has occurred. Please contact Support for more information.",
    )


def method_not_allowed() -> ApiProblem:
    return ApiProblem(
        405, "Method Not Allowed", "The requested method and resource are not compatible."
    )


def bad_json() -> ApiProblem:
    return ApiProblem(
        400,
        "JSON Parse Error",
        "We encountered an unspecified JSON parsing error.",
    )
