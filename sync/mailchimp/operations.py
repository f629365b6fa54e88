"""Sending member operations: direct calls for a few, ``/batches`` jobs for many.

A ``MemberOp`` is one operation for one member (a safe upsert, a tags update,
an event). ``OpRunner.run`` sends them directly when there are fewer than
``bulk_threshold`` (or ``/batches`` is not served), else as jobs of
``job_size`` operations, and hands every answer to the phase that asked
(``handle``). A fatal answer stops the run once the answers already in are
handled (``collect``). The operations of a job left running (not finished
within ``BatchPolling.deadline``) are recorded in the ledger before their
``RUNNING`` answers are handed on, for a later push to collect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sync.addresses import subscriber_hash
from sync.exceptions import FatalError
from sync.mailchimp.answers import Answer, AnswerClass
from sync.mailchimp.batches import (
    RUNNING,
    BatchesUnavailable,
    Operation,
    iter_chunks,
    run_batch_operations,
)
from sync.mailchimp.caller import Caller, json_safe
from sync.mailchimp.client import put_member
from sync.mailchimp.ledger import PushLedger
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.running import running_operations
from sync.mailchimp.sink_config import SinkConfig
from sync.records import EventDue

log = logging.getLogger(__name__)

OpKind = Literal["upsert", "tags", "event"]
#: ``/batches`` jobs per page when listing them (Mailchimp's maximum).
JOBS_PAGE = 1000


@dataclass(frozen=True)
class MemberOp:
    kind: OpKind
    plan: MemberPlan
    operation: Operation
    event: EventDue | None = None


#: What a phase does with the answer to one of its operations.
Handler = Callable[[MemberOp, Answer], None]


def collect(futures: Sequence[Future[Any]], handle: Callable[[Any], None]) -> None:
    """Apply results as they come; on a fatal answer, cancel what has not
    started, still apply what had (so accepted events get recorded), then raise."""
    fatal: FatalError | None = None
    for future in as_completed(futures):
        try:
            handle(future.result())
        except CancelledError:
            continue
        except FatalError as exc:
            if fatal is None:
                fatal = exc
                for other in futures:
                    other.cancel()
    if fatal is not None:
        raise fatal


JobResult = tuple[Sequence[MemberOp], dict[str, Answer] | None]


@dataclass
class _JobAnswers:
    """Applies the answers of the ``/batches`` jobs of one ``run``; keeps the
    operations of jobs that could not run, to send them one by one."""

    ops: Sequence[MemberOp]
    handle: Handler
    #: Records the operations of a job left running (``OpRunner.record_running``).
    left_running: Callable[[Sequence[MemberOp], str], None]
    fallback: list[MemberOp] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_id = {op.operation.operation_id: op for op in self.ops}

    def apply(self, result: JobResult) -> None:
        chunk, answers = result
        if answers is None:
            self.fallback.extend(chunk)
            return
        running = next((a for a in answers.values() if a.code == RUNNING), None)
        if running is not None:
            # Recorded (on the push's thread) before any phase hears of it.
            self.left_running(chunk, str(running.body["batch_id"]))
        # Apply every non-fatal answer of the job before stopping the run.
        fatal = [(i, a) for i, a in answers.items() if a.kind is AnswerClass.FATAL]
        for op_id, answer in answers.items():
            if answer.kind is not AnswerClass.FATAL:
                self.handle(self.by_id[op_id], answer)
        if fatal:
            op_id, answer = fatal[0]
            raise FatalError(f"Mailchimp {self.by_id[op_id].operation.path}: {answer.reason}")


class OpRunner:
    """Runs member operations for the sink; remembers, across pushes, that
    ``/batches`` is not served."""

    def __init__(
        self,
        caller: Caller,
        config: SinkConfig,
        ledger: PushLedger,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.caller = caller
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.list_id = caller.list_id
        self.batches_unavailable = False

    def direct(self, op: MemberOp) -> Answer:
        client, list_id = self.caller.client, self.list_id
        h = subscriber_hash(op.plan.email)
        body = json_safe(op.operation.body)
        what = f"{op.operation.method} {op.operation.path}"
        if op.kind == "upsert":
            query = op.operation.params
            return self.caller.call(what, lambda: put_member(client, list_id, h, body, query))
        if op.kind == "tags":
            return self.caller.call(
                what, lambda: client.lists.update_list_member_tags(list_id, h, body)
            )
        # Not idempotent: never retried after an answer that may hide a success.
        return self.caller.call(
            what,
            lambda: client.lists.create_list_member_event(list_id, h, body),
            idempotent=False,
        )

    def _direct_pair(self, op: MemberOp) -> tuple[MemberOp, Answer]:
        return op, self.direct(op)

    def _job(self, chunk: Sequence[MemberOp]) -> JobResult:
        if self.batches_unavailable:
            return chunk, None
        try:
            answers = run_batch_operations(
                self.caller,
                [o.operation for o in chunk],
                self.config.polling,
                timeout=float(self.caller.client.api_client.timeout),
                # A job with events must not be started twice.
                idempotent=all(o.kind != "event" for o in chunk),
            )
        except BatchesUnavailable as exc:
            if not self.batches_unavailable:
                log.warning("POST /batches unavailable (%s): sending one by one", exc)
            self.batches_unavailable = True
            return chunk, None
        return chunk, answers

    def record_running(self, chunk: Sequence[MemberOp], batch_id: str) -> None:
        """The operations of a job left running, for a later push to collect."""
        self.ledger.record_running(
            running_operations(
                batch_id,
                [(o.operation.operation_id, o.kind, o.plan, o.event) for o in chunk],
                self.clock(),
            )
        )

    def run(self, pool: ThreadPoolExecutor, ops: Sequence[MemberOp], handle: Handler) -> None:
        """Send operations directly (few) or as ``/batches`` jobs (many)."""
        if not ops:
            return
        if (
            not self.config.use_batches
            or self.batches_unavailable
            or len(ops) < self.config.bulk_threshold
        ):
            collect([pool.submit(self._direct_pair, op) for op in ops], lambda pair: handle(*pair))
            return
        answers = _JobAnswers(ops, handle, self.record_running)
        jobs = [pool.submit(self._job, chunk) for chunk in iter_chunks(ops, self.config.job_size)]
        collect(jobs, answers.apply)
        if answers.fallback:
            self.run(pool, answers.fallback, handle)

    def batches_unsettled(self) -> bool:
        """Whether some ``/batches`` job of this key is not finished (or the
        list cannot be read): until then, intents cannot be settled. The
        jobs a push left running are not counted: the ledger knows their
        operations, and their members wait for them to be collected."""
        if not self.config.use_batches or self.batches_unavailable:
            return False
        known = self.ledger.running_batches()
        offset = 0
        while True:
            answer = self.caller.call(
                "GET /batches",
                lambda offset=offset: self.caller.client.batches.list(  # type: ignore[misc]
                    count=JOBS_PAGE, offset=offset
                ),
            )
            if answer.code in {"not_found", "method_not_allowed"}:
                return False  # no /batches here: no job can be running
            if not answer.ok or not isinstance(answer.body, Mapping):
                return True
            jobs = [b for b in answer.body.get("batches") or [] if isinstance(b, Mapping)]
            if any(b.get("status") != "finished" and b.get("id") not in known for b in jobs):
                return True
            offset += len(jobs)
            total = answer.body.get("total_items")
            if not jobs or not isinstance(total, int) or offset >= total:
                return False
