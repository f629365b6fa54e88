"""A member's plan kept with the operations of a ``/batches`` job left running.

A push waits for a job only so long (``BatchPolling.deadline``); the
operations of a job still running then are recorded in the ledger
(``RunningOperation``), each with its member's plan as JSON, so that the push
that collects the job (``sync.mailchimp.collect``) applies each answer as the
push that sent it would have: the values accepted, the failure and its
back-off (the plan's fingerprint), the tags and events that follow an
accepted update.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sync.mailchimp.ledger import PushFailure, RunningOperation
from sync.mailchimp.push_plan import MemberPlan
from sync.records import DesiredMember, EventDue


def plan_json(plan: MemberPlan, event: EventDue | None = None) -> str:
    """``plan`` (and the event of an event operation) as JSON."""
    desired = plan.desired
    data: dict[str, Any] = {
        "email": plan.email,
        "key": plan.key,
        "known": plan.known,
        "fields": dict(plan.fields),
        "tags_add": sorted(plan.tags_add),
        "tags_remove": sorted(plan.tags_remove),
        "active_tags": sorted(plan.active_tags),
        "events": [_event_json(e) for e in plan.events],
        "invalid": dict(plan.invalid),
        "withheld": dict(plan.withheld),
        # The desired state, for the fingerprint a failure is recorded with.
        "desired": {
            "email": desired.email,
            "merge_fields": dict(desired.merge_fields),
            "tags": sorted(desired.tags),
            "managed_tags": sorted(desired.managed_tags),
            "invalid": dict(desired.invalid),
        },
    }
    if event is not None:
        data["event"] = _event_json(event)
    return json.dumps(data, sort_keys=True)


def plan_from_json(
    text: str, previous_failure: PushFailure | None
) -> tuple[MemberPlan, EventDue | None]:
    """The plan ``plan_json`` wrote, with the member's failure on record now."""
    data = json.loads(text)
    desired = data["desired"]
    plan = MemberPlan(
        email=data["email"],
        key=data["key"],
        known=data["known"],
        fields=data["fields"],
        tags_add=frozenset(data["tags_add"]),
        tags_remove=frozenset(data["tags_remove"]),
        active_tags=frozenset(data["active_tags"]),
        events=tuple(_event_from(e) for e in data["events"]),
        previous_failure=previous_failure,
        desired=DesiredMember(
            email=desired["email"],
            merge_fields=desired["merge_fields"],
            tags=frozenset(desired["tags"]),
            managed_tags=frozenset(desired["managed_tags"]),
            invalid=desired["invalid"],
        ),
        invalid=data["invalid"],
        withheld=data["withheld"],
    )
    event = data.get("event")
    return plan, (_event_from(event) if event is not None else None)


def running_operations(
    batch_id: str,
    operations: Sequence[tuple[str, str, MemberPlan, EventDue | None]],
    now: datetime,
) -> list[RunningOperation]:
    """The ledger's record of a job left running: per operation, its id,
    kind, member plan and event."""
    return [
        RunningOperation(batch_id, op_id, plan.key, kind, plan_json(plan, event), now)
        for op_id, kind, plan, event in operations
    ]


def _event_json(event: EventDue) -> dict[str, Any]:
    return {
        "key": event.key,
        "name": event.name,
        "occurred_at": event.occurred_at.isoformat(),
        "properties": {k: str(v) for k, v in event.properties.items()},
    }


def _event_from(data: Mapping[str, Any]) -> EventDue:
    return EventDue(
        key=data["key"],
        name=data["name"],
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        properties=data["properties"],
    )
