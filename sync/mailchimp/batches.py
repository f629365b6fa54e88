"""``/batches`` jobs: many operations as one asynchronous Mailchimp job.

``run_batch_operations``: ``POST /batches`` + polling + the results archive,
one classified ``Answer`` per operation; ``iter_chunks`` splits work into
calls or jobs.

Mailchimp runs an account's jobs one after the other, and a job can take
minutes to finish, or hours to leave ``finalizing``. So a push waits for a job
only ``BatchPolling.deadline`` seconds: a job still running then is *left
running*, each of its operations answered ``RUNNING`` with the job's id, and
``collect_batch`` fetches its answers in a later push
(``sync.mailchimp.collect``).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from sync.mailchimp.answers import Answer, AnswerClass, OperationResult, classify
from sync.mailchimp.caller import Caller, json_safe
from sync.mailchimp.client import DEFAULT_TIMEOUT
from sync.mailchimp.connections import sessions_of

log = logging.getLogger(__name__)


#: ``json.dumps(..., allow_nan=False)`` without building an encoder per operation.
_BODY_ENCODER = json.JSONEncoder(allow_nan=False)


@dataclass(frozen=True)
class Operation:
    """One operation of a ``/batches`` job (and of its per-call fallback)."""

    operation_id: str
    method: Literal["PUT", "POST", "PATCH"]
    path: str
    body: Mapping[str, Any]
    #: The query of the call (``skip_merge_validation``, ``fields``): an
    #: operation's ``params`` in ``/batches``, the direct call's query string.
    params: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operation_id": self.operation_id,
            "method": self.method,
            "path": self.path,
            "body": _BODY_ENCODER.encode(json_safe(self.body)),
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


#: The answer code of an operation whose job was left running; the answer's
#: body is ``{"batch_id": ...}``.
RUNNING = "batch_running"


@dataclass(frozen=True)
class BatchPolling:
    """How long to wait for a ``/batches`` job to finish.

    Polls follow a schedule, ``first_wait`` after the start and then at
    doubling intervals up to ``max_wait`` (1, 3, 7, 15 s...). A job that
    reports its progress (``started``, some of its operations finished) may
    get one poll more before the schedule's next one, when its pace since
    the last look says it will be done by then (``finish_in``): a job that
    ends just after a poll is not left waiting for the next, twice as far.
    """

    first_wait: float = 1.0
    max_wait: float = 30.0
    #: Seconds a push waits for its job; a job still running then is left
    #: running, for a later push to collect (``mailchimp.batch_wait``).
    deadline: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def finish_in(
        self, status: Mapping[str, Any], elapsed: float, before: tuple[float, int] = (0.0, 0)
    ) -> float | None:
        """Seconds until the job is likely finished, from its pace: the
        operations finished (``finished_operations`` of ``total_operations``)
        since ``before``, the (seconds since the start, operations finished)
        of the previous look, ``elapsed`` seconds after the start now; plus a
        tenth for the results archive. The job may have started running at
        any time since that look, so the pace is never overestimated nor the
        poll too early. None when the job says nothing of its pace (not
        ``started``, or nothing finished since the last look)."""
        if status.get("status") != "started":
            return None
        total, done = status.get("total_operations"), status.get("finished_operations")
        seen_at, seen_done = before
        if not isinstance(total, int) or not isinstance(done, int):
            return None
        if not seen_done < done < total or elapsed <= seen_at:
            return None
        return 1.1 * (elapsed - seen_at) * (total - done) / (done - seen_done)


def run_batch_operations(
    caller: Caller,
    operations: Sequence[Operation],
    polling: BatchPolling | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    idempotent: bool = True,
) -> dict[str, Answer]:
    """Submit ``operations`` as one ``/batches`` job and wait for it.

    Returns an answer per operation id. A job not finished within
    ``polling.deadline`` is left running: its operations answer ``RUNNING``
    (``collect_batch`` gets the real answers later). Operations missing from
    the results (the archive could not be read, the job is gone) get a
    transient answer: ``batch_not_started`` when Mailchimp said it did not
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
    ids = [op.operation_id for op in operations]
    if not started.ok or not isinstance(started.body, Mapping) or "id" not in started.body:
        refused = not started.ok and not started.maybe_processed
        code = "batch_not_started" if refused else "batch_unanswered"
        return _same_answer(ids, code, f"batch job not started: {started.reason}")
    batch_id = str(started.body["id"])
    begin = polling.clock()
    # The schedule's next poll, in seconds after the start, and its step.
    due = step = polling.first_wait
    early_before: float | None = None  # the scheduled poll an early one came before
    before = (0.0, 0)  # the last look at the job: (seconds since the start, operations done)
    status: Mapping[str, Any] = started.body
    while status.get("status") != "finished":
        elapsed = polling.clock() - begin
        if elapsed >= polling.deadline:
            log.info(
                "batch %s not finished after %.0fs (%s): left running, a later cycle "
                "collects its answers",
                batch_id,
                elapsed,
                status.get("status"),
            )
            return left_running(ids, batch_id)
        finish = polling.finish_in(status, elapsed, before)
        done = status.get("finished_operations")
        if isinstance(done, int):
            before = (elapsed, done)
        if finish is not None and elapsed + finish < due and early_before != due:
            at, early_before = elapsed + finish, due  # one early poll per scheduled one
        else:
            at = due
            step = min(step * 2, polling.max_wait)
            due += step
        polling.sleep(max(0.0, min(at, polling.deadline) - elapsed))
        polled = _poll(caller, batch_id)
        if isinstance(polled, Answer):
            return _same_answer(ids, "batch_unanswered", f"batch {batch_id}: {polled.reason}")
        status = polled
    return _results(caller, batch_id, status, ids, timeout)


def collect_batch(
    caller: Caller, batch_id: str, operation_ids: Sequence[str], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Answer] | None:
    """The answers of a job left running, or None while it still runs (or
    its status or results cannot be read now: try again later).

    One ``GET /batches/{id}``, and the results download once it is finished.
    A job Mailchimp no longer knows (deleted, expired: 404) answers
    ``batch_unanswered`` for each operation: it may have run."""
    status = _poll(caller, batch_id)
    if isinstance(status, Answer):
        if status.code == "not_found":
            return _same_answer(operation_ids, "batch_unanswered", f"batch {batch_id} is gone")
        return None
    if status.get("status") != "finished":
        return None
    answers = _results(caller, batch_id, status, operation_ids, timeout)
    if answers and all(a.code == "batch_unanswered" for a in answers.values()):
        return None  # the archive could not be read: the job's answers are still there
    return answers


def left_running(operation_ids: Sequence[str], batch_id: str) -> dict[str, Answer]:
    answer = Answer(
        AnswerClass.TRANSIENT,
        RUNNING,
        f"batch {batch_id} still running: its answer is collected later",
        body={"batch_id": batch_id},
    )
    return dict.fromkeys(operation_ids, answer)


def _same_answer(operation_ids: Sequence[str], code: str, reason: str) -> dict[str, Answer]:
    return dict.fromkeys(operation_ids, Answer(AnswerClass.TRANSIENT, code, reason))


def _poll(caller: Caller, batch_id: str) -> Mapping[str, Any] | Answer:
    """The job's status, or the answer that says why it could not be read."""
    # Member scope: a 404 here means this job is gone (deleted, expired),
    # not the audience; its operations are then retried next cycle.
    polled = caller.call(
        f"GET /batches/{batch_id}",
        lambda: caller.client.batches.status(batch_id),
        scope="member",
    )
    if not polled.ok or not isinstance(polled.body, Mapping):
        return polled
    return polled.body


def _results(
    caller: Caller,
    batch_id: str,
    status: Mapping[str, Any],
    operation_ids: Sequence[str],
    timeout: float,
) -> dict[str, Answer]:
    """A finished job's answer per operation, from its results archive."""
    url = status.get("response_body_url")
    if not url:
        return _same_answer(
            operation_ids, "batch_unanswered", f"batch {batch_id} finished without results"
        )

    sessions = sessions_of(caller.client)
    get = sessions.request if sessions is not None else requests.request

    def download() -> object:
        # A pre-signed URL: no API key is sent with it. Through the client's
        # sessions when it has them, so the connection is kept for the next.
        answer = get("GET", str(url), timeout=timeout)
        if answer.ok:
            return {"archive": answer.content}
        return answer

    # Member scope again: a 404 from the results store is about this archive.
    fetched = caller.call(f"results of batch {batch_id}", download, scope="member")
    if not fetched.ok:
        return _same_answer(
            operation_ids, "batch_unanswered", f"batch {batch_id} results: {fetched.reason}"
        )
    try:
        results = parse_batch_results(fetched.body["archive"])
    except (tarfile.TarError, ValueError, KeyError, OSError) as exc:
        log.error("batch %s: unreadable results archive (%s)", batch_id, exc)
        return _same_answer(
            operation_ids,
            "batch_unanswered",
            f"batch {batch_id}: unreadable results ({type(exc).__name__})",
        )
    found = {result.operation_id: result for result in results}
    # One answer shared by the operations the archive does not mention.
    missing = Answer(
        AnswerClass.TRANSIENT, "batch_unanswered", f"batch {batch_id}: no result for this operation"
    )
    return {
        op_id: classify(found[op_id], scope="member") if op_id in found else missing
        for op_id in operation_ids
    }


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
