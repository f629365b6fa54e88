"""The Mailchimp Marketing API v3 endpoints the emulator answers.

Each handler only translates between HTTP and the store: parameters in,
the store's JSON out, status codes as Mailchimp uses them (PUT and merge
field creation answer 200, tags and events 204). The rules themselves live
in ``store.py``.
"""

from __future__ import annotations

from sync.emulator.routes import Answer, Request, Router
from sync.emulator.store import Store

ROUTES: Router[Store] = Router()


@ROUTES.add("GET", "/ping")
def ping(store: Store, request: Request) -> Answer:
    return Answer(200, {"health_status": "Everything's Chimpy!"})


@ROUTES.add("GET", "/lists/{list_id}")
def get_list(store: Store, request: Request) -> Answer:
    return Answer(200, store.audience(request.params["list_id"]).to_json())


@ROUTES.add("POST", "/lists/{list_id}")
def batch_subscribe(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    result = audience.batch_subscribe(
        request.body,
        skip_merge_validation=request.flag("skip_merge_validation"),
        skip_duplicate_check=request.flag("skip_duplicate_check"),
    )
    return Answer(200, result)


@ROUTES.add("GET", "/lists/{list_id}/members")
def list_members(store: Store, request: Request) -> Answer:
    return Answer(200, store.audience(request.params["list_id"]).members_json(request.query))


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}")
def get_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, audience.member_json(request.params["subscriber_hash"]))


@ROUTES.add("PUT", "/lists/{list_id}/members/{subscriber_hash}")
def put_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    _, member = audience.put_member(request.params["subscriber_hash"], request.body)
    return Answer(200, member)


@ROUTES.add("PATCH", "/lists/{list_id}/members/{subscriber_hash}")
def patch_member(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, audience.patch_member(request.params["subscriber_hash"], request.body))


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}/tags")
def get_tags(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, audience.tags_json(request.params["subscriber_hash"]))


@ROUTES.add("POST", "/lists/{list_id}/members/{subscriber_hash}/tags")
def post_tags(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    audience.update_tags(request.params["subscriber_hash"], request.body)
    return Answer(204)


@ROUTES.add("GET", "/lists/{list_id}/members/{subscriber_hash}/events")
def get_events(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    return Answer(200, audience.events_json(request.params["subscriber_hash"], request.query))


@ROUTES.add("POST", "/lists/{list_id}/members/{subscriber_hash}/events")
def post_event(store: Store, request: Request) -> Answer:
    audience = store.audience(request.params["list_id"])
    audience.add_event(request.params["subscriber_hash"], request.body)
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
