"""The inspection API: the emulator's state and scripting over HTTP.

Everything a test can do in-process with an :class:`~sync.emulator.Emulator`
(read members, events and call counts, script faults, mark addresses,
reset) is also reachable under ``/_emulator/``, so that a daemon running in
a subprocess can be checked from outside. No authentication, no faults, not
counted as calls: this is the test harness's door, not Mailchimp's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sync.emulator.members import Member, timestamp
from sync.emulator.problems import ApiProblem
from sync.emulator.routes import Answer, Request, Router

if TYPE_CHECKING:
    from sync.emulator.batches import Batch
    from sync.emulator.server import Emulator

ROUTES: Router[Emulator] = Router()
MARKS = ("compliance", "forgotten", "fake")


def serve_inspection(
    emulator: Emulator, method: str, path: str, query: Mapping[str, str], raw: bytes
) -> Answer:
    """Answer one inspection request; errors come back as ``{"error": ...}``."""
    route, params, known = ROUTES.resolve(method, path.removeprefix("/_emulator"))
    if route is None:
        return Answer(405 if known else 404, {"error": f"no inspection endpoint {method} {path}"})
    try:
        body = json.loads(raw) if raw.strip() else {}
        return route.handler(emulator, Request(method, path, params, query, body))
    except ApiProblem as problem:
        return Answer(problem.status, {"error": problem.detail})
    except (ValueError, KeyError, TypeError) as exc:
        return Answer(400, {"error": f"{type(exc).__name__}: {exc}"})


def member_json(member: Member) -> dict[str, Any]:
    """A member as tests want to see it: what was stored, events in order."""
    return {
        "id": member.id,
        "email_address": member.email_address,
        "status": member.status,
        "merge_fields": dict(member.merge_fields),
        "tags": list(member.tags),
        "events": [e.to_json() for e in member.events],
        "last_changed": timestamp(member.last_changed),
    }


@ROUTES.add("GET", "/")
def index(emulator: Emulator, request: Request) -> Answer:
    # The address the `mailsync emulator` banner prints: say what is behind it.
    return Answer(
        200,
        {
            "inspection": f"{emulator.root_url}/_emulator",
            "api": emulator.url,
            "endpoints": [
                endpoint.replace(" ", " /_emulator", 1) for endpoint in ROUTES.endpoints()
            ],
        },
    )


@ROUTES.add("GET", "/health")
def health(emulator: Emulator, request: Request) -> Answer:
    return Answer(
        200, {"url": emulator.url, "api_key": emulator.api_key, "list_id": emulator.list_id}
    )


@ROUTES.add("POST", "/reset")
def reset(emulator: Emulator, request: Request) -> Answer:
    emulator.reset()
    return Answer(204)


@ROUTES.add("GET", "/calls")
def calls(emulator: Emulator, request: Request) -> Answer:
    return Answer(200, {**emulator.calls.to_json(), "connections": emulator.connections})


@ROUTES.add("GET", "/settings")
def get_settings(emulator: Emulator, request: Request) -> Answer:
    return Answer(200, emulator.settings())


@ROUTES.add("POST", "/settings")
def set_settings(emulator: Emulator, request: Request) -> Answer:
    body = request.body
    unknown = set(body) - set(emulator.settings())
    if unknown:
        raise ValueError(
            f"unknown settings {sorted(unknown)}; allowed: {sorted(emulator.settings())}"
        )
    if "max_connections" in body:
        emulator.max_connections = int(body["max_connections"])
    if "service_delay" in body:
        emulator.service_delay = float(body["service_delay"])
    if "connect_delay" in body:
        emulator.connect_delay = float(body["connect_delay"])
    if "timeout_hold" in body:
        emulator.timeout_hold = float(body["timeout_hold"])
    if "batch_delay" in body:
        emulator.batch_delay = float(body["batch_delay"])
    if "hold_batches" in body:
        emulator.hold_batches = _boolean(body["hold_batches"], "hold_batches")
    if "serve_batches" in body:
        emulator.serve_batches = _boolean(body["serve_batches"], "serve_batches")
    return Answer(200, emulator.settings())


def _boolean(value: Any, name: str) -> bool:
    # bool("false") is True: insist on JSON booleans.
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return value


def batch_json(emulator: Emulator, batch: Batch) -> dict[str, Any]:
    """A job as the API shows it, plus what its operations did (not API calls)."""
    executed = emulator.calls.operations(batch.id)
    return {
        **emulator.batches.status_json(batch.id),
        "operations_executed": len(executed),
        "executed_by_endpoint": dict(Counter(o.endpoint for o in executed)),
        "executed_by_outcome": dict(Counter(o.outcome for o in executed)),
    }


@ROUTES.add("GET", "/batches")
def batches(emulator: Emulator, request: Request) -> Answer:
    found = []
    for batch in emulator.batches.batches():
        try:
            found.append(batch_json(emulator, batch))
        except ApiProblem:
            continue  # deleted meanwhile
    return Answer(200, {"batches": found, "pending": emulator.batches.pending_count()})


@ROUTES.add("GET", "/batches/{batch_id}")
def batch(emulator: Emulator, request: Request) -> Answer:
    found = emulator.batches.get(request.params["batch_id"])
    if found is None:
        return Answer(404, {"error": f"no batch {request.params['batch_id']}"})
    return Answer(200, batch_json(emulator, found))


@ROUTES.add("GET", "/faults")
def get_faults(emulator: Emulator, request: Request) -> Answer:
    return Answer(200, emulator.faults.to_json())


@ROUTES.add("POST", "/faults")
def script_fault(emulator: Emulator, request: Request) -> Answer:
    body = request.body
    fault = emulator.faults.script(
        str(body["pattern"]), str(body["kind"]), int(body.get("times", 1)), body.get("method")
    )
    return Answer(201, fault.to_json())


@ROUTES.add("POST", "/faults/random")
def random_faults(emulator: Emulator, request: Request) -> Answer:
    body = request.body
    seed = body.get("seed")
    emulator.faults.set_random(
        float(body["rate"]), int(seed) if seed is not None else None, body.get("kinds")
    )
    return Answer(200, emulator.faults.to_json())


@ROUTES.add("DELETE", "/faults")
def clear_faults(emulator: Emulator, request: Request) -> Answer:
    emulator.faults.clear()
    return Answer(204)


@ROUTES.add("GET", "/lists/{list_id}/members")
def members(emulator: Emulator, request: Request) -> Answer:
    audience = emulator.store.audience(request.params["list_id"])
    return Answer(200, {"members": [member_json(m) for m in audience.members()]})


@ROUTES.add("POST", "/lists/{list_id}/members")
def seed_member(emulator: Emulator, request: Request) -> Answer:
    body = request.body
    audience = emulator.store.audience(request.params["list_id"])
    member = audience.seed_member(
        str(body["email_address"]),
        str(body.get("status", "subscribed")),
        body.get("merge_fields"),
        body.get("tags", ()),
    )
    return Answer(201, member_json(member))


@ROUTES.add("GET", "/lists/{list_id}/members/{member}")
def member(emulator: Emulator, request: Request) -> Answer:
    audience = emulator.store.audience(request.params["list_id"])
    found = audience.member(request.params["member"])
    if found is None:
        return Answer(404, {"error": f"no member {request.params['member']}"})
    return Answer(200, member_json(found))


@ROUTES.add("GET", "/lists/{list_id}/events")
def events(emulator: Emulator, request: Request) -> Answer:
    audience = emulator.store.audience(request.params["list_id"])
    rows = [{"email_address": email, **e.to_json()} for email, e in audience.received_events()]
    return Answer(200, {"events": rows})


@ROUTES.add("POST", "/lists/{list_id}/marks")
def mark(emulator: Emulator, request: Request) -> Answer:
    body = request.body
    audience = emulator.store.audience(request.params["list_id"])
    kind = body["mark"]
    if kind not in MARKS:
        raise ValueError(f"mark must be one of {MARKS}, got {kind!r}")
    email = str(body["email_address"])
    {
        "compliance": audience.mark_compliance,
        "forgotten": audience.forget,
        "fake": audience.mark_fake,
    }[kind](email)
    return Answer(204)


# -- changes made in Mailchimp itself, each followed by its webhook ---------------

#: action -> (what the audience does, the webhook it sends, who makes it by default)
ADMIN_ACTIONS = {
    "unsubscribe": ("unsubscribe", "user"),
    "clean": ("cleaned", "admin"),
    "archive": ("archive", "admin"),
    "subscribe": ("subscribe", "user"),
    "profile": ("profile", "user"),
    "change-address": ("upemail", "user"),
}


@ROUTES.add("POST", "/lists/{list_id}/members/{member}/{action}")
def admin_action(emulator: Emulator, request: Request) -> Answer:
    """A change made in Mailchimp (the person, the marketer's UI, a bounce),
    then its webhook to every registered URL that wants it."""
    action = request.params["action"]
    if action not in ADMIN_ACTIONS:
        raise ValueError(f"action must be one of {sorted(ADMIN_ACTIONS)}, got {action!r}")
    body = request.body
    audience = emulator.store.audience(request.params["list_id"])
    key = request.params["member"]
    kind, default_source = ADMIN_ACTIONS[action]
    source = str(body.get("source", default_source))
    old_email = ""
    if action == "unsubscribe":
        member = audience.unsubscribe_by_person(key)
    elif action == "clean":
        member = audience.clean(key)
    elif action == "archive":
        member = audience.archive_member(key)
    elif action == "subscribe":
        member = audience.subscribe_by_person(key)
    elif action == "profile":
        member = audience.edit_profile(key, dict(body["merge_fields"]))
    else:
        member, old_email = audience.change_address(key, str(body["new_email"]))
    deliveries = emulator.store.notify(
        audience,
        kind,
        member.id,
        source=source,
        reason=str(body.get("reason", "")),
        old_email=old_email,
    )
    return Answer(
        200,
        {"member": member_json(member), "deliveries": [d.to_json() for d in deliveries]},
    )


@ROUTES.add("GET", "/webhooks")
def webhook_deliveries(emulator: Emulator, request: Request) -> Answer:
    store = emulator.store
    return Answer(
        200,
        {
            "webhooks": [h.to_json() for h in store.webhooks.hooks],
            "deliveries": [d.to_json() for d in store.webhooks.deliveries],
        },
    )
