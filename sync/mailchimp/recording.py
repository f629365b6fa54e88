"""Recording what Mailchimp accepted or refused, member by member, in one push.

``Outcome`` is what one phase (or one chunk of it) learnt; ``PushRecorder``
writes it to the ledger (acceptances first, failures after, so that a failure
stays visible) and keeps, for the whole push, the members that failed and
those found archived. ``PushRecorder.failure`` turns an answer into a
``PushFailure`` with its back-off: permanent answers wait
``permanent_backoff``, transient ones a doubling ``transient_backoff``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from sync.mailchimp.answers import Answer, AnswerClass
from sync.mailchimp.caller import Caller
from sync.mailchimp.ledger import AcceptedPush, PushFailure, PushLedger
from sync.mailchimp.push_plan import ARCHIVED_REASON, MemberPlan
from sync.mailchimp.sink_config import SinkConfig

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one phase learnt: acceptances and failures, to be recorded."""

    accepted: list[AcceptedPush] = field(default_factory=list)
    failures: list[PushFailure] = field(default_factory=list)


class PushRecorder:
    """Records one push's outcomes in the ledger; remembers who failed."""

    def __init__(
        self,
        caller: Caller,
        ledger: PushLedger,
        config: SinkConfig,
        now: datetime,
        unrecorded: list[Outcome] | None = None,
    ) -> None:
        self.caller = caller
        self.ledger = ledger
        self.config = config
        self.now = now
        self.list_id = caller.list_id
        #: Outcomes Mailchimp accepted that the ledger could not take (the
        #: state store's disk full, its server gone): kept by the sink across
        #: pushes, and written before the next push sends anything.
        self.unrecorded = unrecorded if unrecorded is not None else []
        #: Members whose last failure in this push is this one.
        self.failed: dict[str, PushFailure] = {}
        #: Members found archived by the answer to a PUT.
        self.archived: set[str] = set()
        #: Whether this push has confirmed that the audience exists (asked
        #: once, at the first "not found" about a member).
        self._audience_confirmed = False

    def record(self, outcome: Outcome) -> None:
        """Write ``outcome`` to the ledger (once: it is not cleared).

        When the ledger cannot take it, Mailchimp has the work all the same:
        the outcome is kept in ``unrecorded`` and the error goes on (the push
        stops), so that the next push writes it before sending anything,
        instead of sending it all again."""
        try:
            self._write(outcome)
        except Exception:
            self.unrecorded.append(outcome)
            raise

    def record_unrecorded(self) -> None:
        """Write what earlier pushes could not record; raises, leaving it
        kept, while the ledger still cannot take it."""
        while self.unrecorded:
            self._write(self.unrecorded[0])
            self.unrecorded.pop(0)

    def _write(self, outcome: Outcome) -> None:
        # A member may both get a tag accepted and an event refused: record the
        # acceptance first, the failure after, so the failure stays visible.
        if outcome.accepted:
            self.ledger.record_accepted_many(outcome.accepted)
        if outcome.failures:
            self.ledger.record_failures(outcome.failures)
            for f in outcome.failures:
                self.failed[f.email] = f
                log.warning(
                    "push to %s failed (%s): %s",
                    f.email,
                    "permanent" if f.permanent else "transient",
                    f.reason,
                )

    # -- failures --------------------------------------------------------------

    def failure(self, plan: MemberPlan, answer: Answer, what: str) -> PushFailure:
        if answer.code == "not_found":
            self._confirm_audience()
        now = self.now
        previous = plan.previous_failure
        attempts = (
            previous.attempts + 1
            if previous is not None and previous.fingerprint == plan.fingerprint
            else 1
        )
        permanent = answer.kind is not AnswerClass.TRANSIENT
        if permanent:
            retry_at = now + self.config.permanent_backoff
        else:
            growth = self.config.transient_backoff * (2 ** min(attempts - 1, 20))
            retry_at = now + min(growth, self.config.max_transient_backoff)
        return PushFailure(
            email=plan.key,
            reason=f"{what}: {answer.reason}",
            permanent=permanent,
            failed_at=now,
            fingerprint=plan.fingerprint,
            attempts=attempts,
            next_retry_at=retry_at,
        )

    def _confirm_audience(self) -> None:
        """A member call answered "not found": about that member, or is the
        whole audience gone (deleted in Mailchimp mid-run)? Asked once per
        push; a missing audience raises ``AudienceMissing`` (one error for
        the run, not one warning per member)."""
        if self._audience_confirmed:
            return
        self._audience_confirmed = True
        self.caller.call(
            f"GET /lists/{self.list_id}",
            lambda: self.caller.client.lists.get_list(self.list_id, fields=["id"]),
            scope="run",
        )

    def archived_failure(self, plan: MemberPlan) -> PushFailure:
        """The record of a member not pushed because it is archived: permanent,
        so it waits ``permanent_backoff`` unless it is unarchived sooner."""
        answer = Answer(AnswerClass.PERMANENT, "archived", ARCHIVED_REASON)
        return replace(self.failure(plan, answer, "push"), reason=ARCHIVED_REASON)

    def invalid_values(self, plan: MemberPlan) -> PushFailure:
        """The failure of a member with values that are not JSON."""
        answer = Answer(
            AnswerClass.PERMANENT,
            "not_json",
            "; ".join(f"{t}: {why}" for t, why in sorted(plan.invalid.items())),
        )
        return self.failure(plan, answer, "merge values not sent")
