"""The audience's merge tags, and the values a push cannot have kept.

A merge tag the audience does not have is **not refused** by Mailchimp: the
value is dropped with a 200 answer. So the sink reads the audience's merge
tags (``AudienceTags``, once per ``merge_fields_ttl``, again as soon as a tag
comes back missing), holds back values of tags the audience lacks
(``screen_audience``), compares the ``merge_fields`` of every answer with what
it sent (``MissingTags.kept``), and reports what was not kept
(``MissingTags.report``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sync.mailchimp.caller import Caller
from sync.mailchimp.ledger import AudienceProblem, PushLedger
from sync.mailchimp.push_plan import MemberPlan
from sync.mailchimp.summary import PushSummary
from sync.records import MergeValue

log = logging.getLogger(__name__)


class AudienceTags:
    """The audience's merge tags as last read, and when (kept across pushes)."""

    def __init__(self, caller: Caller, ledger: PushLedger, ttl: timedelta) -> None:
        self.caller = caller
        self.ledger = ledger
        self.ttl = ttl
        self.list_id = caller.list_id
        # The audience's merge tags as last read, and when (None: read them).
        self._tags: frozenset[str] | None = None
        self._read_at: datetime | None = None

    def read(self, now: datetime) -> frozenset[str] | None:
        """The audience's merge tags: cached for ``merge_fields_ttl``, read
        again at once after a tag came back missing. None when never read."""
        if self._read_at is not None and now - self._read_at < self.ttl:
            return self._tags
        client, list_id = self.caller.client, self.list_id
        answer = self.caller.call(
            f"GET /lists/{list_id}/merge-fields",
            lambda: client.lists.get_list_merge_fields(list_id, count=1000),
            scope="run",
        )
        if not answer.ok or not isinstance(answer.body, Mapping):
            # Pushing goes on: every answer is still compared with what was sent.
            log.warning("audience %s: merge fields not read (%s)", list_id, answer.reason)
            return self._tags
        tags = frozenset(
            str(f.get("tag"))
            for f in answer.body.get("merge_fields") or []
            if isinstance(f, Mapping) and f.get("tag")
        )
        self._tags, self._read_at = tags, now
        back = [p.tag for p in self.ledger.audience_problems() if p.tag in tags]
        if back:
            self.ledger.clear_audience_problems(back)
            log.info("audience %s: merge tags back: %s", list_id, ", ".join(back))
        return tags

    def forget(self) -> None:
        """The audience changed: read its tags at the next push."""
        self._read_at = None


@dataclass
class MissingTags:
    """Per push: tag -> values not sent or dropped because the audience lacks
    it, and the members concerned."""

    audience: AudienceTags
    counts: Counter[str] = field(default_factory=Counter)
    #: Members (lower-cased) with values of a missing tag not kept.
    members: set[str] = field(default_factory=set)

    def screen(self, plans: Sequence[MemberPlan], now: datetime) -> list[MemberPlan]:
        """The plans without values of tags the audience lacks (Mailchimp would
        drop them with a 200): held back, to be sent once the field exists."""
        if not any(p.fields for p in plans):
            return list(plans)
        tags = self.audience.read(now)
        if tags is None:
            return list(plans)
        screened: list[MemberPlan] = []
        for p in plans:
            missing = {t: v for t, v in p.fields.items() if t not in tags}
            if missing:
                self.counts.update(missing.keys())
                self.members.add(p.key)
                p = replace(
                    p, fields={t: v for t, v in p.fields.items() if t in tags}, withheld=missing
                )
            screened.append(p)
        return screened

    def kept(self, plan: MemberPlan, returned: object) -> dict[str, MergeValue]:
        """The values of ``plan`` that Mailchimp kept, by the ``merge_fields``
        of the member it returned; a tag missing there was dropped."""
        fields = returned.get("merge_fields") if isinstance(returned, Mapping) else None
        if not isinstance(fields, Mapping):
            return dict(plan.fields)  # nothing to compare with: trust the 200
        kept = {t: v for t, v in plan.fields.items() if t in fields}
        dropped = [t for t in plan.fields if t not in fields]
        if dropped:
            self.counts.update(dropped)
            self.members.add(plan.key)
            self.audience.forget()  # the audience changed: read it next time
        return kept

    def report(self, summary: PushSummary, now: datetime) -> None:
        """Tags the audience lacks: counted in ``summary`` and recorded as
        audience problems (shown by ``mailsync status``)."""
        if not self.counts:
            return
        summary.missing_merge_tags = dict(self.counts)
        summary.not_kept = sorted(self.members)
        problems = []
        for tag, count in sorted(self.counts.items()):
            reason = (
                f"merge tag {tag} is not in audience {self.audience.list_id} (deleted or "
                "renamed in Mailchimp?): its values are not kept; they are sent again once "
                "the field exists (`mailsync check --fix` creates it)"
            )
            log.error("%s; %d value(s) not kept in this push", reason, count)
            problems.append(AudienceProblem(tag, reason, count, now))
        self.audience.ledger.record_audience_problems(problems)
