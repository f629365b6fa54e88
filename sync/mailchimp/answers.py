"""Answer classification: what an outcome of a Mailchimp call means.

``classify`` is the ONE place where an outcome of a call (a returned dict, a
returned ``requests.Response``, a raised ``ApiClientError``, a network error,
one entry of a batch-subscribe ``errors[]``, one result of a ``/batches``
operation) becomes an ``Answer`` of class success / transient / permanent
(for that member) / fatal (for the run). ``answer_of`` runs one call and
classifies what it returned or raised.

Quirks of ``mailchimp-marketing`` 3.0.80 handled here (their sources are
in docs/emulator.md's fidelity tables): error answers with an empty body are
*returned*; ``ApiClientError.text`` is the problem+json as a *string*
(``application/problem+json`` is not ``application/json`` for the client);
network failures are ``ApiClientError(status_code=None)`` whose ``text`` is the
original exception; 204 answers are ``Response`` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import requests
from mailchimp_marketing.api_client import ApiClientError


class AnswerClass(StrEnum):
    SUCCESS = "success"
    TRANSIENT = "transient"  # retry with back-off
    PERMANENT = "permanent"  # this member (or this call) will fail again: record, don't retry
    FATAL = "fatal"  # the run cannot go on


Scope = Literal["run", "member"]


@dataclass(frozen=True)
class Answer:
    """A classified outcome. ``code`` is a short machine-readable cause."""

    kind: AnswerClass
    code: str
    reason: str
    status: int | None = None
    body: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.kind is AnswerClass.SUCCESS

    @property
    def maybe_processed(self) -> bool:
        """A failure after which Mailchimp may still have carried the request
        out: no answer (timeout, connection reset), a 5xx, or a ``/batches``
        job whose fate is unknown. Retrying a non-idempotent call (an event)
        after one of these can do it twice; 429, a bare 403 and 4xx answers
        say it was not done."""
        return self.kind is AnswerClass.TRANSIENT and self.code in MAYBE_PROCESSED


#: Answer codes after which the request may have been carried out anyway.
MAYBE_PROCESSED = frozenset({"timeout", "connection", "server_error", "batch_unanswered"})


@dataclass(frozen=True)
class MemberError:
    """One entry of a batch-subscribe answer's ``errors[]``."""

    email: str
    error: str
    error_code: str | None = None
    field: str | None = None
    field_message: str | None = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> MemberError:
        return cls(
            email=str(entry.get("email_address", "")),
            error=str(entry.get("error", "")),
            error_code=entry.get("error_code"),
            field=entry.get("field") or None,
            field_message=entry.get("field_message") or None,
        )


@dataclass(frozen=True)
class OperationResult:
    """One result of a ``/batches`` job: HTTP status and body (a JSON string)."""

    operation_id: str
    status_code: int
    response: str


# Text rules, checked in order on title + detail + field messages. Mailchimp
# gives one generic code (400 / ERROR_GENERIC) for many causes: only the words
# tell them apart.
_TEXT_RULES: tuple[tuple[re.Pattern[str], AnswerClass, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind, code)
    for pattern, kind, code in (
        (r"signed up to a lot of lists very recently", AnswerClass.TRANSIENT, "too_many_signups"),
        (
            r"already a list member|member exists|contact[_ ]exists",
            AnswerClass.PERMANENT,
            "contact_exists",
        ),
        (r"compliance state", AnswerClass.PERMANENT, "compliance_state"),
        (r"forgotten email|permanently deleted", AnswerClass.PERMANENT, "forgotten_email"),
        (r"looks fake or invalid|fake or invalid", AnswerClass.PERMANENT, "fake_email"),
        (r"provide a valid email address", AnswerClass.PERMANENT, "invalid_email"),
        (
            r"merge (?:field|tag)s? [\"'A-Z0-9_ ]*"
            r"(?:does not exist|doesn't exist|not found|unknown)"
            r"|(?:unknown|no such|nonexistent|non-existent) merge (?:field|tag)",
            AnswerClass.FATAL,
            "unknown_merge_tag",
        ),
        (
            r"(?:list|audience)[^.]*(?:does not exist|doesn't exist|not found|unknown)"
            r"|(?:unknown|invalid) (?:list|audience)",
            AnswerClass.FATAL,
            "unknown_list",
        ),
        (
            r"merge|invalid resource|valid (?:date|number|url|phone|zip|address)",
            AnswerClass.PERMANENT,
            "invalid_value",
        ),
    )
)


def _problem_text(problem: Mapping[str, Any] | None, raw: str) -> str:
    """Title, detail and field messages of a problem+json, for humans and rules."""
    if problem is None:
        return raw.strip()[:300]
    parts = [str(problem.get(k, "")) for k in ("title", "detail") if problem.get(k)]
    for err in problem.get("errors") or []:
        if isinstance(err, Mapping):
            parts.append(f"{err.get('field', '')}: {err.get('message', '')}".strip(": "))
    return " | ".join(parts) or raw.strip()[:300]


def _parse_problem(text: Any) -> Mapping[str, Any] | None:
    if isinstance(text, Mapping):
        return text
    if isinstance(text, str | bytes) and text:
        try:
            parsed = json.loads(text)
        except ValueError:
            return None  # an HTML page from an edge filter, for example
        return parsed if isinstance(parsed, Mapping) else None
    return None


def _by_text(text: str) -> tuple[AnswerClass, str] | None:
    for pattern, kind, code in _TEXT_RULES:
        if pattern.search(text):
            return kind, code
    return None


def _by_status(status: int, problem: Mapping[str, Any] | None, raw: str, scope: Scope) -> Answer:
    text = _problem_text(problem, raw)
    reason = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if 200 <= status < 300:
        return Answer(AnswerClass.SUCCESS, "ok", f"HTTP {status}", status, problem)
    if status == 429:
        return Answer(AnswerClass.TRANSIENT, "rate_limited", reason, status)
    if status >= 500:
        return Answer(AnswerClass.TRANSIENT, "server_error", reason, status)
    if status == 401:
        return Answer(AnswerClass.FATAL, "unauthorized", reason, status)
    if status == 403:
        # Under load Mailchimp answers a bare 403; a real refusal has a problem body.
        if problem is None:
            return Answer(AnswerClass.TRANSIENT, "throttled", reason, status)
        return Answer(AnswerClass.FATAL, "forbidden", reason, status)
    by_text = _by_text(text)
    if by_text is not None:
        return Answer(by_text[0], by_text[1], reason, status)
    if status == 404:
        if scope == "run":
            return Answer(AnswerClass.FATAL, "unknown_list", reason, status)
        return Answer(AnswerClass.PERMANENT, "not_found", reason, status)
    if status == 405:
        return Answer(AnswerClass.PERMANENT, "method_not_allowed", reason, status)
    if 400 <= status < 500:
        return Answer(AnswerClass.PERMANENT, "invalid", reason, status)
    return Answer(AnswerClass.FATAL, "unexpected_status", reason, status)


def classify(outcome: object, *, scope: Scope = "member") -> Answer:
    """Classify any outcome of a Mailchimp call.

    ``scope`` says what the call was about: ``"run"`` for list-level calls
    (a 404 there means the audience is unknown: fatal), ``"member"`` for calls
    on one member (a 404 means that member: permanent for it).
    """
    if isinstance(outcome, ApiClientError):
        if outcome.status_code is None:
            cause = outcome.text
            if isinstance(cause, requests.Timeout):
                return Answer(AnswerClass.TRANSIENT, "timeout", f"timeout: {type(cause).__name__}")
            if isinstance(cause, requests.RequestException):
                return Answer(
                    AnswerClass.TRANSIENT, "connection", f"network error: {type(cause).__name__}"
                )
            # The client wraps *any* exception, e.g. json.dumps failing on a
            # datetime: that is our bug, not the network's.
            return Answer(AnswerClass.FATAL, "bad_request_built", f"request not sent: {cause!r}")
        raw = outcome.text if isinstance(outcome.text, str) else json.dumps(outcome.text)
        return _by_status(int(outcome.status_code), _parse_problem(outcome.text), raw, scope)
    if isinstance(outcome, requests.Response):
        # Returned, not raised, when the body is empty (204, or a bare 403/5xx).
        body = _parse_problem(outcome.text) if outcome.text else None
        return _by_status(outcome.status_code, body, outcome.text or "", scope)
    if isinstance(outcome, requests.Timeout):
        return Answer(AnswerClass.TRANSIENT, "timeout", f"timeout: {type(outcome).__name__}")
    if isinstance(outcome, requests.RequestException):
        return Answer(
            AnswerClass.TRANSIENT, "connection", f"network error: {type(outcome).__name__}"
        )
    if isinstance(outcome, MemberError):
        if (outcome.error_code or "").upper() == "ERROR_CONTACT_EXISTS":
            return Answer(AnswerClass.PERMANENT, "contact_exists", outcome.error)
        text = " | ".join(t for t in (outcome.error, outcome.field, outcome.field_message) if t)
        kind, code = _by_text(text) or (AnswerClass.PERMANENT, "invalid")
        return Answer(kind, code, text)
    if isinstance(outcome, OperationResult):
        return _by_status(
            outcome.status_code, _parse_problem(outcome.response), outcome.response, scope
        )
    if isinstance(outcome, Mapping | list | str):
        return Answer(AnswerClass.SUCCESS, "ok", "ok", 200, outcome)
    if isinstance(outcome, BaseException):
        return Answer(AnswerClass.FATAL, "unexpected_error", f"{type(outcome).__name__}: {outcome}")
    return Answer(AnswerClass.FATAL, "unexpected_answer", f"unexpected answer {type(outcome)!r}")


def answer_of(fn: Callable[[], object], *, scope: Scope = "member") -> Answer:
    """Run one official-client call and classify its outcome, returned or raised."""
    try:
        outcome: object = fn()
    except ApiClientError as exc:
        outcome = exc
    except requests.RequestException as exc:
        outcome = exc
    return classify(outcome, scope=scope)
