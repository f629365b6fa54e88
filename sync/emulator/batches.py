"""``/batches``: Mailchimp's asynchronous bulk endpoint.

``POST /batches`` takes ``operations[]`` of ``{method, path, params, body,
operation_id}`` (``body`` a JSON *string*, ``path`` relative to ``/3.0``),
checks their shape and queues them; the whole request is refused (400) only
when it does not fit that schema. A worker thread then runs each queued job
through the states Mailchimp reports, ``pending → preprocessing → started
→ finalizing → finished``, one job at a time (Mailchimp processes an
account's batches one after the other too).

Every operation goes through :func:`sync.emulator.api.perform`, the same
router and handlers as a direct call, so per-operation outcomes (a member in
compliance state, an unknown merge tag) are exactly the direct answers,
recorded in the results as ``{status_code, operation_id, response}`` with
``response`` the answer's JSON as a string. The results are a gzipped tar
of JSON files, each an array of such entries, served at a "pre-signed"
``response_body_url`` (``/batch-results/{id}.tar.gz?signature=…``) that needs
no API key, as Mailchimp's S3 links do.

Operations are not API calls of the key: they take no concurrency slot,
meet no injected fault and are not in ``CallLog.count()``; they are kept in
``CallLog.operations()`` instead.

Timing is set by :attr:`BatchQueue.delay` (seconds a job stays ``pending``,
and again how long ``started`` lasts, the operations being spread over it)
and :attr:`BatchQueue.hold` (jobs stay ``pending`` until it is cleared), so a
poller can be shown every state, or, with the default delay 0, a job that is
finished almost at once.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sync.emulator.api import Outcome
from sync.emulator.bodies import page
from sync.emulator.calls import CallLog, OperationCall
from sync.emulator.members import Clock, timestamp
from sync.emulator.problems import ApiProblem, FieldError, invalid, not_found
from sync.emulator.routes import Answer, Request, Router

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Mailchimp only reads a body for these; a GET's body is ignored.
METHODS_WITH_BODY = ("POST", "PUT", "PATCH")
MAX_PENDING = 500
RESULTS_PREFIX = "/batch-results"
# Real archives spread large jobs over several JSON files: a reader that
# stops at the first file must fail here too, not only in production.
RESULTS_PER_FILE = 250
ARCHIVE_TYPE = "application/x-gzip"
XML_TYPE = "application/xml"  # S3 explains its refusals in XML

#: Runs one operation: (method, path, query, raw body) → (endpoint, outcome).
Executor = Callable[[str, str, Mapping[str, str], str], tuple[str, Outcome]]


@dataclass(frozen=True)
class BatchOperation:
    """One operation as submitted, already checked against the schema."""

    method: str
    path: str
    params: Mapping[str, str]
    body: str | None
    operation_id: str | None


@dataclass
class Batch:
    """One job and its progress; read it through :class:`BatchQueue`."""

    id: str
    operations: tuple[BatchOperation, ...]
    submitted_at: datetime
    signature: str
    # Monotonic time of submission: the clock above may be a test's fixed one.
    submitted_tick: float
    status: str = "pending"
    finished_operations: int = 0
    errored_operations: int = 0
    completed_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    archive: bytes | None = None
    deleted: bool = False

    @property
    def total_operations(self) -> int:
        return len(self.operations)

    @property
    def pending(self) -> bool:
        """Not finished yet: counts against the 500 pending batches."""
        return self.status != "finished"


class BatchQueue:
    """The account's batches and the worker that runs them."""

    def __init__(
        self,
        execute: Executor,
        calls: CallLog,
        clock: Clock,
        root_url: Callable[[], str],
        *,
        delay: float = 0.0,
        hold: bool = False,
    ) -> None:
        self._execute = execute
        self._calls = calls
        self._clock = clock
        self._root_url = root_url
        # _lock guards the batches; _run_lock is held while one operation
        # runs, so that reset() never lets an old job touch a fresh store.
        # Order: _run_lock before _lock.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._run_lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._generation = 0
        self._delay = delay
        self._hold = hold
        self._stopping = False
        self._worker: threading.Thread | None = None

    # -- settings -----------------------------------------------------------------

    @property
    def delay(self) -> float:
        """Seconds a job stays pending, then again how long it stays started."""
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"batch delay must be 0 or more, got {seconds}")
        with self._changed:
            self._delay = seconds
            self._changed.notify_all()

    @property
    def hold(self) -> bool:
        """While true, jobs stay pending (to fill the queue, or freeze a poller)."""
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        with self._changed:
            self._hold = value
            self._changed.notify_all()

    # -- life cycle ---------------------------------------------------------------

    def start(self, name: str = "mailchimp-emulator-batches") -> None:
        with self._changed:
            if self._worker is not None:
                return
            self._stopping = False
            self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            worker, self._worker = self._worker, None
            self._changed.notify_all()
        if worker is not None:
            worker.join()

    def reset(self) -> None:
        """Forget every job; one being run stops before its next operation."""
        with self._run_lock, self._changed:
            self._generation += 1
            self._batches.clear()
            self._changed.notify_all()

    # -- inspection ---------------------------------------------------------------

    def batches(self) -> list[Batch]:
        with self._lock:
            return list(self._batches.values())

    def get(self, batch_id: str) -> Batch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def pending_count(self) -> int:
        with self._lock:
            return sum(1 for b in self._batches.values() if b.pending)

    def wait_finished(self, batch_id: str, timeout: float = 10.0) -> Batch:
        """Block until the job is finished (for tests that do not poll)."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (b := self._batches.get(batch_id)) is None or b.status == "finished",
                timeout,
            )
            batch = self._batches.get(batch_id)
        if batch is None:
            raise KeyError(f"no batch {batch_id}")
        if not done:
            raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout}s")
        return batch

    # -- the API ------------------------------------------------------------------

    def submit(self, body: Any) -> dict[str, Any]:
        """``POST /batches``: check the schema, queue the job, answer its status."""
        operations = parse_operations(body)
        with self._changed:
            if sum(1 for b in self._batches.values() if b.pending) >= MAX_PENDING:
                raise too_many_pending()
            batch = Batch(
                id=uuid.uuid4().hex[:10],
                operations=operations,
                submitted_at=self._clock(),
                signature=secrets.token_hex(16),
                submitted_tick=time.monotonic(),
            )
            self._batches[batch.id] = batch
            self._changed.notify_all()
            return self._render(batch)

    def status_json(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._existing(batch_id))

    def list_json(self, query: Mapping[str, str]) -> dict[str, Any]:
        count, offset = page(query, default_count=10)
        with self._lock:
            batches = list(self._batches.values())
            return {
                "batches": [self._render(b) for b in batches[offset : offset + count]],
                "total_items": len(batches),
                "_links": [],
            }

    def delete(self, batch_id: str) -> None:
        """``DELETE /batches/{id}``: stop it; results of what ran are gone too."""
        with self._changed:
            batch = self._existing(batch_id)
            batch.deleted = True
            del self._batches[batch_id]
            self._changed.notify_all()

    def download(self, name: str, query: Mapping[str, str]) -> tuple[int, bytes, str]:
        """The results archive ``{id}.tar.gz``, answered the way S3 would."""
        batch_id = name.removesuffix(".tar.gz")
        with self._lock:
            batch = self._batches.get(batch_id) if name.endswith(".tar.gz") else None
            archive = batch.archive if batch is not None else None
        if batch is None or archive is None:
            return 404, _s3_error("NoSuchKey", "The specified key does not exist."), XML_TYPE
        if not secrets.compare_digest(query.get("signature", ""), batch.signature):
            return 403, _s3_error("AccessDenied", "Access Denied"), XML_TYPE
        return 200, archive, ARCHIVE_TYPE

    def results_url(self, batch: Batch) -> str:
        return f"{self._root_url()}{RESULTS_PREFIX}/{batch.id}.tar.gz?signature={batch.signature}"

    def _existing(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found()
        return batch

    def _render(self, batch: Batch) -> dict[str, Any]:
        finished = batch.status == "finished"
        return {
            "id": batch.id,
            "status": batch.status,
            "total_operations": batch.total_operations,
            "finished_operations": batch.finished_operations,
            "errored_operations": batch.errored_operations,
            "submitted_at": timestamp(batch.submitted_at),
            # Mailchimp sends empty strings until the job is done.
            "completed_at": timestamp(batch.completed_at) if batch.completed_at else "",
            "response_body_url": self.results_url(batch) if finished else "",
            "_links": [],
        }

    # -- the worker ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._changed:
                batch = self._next_due()
                if batch is None:
                    return  # stopping
                batch.status = "preprocessing"
                generation = self._generation
            self._run(batch, generation)

    def _next_due(self) -> Batch | None:
        """The oldest pending job once its delay is over; None when stopping.

        Called with the lock held; waits on the condition, which every
        submission, setting change, deletion, reset and stop notifies.
        """
        while not self._stopping:
            waiting = next((b for b in self._batches.values() if b.status == "pending"), None)
            if waiting is None or self._hold:
                self._changed.wait()
                continue
            left = waiting.submitted_tick + self._delay - time.monotonic()
            if left <= 0:
                return waiting
            self._changed.wait(left)
        return None

    def _abandoned(self, batch: Batch, generation: int) -> bool:
        return self._stopping or batch.deleted or generation != self._generation

    def _pause(self, seconds: float, batch: Batch, generation: int) -> bool:
        """Sleep unless interrupted; True when the job must be dropped."""
        with self._changed:
            if seconds > 0:
                self._changed.wait_for(lambda: self._abandoned(batch, generation), seconds)
            return self._abandoned(batch, generation)

    def _run(self, batch: Batch, generation: int) -> None:
        step = self._delay / batch.total_operations if batch.total_operations else 0.0
        with self._changed:
            batch.status = "started"
            self._changed.notify_all()
        for operation in batch.operations:
            if self._pause(step, batch, generation):
                return
            with self._run_lock:
                with self._lock:
                    if self._abandoned(batch, generation):
                        return
                endpoint, entry = self._execute_one(operation)
            with self._changed:
                batch.results.append(entry)
                batch.finished_operations += 1
                if entry["status_code"] >= 400:
                    batch.errored_operations += 1
            self._calls.record_operation(
                OperationCall(
                    batch.id,
                    operation.operation_id,
                    operation.method,
                    operation.path,
                    endpoint,
                    str(entry["status_code"]),
                )
            )
        with self._changed:
            if self._abandoned(batch, generation):
                return
            batch.status = "finalizing"
            results = list(batch.results)
        completed = self._clock()
        archive = results_archive(batch.id, results, completed)
        with self._changed:
            if self._abandoned(batch, generation):
                return
            batch.archive = archive
            batch.completed_at = completed
            batch.status = "finished"
            self._changed.notify_all()

    def _execute_one(self, operation: BatchOperation) -> tuple[str, dict[str, Any]]:
        path, _, inline_query = operation.path.partition("?")
        query = {**dict(parse_qsl(inline_query, keep_blank_values=True)), **operation.params}
        raw = (operation.body or "") if operation.method in METHODS_WITH_BODY else ""
        endpoint, outcome = self._execute(operation.method, path, query, raw)
        body = outcome.body
        if outcome.problem and isinstance(body, dict) and "instance" in body:
            # An error inside a job has no request of its own to point at:
            # Mailchimp leaves its problem's `instance` empty there.
            body = {**body, "instance": ""}
        response = "" if body is None else json.dumps(body)
        entry = {
            "status_code": outcome.status,
            "operation_id": operation.operation_id,
            "response": response,
        }
        return endpoint, entry


# -- routes, for the server ---------------------------------------------------------

BATCH_ROUTES: Router[BatchQueue] = Router()


@BATCH_ROUTES.add("POST", "/batches")
def start_batch(queue: BatchQueue, request: Request) -> Answer:
    return Answer(200, queue.submit(request.body))


@BATCH_ROUTES.add("GET", "/batches")
def list_batches(queue: BatchQueue, request: Request) -> Answer:
    return Answer(200, queue.list_json(request.query))


@BATCH_ROUTES.add("GET", "/batches/{batch_id}")
def batch_status(queue: BatchQueue, request: Request) -> Answer:
    return Answer(200, queue.status_json(request.params["batch_id"]))


@BATCH_ROUTES.add("DELETE", "/batches/{batch_id}")
def delete_batch(queue: BatchQueue, request: Request) -> Answer:
    queue.delete(request.params["batch_id"])
    return Answer(204)


# -- request checks, archive, errors -------------------------------------------------


def parse_operations(body: Any) -> tuple[BatchOperation, ...]:
    """The operations of a ``POST /batches`` body; 400 listing every misfit."""
    if not isinstance(body, dict):
        raise invalid(errors=[FieldError("", "Schema describes object")])
    items = body.get("operations")
    if items is None:
        raise invalid(errors=[FieldError("operations", "Required property operations is missing")])
    if not isinstance(items, list):
        raise invalid(errors=[FieldError("operations", "Schema describes array")])
    problems: list[FieldError] = []
    operations: list[BatchOperation] = []
    for i, item in enumerate(items):
        where = f"operations.{i}"
        if not isinstance(item, dict):
            problems.append(FieldError(where, "Schema describes object"))
            continue
        found = _check_operation(item, where)
        if isinstance(found, BatchOperation):
            operations.append(found)
        else:
            problems.extend(found)
    if problems:
        raise invalid(errors=problems)
    return tuple(operations)


def _check_operation(item: Mapping[str, Any], where: str) -> BatchOperation | list[FieldError]:
    problems: list[FieldError] = []
    method, path = item.get("method"), item.get("path")
    params, body, operation_id = item.get("params"), item.get("body"), item.get("operation_id")
    if method is None:
        problems.append(FieldError(f"{where}.method", "Required property method is missing"))
    elif method not in METHODS:
        problems.append(FieldError(f"{where}.method", f"Value is not one of: {', '.join(METHODS)}"))
    if path is None:
        problems.append(FieldError(f"{where}.path", "Required property path is missing"))
    elif not isinstance(path, str) or not path.startswith("/"):
        problems.append(
            FieldError(f"{where}.path", "Must be a path relative to the API root, like /lists")
        )
    if params is not None and (
        not isinstance(params, dict)
        or not all(isinstance(v, str | int | float | bool) for v in params.values())
    ):
        problems.append(FieldError(f"{where}.params", "Schema describes object of scalars"))
    if body is not None and not isinstance(body, str):
        # The classic mistake: an object where Mailchimp wants a JSON string.
        problems.append(FieldError(f"{where}.body", "Schema describes string"))
    if operation_id is not None and not isinstance(operation_id, str):
        problems.append(FieldError(f"{where}.operation_id", "Schema describes string"))
    if problems:
        return problems
    return BatchOperation(
        method=str(method),
        path=str(path),
        params={str(k): _query_value(v) for k, v in (params or {}).items()},
        body=body,
        operation_id=operation_id,
    )


def _query_value(value: str | int | float | bool) -> str:
    # As they would appear in a query string; JSON's true, not Python's True.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def results_archive(batch_id: str, results: list[dict[str, Any]], completed: datetime) -> bytes:
    """A gzipped tar: a directory holding JSON files of ≤ RESULTS_PER_FILE entries."""
    mtime = int(completed.timestamp())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        folder = tarfile.TarInfo(batch_id)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, mtime
        tar.addfile(folder)
        chunks = [
            results[start : start + RESULTS_PER_FILE]
            for start in range(0, len(results), RESULTS_PER_FILE)
        ] or [[]]
        for n, chunk in enumerate(chunks):
            payload = json.dumps(chunk).encode("utf-8")
            info = tarfile.TarInfo(f"{batch_id}/{n}.json")
            info.size, info.mode, info.mtime = len(payload), 0o644, mtime
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def too_many_pending() -> ApiProblem:
    # Mailchimp documents the limit, not the answer; a 429 is what a client
    # must expect from it anyway (wait, then try again).
    return ApiProblem(
        429,
        "Too Many Requests",
        f"You have more than {MAX_PENDING} pending batches. "
        "Wait for some to finish before starting another.",
    )


def _s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
