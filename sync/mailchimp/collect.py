"""Collecting the ``/batches`` jobs that earlier pushes left running.

A push waits for a job only ``BatchPolling.deadline`` seconds; Mailchimp
runs an account's jobs one after the other and can take much longer. The
operations of a job still running are recorded in the ledger with their
members' plans (``sync.mailchimp.running``), and those members are not pushed
again until it is collected. ``collect_jobs``, run by the sink before the
cycle derives anything, reads each such job's status (one call) and, once
it is finished, its results: each answer is applied as the push that sent it
would have (values accepted, failures and their back-off, events recorded
sent or their intents kept), the job is forgotten, and the members whose
update was accepted get the tags and events that follow it.

A job Mailchimp no longer knows (404) answers "unanswered" for each
operation: updates and tags are retried with back-off, events keep their
intents and are looked up in Mailchimp before any is sent again. A job
still running ``GIVE_UP`` after it was submitted is forgotten the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import cast

from sync.exceptions import FatalError
from sync.mailchimp.answers import Answer, AnswerClass
from sync.mailchimp.batches import Operation, collect_batch
from sync.mailchimp.ledger import RunningOperation
from sync.mailchimp.merge_tags import MissingTags
from sync.mailchimp.operations import MemberOp, OpKind, OpRunner
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.recording import PushRecorder
from sync.mailchimp.running import plan_from_json
from sync.mailchimp.subscribe import UpdateAnswers, Upsert
from sync.mailchimp.summary import PushSummary
from sync.mailchimp.tags_events import TagsEventsAnswers, record_tags_events, tags_and_events

log = logging.getLogger(__name__)

#: A job still running this long after it was submitted is given up on.
GIVE_UP = timedelta(days=1)


def collect_jobs(
    pool: ThreadPoolExecutor,
    runner: OpRunner,
    recorder: PushRecorder,
    missing: MissingTags,
    summary: PushSummary,
) -> None:
    """Collect every finished job left running; forget those given up."""
    jobs = recorder.ledger.running_operations()
    if not jobs:
        return
    timeout = float(runner.caller.client.api_client.timeout)
    # One status read per job, side by side on the push's connections.
    reads = {
        batch_id: pool.submit(
            collect_batch, runner.caller, batch_id, [o.operation_id for o in ops], timeout
        )
        for batch_id, ops in jobs.items()
    }
    fatal: FatalError | None = None
    for batch_id, ops in jobs.items():
        answers = reads[batch_id].result()
        if answers is None:
            if recorder.now - ops[0].submitted_at < GIVE_UP:
                continue  # still running: its members wait
            log.warning(
                "batch %s still running %s after it was submitted: given up; its %d "
                "operations are sent again (events once looked up in Mailchimp)",
                batch_id,
                recorder.now - ops[0].submitted_at,
                len(ops),
            )
            answers = {}
        try:
            _apply(pool, runner, recorder, missing, summary, batch_id, ops, answers)
        except FatalError as exc:
            fatal = fatal or exc
    if fatal is not None:
        raise fatal


def _apply(
    pool: ThreadPoolExecutor,
    runner: OpRunner,
    recorder: PushRecorder,
    missing: MissingTags,
    summary: PushSummary,
    batch_id: str,
    ops: Sequence[RunningOperation],
    answers: Mapping[str, Answer],
) -> None:
    """Apply one job's answers (those it lacks: unanswered), forget the job,
    then send what follows the updates it carried."""
    unanswered = Answer(
        AnswerClass.TRANSIENT, "batch_unanswered", f"batch {batch_id}: no answer collected"
    )
    member_ops = _member_ops(recorder, batch_id, ops)
    upsert = Upsert()
    updates = UpdateAnswers(recorder, missing, upsert)
    others = TagsEventsAnswers(recorder)
    fatal: FatalError | None = None
    for op in member_ops:
        answer = answers.get(op.operation.operation_id, unanswered)
        if answer.kind is AnswerClass.FATAL:
            fatal = fatal or FatalError(f"Mailchimp {op.kind} for {op.plan.email}: {answer.reason}")
            continue
        (updates if op.kind == "upsert" else others).apply(op, answer)
    updates.record()
    record_tags_events(
        [op.plan for op in member_ops if op.kind != "upsert"], recorder, others.outcome, summary
    )
    recorder.ledger.forget_running(batch_id)
    summary.collected += len(ops)
    if fatal is not None:
        raise fatal
    follow = _still_to_send(recorder, upsert.done)
    if follow:
        tags_and_events(pool, follow, runner, recorder, summary)


def _member_ops(
    recorder: PushRecorder, batch_id: str, ops: Sequence[RunningOperation]
) -> list[MemberOp]:
    """The operations as the push that sent them knew them, each member with
    its failure on record now (for the back-off of a new one)."""
    states = recorder.ledger.member_states({o.email for o in ops})
    member_ops = []
    for o in ops:
        state = states.get(o.email)
        plan, event = plan_from_json(o.plan_json, state.failure if state else None)
        # The answer is matched by operation id; the rest was in the job.
        operation = Operation(o.operation_id, "POST", f"(batch {batch_id})", {})
        member_ops.append(MemberOp(cast(OpKind, o.kind), plan, operation, event))
    return member_ops


def _still_to_send(recorder: PushRecorder, plans: Sequence[MemberPlan]) -> list[MemberPlan]:
    """The plans whose update was accepted, with the events not recorded sent
    since they were planned; those with nothing left to send are dropped."""
    ledger = recorder.ledger
    keys = [p.key for p in plans]
    sent = ledger.sent_events(keys)
    pending = ledger.pending_events(keys)
    follow = []
    for plan in plans:
        done = sent.get(plan.key, set())
        plan = replace(
            plan,
            fields={},
            events=tuple(e for e in plan.events if e.key not in done),
            unsettled_events=plan.key in pending,
        )
        if plan.needs_tags or plan.events or plan.unsettled_events:
            follow.append(plan)
    return follow
