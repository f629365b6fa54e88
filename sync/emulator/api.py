"""The Mailchimp Marketing API v3 endpoints the emulator answers.

Each handler only translates between HTTP and the store: parameters in,
the store's JSON out, status codes as Mailchimp uses them (PUT and merge
field creation answer 200, tags and events 204). The rules themselves live
in ``audience.py`` and the endpoint modules it names.

:func:`run_handler` and :func:`perform` are the one way a request reaches a
handler: the HTTP server uses the first after its gates (limit, faults,
auth), ``/batches`` uses the second for every operation of a batch, so an
operation in a batch meets exactly the rules of a direct call.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from sync.emulator import batch_subscribe, events, member_requests, problems, tags
from sync.emulator.partial import partial_response
from sync.emulator.problems import ApiProblem
from sync.emulator.routes import Answer, Request, Router
from sync.emulator.store import Store

ROUTES: Router[Store] = Router()


@dataclass(frozen=True)
class Outcome:
    """How a request was answered: ``body`` is a JSON value, None for no body."""

    status: int
    body: Any = None
    problem: bool = False  # the body is application/problem+json

    @classmethod
    def of(cls, problem: ApiProblem) -> Outcome:
        return cls(problem.status, problem.to_json(), True)


def run_handler(
    handler: Callable[[Request], Answer],
    method: str,
    path: str,
    params: Mapping[str, str],
    query: Mapping[str, str],
    raw: bytes | str,
    errors: list[str],
) -> Outcome:
    """Parse the JSON body, run ``handler``, turn what it raises into an answer.

    ``errors`` collects tracebacks of emulator bugs: tests fail on them
    rather than on the 500 a client sees.
    """
    try:
        body = parse_json(raw) if raw.strip() else None
    except ValueError:
        return Outcome.of(problems.bad_json())
    try:
        answer = handler(Request(method, path, params, query, body))
    except ApiProblem as problem:
        return Outcome.of(problem)
    except Exception:
        errors.append(traceback.format_exc())
        return Outcome.of(problems.internal_error())
    if 200 <= answer.status < 300:
        # ``fields`` / ``exclude_fields``: a partial response, as any call may ask.
        return Outcome(answer.status, partial_response(answer.body, query))
    return Outcome(answer.status, answer.body)


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def parse_json(raw: bytes | str) -> Any:
    """A request body as JSON (RFC 8259): ``NaN``, ``Infinity`` and
    ``-Infinity``, which Python's parser accepts by default, are refused like
    any other malformed body (Mailchimp answers "JSON Parse Error")."""
    return json.loads(raw, parse_constant=_refuse_constant)


def perform(
    store: Store,
    method: str,
    path: str,
    query: Mapping[str, str],
    raw: bytes | str,
    errors: list[str],
) -> tuple[str, Outcome]:
    """Route ``method path`` (relative to ``/3.0``) and answer it; no gates.

    Returns the endpoint (route template, or ``"METHOD (unknown)"``) and the
    outcome; an unknown path is a 404, a known path with another method 405.
    """
    route, params, known = ROUTES.resolve(method, path)
    if route is None:
        failure = problems.method_not_allowed() if known else problems.not_found()
        return f"{method} (unknown)", Outcome.of(failure)
    outcome = run_handler(partial(route.handler, store), method, path, params, query, raw, errors)
    return route.endpoint, outcome


@ROUTES.add("GET", "/ping")
def ping(store: Store, request: Request) -> Answer:
    return Answer(200, {"health_status": "Everything's Chimpy!"})


@ROUTES.add("GET", "/lists/{list_id}")
def get_list(store: Store, request: Request) -> Answer:
    return Answer(200, store.audience(request.params["list_id"]).to_json())


@ROUTES.add("POST", "/lists/{list_id}")
def subscribe_members(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    result = batch_subscribe.batch_subscribe(
        audience,
        request.body,
        skip_merge_validation=request.flag("skip_merge_validation"),
        skip_duplicate_check=request.flag("skip_duplicate_check"),
    )
    return Answer(200, result)


@ROUTES.add("GET", "/lists/{list_id}/members")
def list_members(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, member_requests.members_json(audience, request.query))


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}")
def get_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, member_requests.member_json(audience, request.params["subscriber_hash"]))


@ROUTES.add("PUT", "/lists/{list_id}/members/{subscriber_hash}")
def put_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    _, member = member_requests.put_member(
        audience,
        request.params["subscriber_hash"],
        request.body,
        skip_merge_validation=request.flag("skip_merge_validation"),
    )
    return Answer(200, member)


@ROUTES.add("DELETE", "/lists/{list_id}/members/{subscriber_hash}")
def archive_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    audience.archive_member(request.params["subscriber_hash"])
    store.notify(audience, "archive", request.params["subscriber_hash"], source="api")
    return Answer(204)


@ROUTES.add("POST", "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent")
def delete_member_permanent(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    member_requests.delete_permanent(audience, request.params["subscriber_hash"])
    return Answer(204)


@ROUTES.add("GET", "/lists/{list_id}/webhooks")
def list_webhooks(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    hooks = [h.to_json() for h in store.webhooks.of(audience.list_id)]
    return Answer(200, {"webhooks": hooks, "list_id": audience.list_id, "total_items": len(hooks)})


@ROUTES.add("POST", "/lists/{list_id}/webhooks")
def create_webhook(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, store.webhooks.register(audience.list_id, request.body).to_json())


@ROUTES.add("DELETE", "/lists/{list_id}/webhooks/{webhook_id}")
def delete_webhook(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    store.webhooks.remove(audience.list_id, request.params["webhook_id"])
    return Answer(204)


@ROUTES.add("PATCH", "/lists/{list_id}/members/{subscriber_hash}")
def patch_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    member = member_requests.patch_member(
        audience,
        request.params["subscriber_hash"],
        request.body,
        skip_merge_validation=request.flag("skip_merge_validation"),
    )
    return Answer(200, member)


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}/tags")
def get_tags(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, tags.tags_json(audience, request.params["subscriber_hash"]))


@ROUTES.add("POST", "/lists/{list_id}/members/{subscriber_hash}/tags")
def post_tags(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    tags.update_tags(audience, request.params["subscriber_hash"], request.body)
    return Answer(204)


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}/events")
def get_events(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    key = request.params["subscriber_hash"]
    return Answer(200, events.events_json(audience, key, request.query))


@ROUTES.add("POST", "/lists/{list_id}/members/{subscriber_hash}/events")
def post_event(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    events.add_event(audience, request.params["subscriber_hash"], request.body)
    return Answer(204)


@ROUTES.add("GET", "/lists/{list_id}/merge-fields")
def list_merge_fields(store: Store, request: Request) -> Answer:
    return Answer(200, store.audience(request.params["list_id"]).merge_fields_json(request.query))


@ROUTES.add("POST", "/lists/{list_id}/merge-fields")
def add_merge_field(store: Store, request: Request) -> Answer:
    return Answer(200, store.audience(request.params["list_id"]).add_merge_field(request.body))


@ROUTES.add("GET", "/lists/{list_id}/merge-fields/{merge_id}")
def get_merge_field(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, audience.merge_field_json(request.params["merge_id"]))


@ROUTES.add("DELETE", "/lists/{list_id}/merge-fields/{merge_id}")
def delete_merge_field(store: Store, request: Request) -> Answer:
    store.audience(request.params["list_id"]).delete_merge_field(request.params["merge_id"])
    return Answer(204)
