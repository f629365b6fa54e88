"""Running one Mailchimp call: ``Caller`` and JSON-safe bodies.

``Caller`` runs one call with tenacity retries for transient answers only
(exponential back-off with jitter, each retry logged), asks the fence before
every attempt (no write once leadership is lost), and counts calls by answer
class; a fatal answer raises ``FatalError``. ``json_safe`` makes a body that
``json.dumps`` accepts, or refuses it before the client sees it.
Quirk of ``mailchimp-marketing`` 3.0.80: booleans in query strings must be
the string ``"true"``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import tenacity

from sync.exceptions import AudienceMissing, FatalError
from sync.mailchimp.answers import Answer, AnswerClass, Scope, answer_of

log = logging.getLogger(__name__)


#: Values passed through as they are, checked by their exact class first:
#: a body of 500 members holds thousands of them.
_PLAIN = frozenset({str, int, bool, type(None)})


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts: instants become ISO 8601;
    anything else unexpected is refused here rather than inside the client."""
    cls = value.__class__
    if cls in _PLAIN:
        return value
    if cls is dict:
        return {str(k): json_safe(v) for k, v in value.items()}
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
        answer = answer_of(fn, scope=scope)
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
