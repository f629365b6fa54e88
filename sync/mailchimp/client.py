"""Everything that talks to Mailchimp through the official client, and nothing else.

- ``classify``: the ONE place where an outcome of a call (a returned dict, a
  returned ``requests.Response``, a raised ``ApiClientError``, a network error,
  one entry of a batch-subscribe ``errors[]``, one result of a ``/batches``
  operation) becomes an ``Answer`` of class success / transient / permanent
  (for that member) / fatal (for the run).
- ``MailchimpSettings`` / ``make_client``: the API key from the environment or
  a file, the datacenter from its suffix, the base-URL override used for the
  emulator, the timeout.
- ``Caller``: runs one call with tenacity retries for transient answers only
  (exponential back-off with jitter, each retry logged) and counts calls by
  answer class; a fatal answer raises ``FatalError``.
- ``run_batch_operations``: ``POST /batches`` + polling + the results archive.
- Audience checks for ``mailsync check`` (``check_audience``,
  ``fix_merge_fields``), returning human-readable, located problem strings.
- The key is checked and registered for redaction (``sync.mailchimp.redaction``).

Quirks of ``mailchimp-marketing`` 3.0.80 handled here (their sources are
in docs/emulator.md's fidelity tables): error answers with an empty body are
*returned*; ``ApiClientError.text`` is the problem+json as a *string*
(``application/problem+json`` is not ``application/json`` for the client);
network failures are ``ApiClientError(status_code=None)`` whose ``text`` is the
original exception; 204 answers are ``Response`` objects; booleans in query
strings must be the string ``"true"``; the host is rewritten with
``str.replace('server', ...)`` unless ``server`` is empty.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import requests
import tenacity
from mailchimp_marketing import Client
from mailchimp_marketing.api_client import ApiClientError

from sync.exceptions import AudienceMissing, ConfigurationError, FatalError
from sync.mailchimp.redaction import clean_api_key, install_redaction, register_secret

log = logging.getLogger(__name__)

API_KEY_ENV = "MAILCHIMP_API_KEY"
API_KEY_FILE_ENV = "MAILCHIMP_API_KEY_FILE"
DEFAULT_TIMEOUT = 120.0
#: Mailchimp allows 10 simultaneous connections per key; more gives 429.
MAX_CONNECTIONS = 9
#: Members per batch-subscribe call (``POST /lists/{id}`` refuses more).
MAX_BATCH = 500
#: Operations per ``/batches`` job. Mailchimp sets no limit on a job's
#: operations; one job costs a start, its polls and one download whatever its
#: size, so large jobs keep the call count of a big push near constant. 5000
#: keeps a request body to a few megabytes and lets a very large push still
#: run as several jobs in parallel.
JOB_SIZE = 5000


# -- answer classification ------------------------------------------------------


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


# -- settings and client -----------------------------------------------------

_DATACENTER = re.compile(r"^[a-z]{2,}\d+$")


def datacenter_of(api_key: str) -> str:
    """``us21`` from ``0123…-us21``; the key itself never appears in the error."""
    _, sep, suffix = api_key.rpartition("-")
    if not sep or not _DATACENTER.match(suffix):
        raise ConfigurationError(
            "Mailchimp API key: expected a datacenter suffix like '-us21' at its end"
        )
    return suffix


def load_api_key(env: Mapping[str, str] | None = None) -> str:
    """The key from ``MAILCHIMP_API_KEY``, else from the file named by
    ``MAILCHIMP_API_KEY_FILE`` (Docker/Kubernetes secrets)."""
    env = os.environ if env is None else env
    key = clean_api_key(env.get(API_KEY_ENV, ""), API_KEY_ENV)
    if not key and env.get(API_KEY_FILE_ENV):
        path = Path(env[API_KEY_FILE_ENV])
        try:
            raw = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"{API_KEY_FILE_ENV}={path}: cannot read the API key file ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(
                f"{API_KEY_FILE_ENV}={path}: the API key file is not UTF-8 text: "
                "save it again as plain text holding only the key"
            ) from None
        key = clean_api_key(raw, f"{API_KEY_FILE_ENV}={path}")
        if not key:
            raise ConfigurationError(f"{API_KEY_FILE_ENV}={path}: the API key file is empty")
    if not key:
        raise ConfigurationError(f"no Mailchimp API key: set {API_KEY_ENV} or {API_KEY_FILE_ENV}")
    register_secret(key)
    return key


@dataclass(frozen=True)
class MailchimpSettings:
    """How to reach one audience. The key is excluded from ``repr``."""

    api_key: str = field(repr=False)
    list_id: str
    host: str | None = None  # e.g. the emulator's "http://127.0.0.1:8080/3.0"
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        register_secret(self.api_key)
        if clean_api_key(self.api_key, "Mailchimp API key") != self.api_key:
            raise ConfigurationError(
                "Mailchimp API key: surrounded by spaces or a byte-order mark; remove them"
            )
        if self.host is None:
            datacenter_of(self.api_key)  # fail early on a key without a datacenter

    @classmethod
    def from_env(
        cls,
        list_id: str,
        *,
        host: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> MailchimpSettings:
        return cls(api_key=load_api_key(env), list_id=list_id, host=host, timeout=timeout)


def make_client(settings: MailchimpSettings) -> Any:
    """An official ``mailchimp_marketing.Client`` configured from ``settings``.

    Also installs log redaction of the key (idempotent), so that no log line of
    any library can carry it from here on."""
    install_redaction()
    if settings.host is None:
        config = {
            "api_key": settings.api_key,
            "server": datacenter_of(settings.api_key),
            "timeout": settings.timeout,
        }
        return Client(config)
    client = Client({"api_key": settings.api_key, "timeout": settings.timeout})
    client.api_client.host = settings.host.rstrip("/")
    # An empty server disables the client's url.replace('server', dc), which
    # would otherwise mangle a host name containing "server".
    client.api_client.server = ""
    return client


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts: instants become ISO 8601;
    anything else unexpected is refused here rather than inside the client."""
    if isinstance(value, float) and not math.isfinite(value):
        # json.dumps would write the bare token NaN: not JSON, and one such
        # value would make Mailchimp refuse a whole 500-member body.
        raise TypeError(f"not JSON-safe for Mailchimp: {value!r}")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [json_safe(v) for v in items]
    raise TypeError(f"not JSON-safe for Mailchimp: {type(value).__name__}")


# -- calls with retries ----------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Tenacity settings for transient answers."""

    attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


class Caller:
    """Runs calls for the sink: retries transient answers, counts every answer."""

    def __init__(
        self,
        client: Any,
        list_id: str,
        retry: RetryPolicy | None = None,
        *,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.list_id = list_id
        self.retry = retry or RetryPolicy()
        #: Called before every request (each attempt): raises when this
        #: process may no longer write (``sync.daemon.lock.Fence``, leadership lost).
        self.fence = fence
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Caller(list_id={self.list_id!r}, calls={dict(self.calls)!r})"

    def _attempt(self, fn: Callable[[], object], scope: Scope) -> Answer:
        if self.fence is not None:
            self.fence()  # the single choke point of writes: none once deposed
        try:
            outcome: object = fn()
        except ApiClientError as exc:
            outcome = exc
        except requests.RequestException as exc:
            outcome = exc
        answer = classify(outcome, scope=scope)
        with self._lock:
            self.calls[answer.kind.value] += 1
        return answer

    def call(
        self,
        what: str,
        fn: Callable[[], object],
        *,
        scope: Scope = "member",
        idempotent: bool = True,
    ) -> Answer:
        """Run ``fn`` (one official-client call); retry while the answer is
        transient. Returns the last answer; raises ``FatalError`` on a fatal one.

        A call that is not ``idempotent`` (an event POST, a ``/batches`` job of
        events) is not retried after an answer that leaves it ``maybe_processed``:
        the caller must find out what happened before sending it again."""

        def retriable(answer: Answer) -> bool:
            if answer.kind is not AnswerClass.TRANSIENT:
                return False
            return idempotent or not answer.maybe_processed

        def log_retry(state: tenacity.RetryCallState) -> None:
            answer = state.outcome.result() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s: %s; retry %d/%d in %.2fs",
                what,
                answer.reason if answer else "?",
                state.attempt_number,
                self.retry.attempts - 1,
                wait,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=tenacity.wait_random_exponential(
                multiplier=self.retry.initial_wait, max=self.retry.max_wait
            ),
            retry=tenacity.retry_if_result(retriable),
            before_sleep=log_retry,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self.retry.sleep,
        )
        answer: Answer = retrying(self._attempt, fn, scope)
        if answer.kind is AnswerClass.FATAL:
            if answer.code == "unknown_list":
                raise AudienceMissing(
                    f"Mailchimp {what}: audience {self.list_id} not found ({answer.reason}); "
                    "check MAILCHIMP_LIST_ID, or restore the audience"
                )
            raise FatalError(f"Mailchimp {what}: {answer.reason}")
        if answer.kind is AnswerClass.TRANSIENT and retriable(answer):
            log.error(
                "%s: giving up after %d attempts: %s", what, self.retry.attempts, answer.reason
            )
        elif answer.kind is AnswerClass.TRANSIENT:
            log.warning("%s: %s; may have been carried out, not retried", what, answer.reason)
        return answer


# -- /batches -----------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of a ``/batches`` job (and of its per-call fallback)."""

    operation_id: str
    method: Literal["PUT", "POST", "PATCH"]
    path: str
    body: Mapping[str, Any]
    #: The query of the call (``skip_merge_validation``): an operation's
    #: ``params`` in ``/batches``, keyword arguments of the direct call.
    params: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operation_id": self.operation_id,
            "method": self.method,
            "path": self.path,
            "body": json.dumps(json_safe(self.body), allow_nan=False),
        }
        if self.params:
            operation["params"] = dict(self.params)
        return operation


def parse_batch_results(archive: bytes) -> list[OperationResult]:
    """The entries of a ``/batches`` results archive (a gzipped tar of JSON
    files, each an array of ``{status_code, operation_id, response}``)."""
    results: list[OperationResult] = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            entries = json.loads(handle.read().decode("utf-8"))
            for entry in entries if isinstance(entries, list) else [entries]:
                response = entry.get("response", "")
                results.append(
                    OperationResult(
                        operation_id=str(entry.get("operation_id", "")),
                        status_code=int(entry.get("status_code", 0)),
                        response=response if isinstance(response, str) else json.dumps(response),
                    )
                )
    return results


class BatchesUnavailable(Exception):
    """``POST /batches`` is not served here; send the operations one by one."""


@dataclass(frozen=True)
class BatchPolling:
    """How long to wait for a ``/batches`` job to finish."""

    first_wait: float = 1.0
    max_wait: float = 30.0
    deadline: float = 1800.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


def run_batch_operations(
    caller: Caller,
    operations: Sequence[Operation],
    polling: BatchPolling | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    idempotent: bool = True,
) -> dict[str, Answer]:
    """Submit ``operations`` as one ``/batches`` job and wait for it.

    Returns an answer per operation id. Operations missing from the results (the
    job did not finish before the deadline, the archive could not be read) get
    a transient answer: ``batch_not_started`` when Mailchimp said it did not
    take the job, else ``batch_unanswered``, which is ``maybe_processed`` (the
    job may have run). Merge-field PUTs are idempotent, the next cycle sends
    them again; operations that are not (events) must say so with
    ``idempotent=False``, so that a start whose answer was lost is not
    retried (it would queue the job twice).
    """
    polling = polling or BatchPolling()
    body = {"operations": [op.as_json() for op in operations]}
    # Member scope: a 404/405 here means "no /batches" (a proxy, an emulator),
    # not an unknown audience; the caller then falls back to direct calls.
    started = caller.call(
        "POST /batches", lambda: caller.client.batches.start(body), idempotent=idempotent
    )
    if started.code in {"not_found", "method_not_allowed"}:
        raise BatchesUnavailable(started.reason)

    def unanswered(reason: str, code: str = "batch_unanswered") -> dict[str, Answer]:
        return {op.operation_id: Answer(AnswerClass.TRANSIENT, code, reason) for op in operations}

    if not started.ok or not isinstance(started.body, Mapping) or "id" not in started.body:
        refused = not started.ok and not started.maybe_processed
        code = "batch_not_started" if refused else "batch_unanswered"
        return unanswered(f"batch job not started: {started.reason}", code)
    batch_id = str(started.body["id"])
    begin, wait = polling.clock(), polling.first_wait
    status: Mapping[str, Any] = started.body
    while status.get("status") != "finished":
        if polling.clock() - begin > polling.deadline:
            log.warning(
                "batch %s not finished after %.0fs; its members are retried later",
                batch_id,
                polling.deadline,
            )
            return unanswered(f"batch {batch_id} not finished in time")
        polling.sleep(wait)
        wait = min(wait * 2, polling.max_wait)
        # Member scope: a 404 here means this job is gone (deleted, expired),
        # not the audience; its operations are then retried next cycle.
        polled = caller.call(
            f"GET /batches/{batch_id}",
            lambda: caller.client.batches.status(batch_id),
            scope="member",
        )
        if not polled.ok or not isinstance(polled.body, Mapping):
            return unanswered(f"batch {batch_id}: {polled.reason}")
        status = polled.body
    url = status.get("response_body_url")
    if not url:
        return unanswered(f"batch {batch_id} finished without results")

    def download() -> object:
        # A pre-signed URL: no API key is sent with it.
        answer = requests.get(str(url), timeout=timeout)
        if answer.ok:
            return {"archive": answer.content}
        return answer

    # Member scope again: a 404 from the results store is about this archive.
    fetched = caller.call(f"results of batch {batch_id}", download, scope="member")
    if not fetched.ok:
        return unanswered(f"batch {batch_id} results: {fetched.reason}")
    try:
        results = parse_batch_results(fetched.body["archive"])
    except (tarfile.TarError, ValueError, KeyError, OSError) as exc:
        log.error("batch %s: unreadable results archive (%s)", batch_id, exc)
        return unanswered(f"batch {batch_id}: unreadable results ({type(exc).__name__})")
    answers = unanswered(f"batch {batch_id}: no result for this operation")
    for result in results:
        if result.operation_id in answers:
            answers[result.operation_id] = classify(result, scope="member")
    return answers


# -- audience checks (mailsync check) ---------------------------------------------

#: Merge-field types that accept what the rules push, per kind of value.
SUITABLE_TYPES: Mapping[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "number": frozenset({"number", "text"}),
    "date": frozenset({"date", "text"}),
    "url": frozenset({"url", "text"}),
}

_MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")


def _call_once(what: str, fn: Callable[[], object]) -> Answer:
    try:
        outcome: object = fn()
    except ApiClientError as exc:
        outcome = exc
    except requests.RequestException as exc:
        outcome = exc
    answer = classify(outcome, scope="run")
    if not answer.ok:
        log.info("%s: %s", what, answer.reason)
    return answer


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


def iter_chunks(items: Sequence[Any], size: int = MAX_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
