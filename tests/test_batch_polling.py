"""When a ``/batches`` job is polled: the doubling schedule, and one poll
sooner when the job's progress says it will be done before the next one.

``responses`` plays Mailchimp with a job that runs on a simulated clock:
``pending`` for ``queued`` seconds, then ``started`` at ``rate`` operations
a second, then ``finalizing`` for ``archive`` seconds. The polling sleeps
on that clock, so the test sees the instant of every poll.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import requests
import responses

from sync.mailchimp.batches import BatchPolling, Operation, run_batch_operations
from sync.mailchimp.caller import Caller, RetryPolicy
from sync.mailchimp.client import MailchimpSettings, make_client
from tests.support.mailchimp_api import results_archive

KEY = "c0ffee00c0ffee00c0ffee00c0ffee00-us19"
BASE = "https://us19.api.mailchimp.com/3.0"
LIST = "L1"


@dataclass
class PacedJob:
    """One job whose state follows the simulated clock ``now``."""

    total: int
    queued: float = 0.0
    rate: float = 1000.0  # operations a second once started
    archive: float = 0.0  # seconds in ``finalizing``
    #: Counts sent as text: what a proxy or a changed API might do.
    counts_as_text: bool = False
    now: float = 0.0
    polls: list[tuple[float, str, int]] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds

    def state(self) -> tuple[str, int]:
        running = self.now - self.queued
        if running <= 0:
            return "pending", 0
        done = min(self.total, int(running * self.rate))
        if done < self.total:
            return "started", done
        if running < self.total / self.rate + self.archive:
            return "finalizing", done
        return "finished", done

    def start(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = {"id": "b1", "status": "pending", "total_operations": self.total}
        return 200, {}, json.dumps(body | {"finished_operations": 0})

    def status(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        state, done = self.state()
        self.polls.append((round(self.now, 3), state, done))
        body = {
            "id": "b1",
            "status": state,
            "total_operations": self.total,
            "finished_operations": f"{done} done" if self.counts_as_text else done,
            "errored_operations": 0,
            "response_body_url": "https://results.example/b1.tar.gz" if state == "finished" else "",
        }
        return 200, {}, json.dumps(body)

    def results(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        entries = [
            {"operation_id": f"op{i}", "status_code": 200, "response": "{}"}
            for i in range(self.total)
        ]
        return 200, {}, results_archive(entries)


def run(job: PacedJob, deadline: float = 60.0) -> dict[str, str]:
    """Submit ``job.total`` operations and poll with the daemon's defaults
    (first poll after 1 s), on the job's clock; the answer code per operation."""
    json_type = "application/json"
    responses.add_callback(
        responses.POST, f"{BASE}/batches", callback=job.start, content_type=json_type
    )
    status_url = re.compile(rf"{BASE}/batches/\w+")
    responses.add_callback(responses.GET, status_url, callback=job.status, content_type=json_type)
    responses.add_callback(responses.GET, re.compile(r"https://results\.example/.*"), job.results)
    caller = Caller(make_client(MailchimpSettings(KEY, LIST, timeout=5)), LIST, RetryPolicy())
    polling = BatchPolling(deadline=deadline, sleep=job.sleep, clock=lambda: job.now)
    operations = [
        Operation(f"op{i}", "PUT", f"/lists/{LIST}/members/{i}", {"email_address": f"{i}@x.io"})
        for i in range(job.total)
    ]
    answers = run_batch_operations(caller, operations, polling)
    return {op: answer.code for op, answer in answers.items()}


@responses.activate
def test_a_job_about_to_finish_is_polled_when_its_pace_says_it_is_done() -> None:
    # 1,500 operations at 1,000 a second: 1,000 done at the first poll, so
    # the job should end half a second later; polled then (with a tenth
    # more), not at the schedule's next poll, 3 s after the start.
    job = PacedJob(total=1500)
    answers = run(job)
    assert job.polls == [(1.0, "started", 1000), (1.55, "finished", 1500)]
    assert set(answers.values()) == {"ok"}
    # Start, two polls, the results: the calls of the schedule alone.
    assert len(responses.calls) == 4


@responses.activate
def test_the_early_poll_is_one_per_scheduled_poll() -> None:
    # The job slows down after the first poll is read (a long finalizing):
    # one early poll, then the schedule (3, 7 s after the start) as before.
    job = PacedJob(total=1500, archive=5.0)
    run(job)
    assert job.polls == [
        (1.0, "started", 1000),
        (1.55, "finalizing", 1500),
        (3.0, "finalizing", 1500),
        (7.0, "finished", 1500),
    ]


@responses.activate
def test_a_queued_job_is_polled_on_the_doubling_schedule() -> None:
    # Pending until 5 s: no pace to go by, polls at 1, 3, 7 s. At 7 s, 2,000
    # of 3,000 done since the look at 3 s: a pace of at least 500 a second
    # (it may have started any time after 3 s), 2.2 s more with the tenth.
    job = PacedJob(total=3000, queued=5.0)
    run(job)
    assert job.polls == [
        (1.0, "pending", 0),
        (3.0, "pending", 0),
        (7.0, "started", 2000),
        (9.2, "finished", 3000),
    ]


@responses.activate
def test_a_long_job_is_not_left_waiting_for_the_next_doubling() -> None:
    # 20 s of steady work: the schedule alone polls at 1, 3, 7, 15 and 31 s.
    # At 15 s, 750 of 1,000 done, 400 of them in the 8 s since the look at
    # 7 s: 250 left at 50 a second, 5.5 s with the tenth.
    job = PacedJob(total=1000, rate=50.0)
    run(job)
    assert [(at, state) for at, state, _ in job.polls] == [
        (1.0, "started"),
        (3.0, "started"),
        (7.0, "started"),
        (15.0, "started"),
        (20.5, "finished"),
    ]


@responses.activate
def test_a_job_not_finished_by_the_deadline_is_left_running() -> None:
    job = PacedJob(total=1500, queued=100.0)
    answers = run(job, deadline=10.0)
    assert [at for at, _, _ in job.polls] == [1.0, 3.0, 7.0, 10.0]
    assert set(answers.values()) == {"batch_running"}


@responses.activate
def test_counts_that_are_not_numbers_leave_the_schedule_alone() -> None:
    job = PacedJob(total=1500, counts_as_text=True)
    answers = run(job)
    assert [(at, state) for at, state, _ in job.polls] == [(1.0, "started"), (3.0, "finished")]
    assert set(answers.values()) == {"ok"}
