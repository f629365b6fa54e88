"""Every outcome of the official client lands in the right answer class."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import requests
import responses
from mailchimp_marketing.api_client import ApiClientError

from sync.exceptions import ConfigurationError, FatalError
from sync.mailchimp.answers import Answer, AnswerClass, MemberError, OperationResult, classify
from sync.mailchimp.audience import check_audience, fix_merge_fields
from sync.mailchimp.caller import Caller, RetryPolicy, json_safe
from sync.mailchimp.client import MailchimpSettings, datacenter_of, load_api_key, make_client

KEY = "f00dfacecafe0123456789abcdef0123-us21"
BASE = "https://us21.api.mailchimp.com/3.0"
LIST = "abc123"
PROBLEM = "application/problem+json; charset=utf-8"


def problem(
    status: int, title: str, detail: str = "", errors: list[dict[str, str]] | None = None
) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "https://mailchimp.com/developer/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "x",
    }
    if errors:
        body["errors"] = errors
    return body


@pytest.fixture
def client() -> object:
    return make_client(MailchimpSettings(api_key=KEY, list_id=LIST, timeout=5))


def outcome_of(call: object) -> object:
    """What the client returns or raises, as the sink sees it."""
    try:
        return call()  # type: ignore[operator]
    except ApiClientError as exc:
        return exc


PUT = f"{BASE}/lists/{LIST}/members/h"


def put(client: object) -> object:
    return outcome_of(lambda: client.lists.set_list_member(LIST, "h", {"email_address": "a@x.io"}))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "kind", "code"),
    [
        (200, {"id": "h", "status": "subscribed"}, "application/json", "success", "ok"),
        (429, problem(429, "Too Many Requests"), PROBLEM, "transient", "rate_limited"),
        (429, "", None, "transient", "rate_limited"),
        (403, "", None, "transient", "throttled"),
        (403, problem(403, "Forbidden", "no access"), PROBLEM, "fatal", "forbidden"),
        (401, problem(401, "API Key Invalid"), PROBLEM, "fatal", "unauthorized"),
        (500, problem(500, "Internal Server Error"), PROBLEM, "transient", "server_error"),
        (
            503,
            "<html><body>Service Unavailable</body></html>",
            "text/html",
            "transient",
            "server_error",
        ),
        (502, "", None, "transient", "server_error"),
        (
            400,
            problem(400, "Member In Compliance State", "a@x.io is in a compliance state"),
            PROBLEM,
            "permanent",
            "compliance_state",
        ),
        (
            400,
            problem(400, "Forgotten Email Not Subscribed", "a@x.io was permanently deleted"),
            PROBLEM,
            "permanent",
            "forgotten_email",
        ),
        (
            400,
            problem(
                400,
                "Invalid Resource",
                "a@x.io looks fake or invalid, please enter a real email address.",
            ),
            PROBLEM,
            "permanent",
            "fake_email",
        ),
        (
            400,
            problem(
                400,
                "Invalid Resource",
                "a@x.io has signed up to a lot of lists very "
                "recently; we're not allowing more signups for now",
            ),
            PROBLEM,
            "transient",
            "too_many_signups",
        ),
        (
            400,
            problem(
                400,
                "Invalid Resource",
                "Your merge fields were invalid.",
                [{"field": "SCORE", "message": "Please enter a number"}],
            ),
            PROBLEM,
            "permanent",
            "invalid_value",
        ),
        (
            400,
            problem(
                400,
                "Invalid Resource",
                "Your merge fields were invalid.",
                [{"field": "NOPE", "message": "Merge field NOPE does not exist in this audience"}],
            ),
            PROBLEM,
            "fatal",
            "unknown_merge_tag",
        ),
        (404, problem(404, "Resource Not Found"), PROBLEM, "permanent", "not_found"),
        (405, problem(405, "Method Not Allowed"), PROBLEM, "permanent", "method_not_allowed"),
    ],
)
@responses.activate
def test_member_call_answers(
    client: object, status: int, body: object, content_type: str | None, kind: str, code: str
) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    responses.put(PUT, body=text, status=status, content_type=content_type or "text/plain")
    answer = classify(put(client), scope="member")
    assert (answer.kind.value, answer.code) == (kind, code)
    assert KEY not in answer.reason


@responses.activate
def test_client_quirks_are_what_we_expect(client: object) -> None:
    # problem+json is raised with .text a *string*; an empty error body is returned.
    responses.put(
        PUT, body=json.dumps(problem(404, "Resource Not Found")), status=404, content_type=PROBLEM
    )
    raised = put(client)
    assert isinstance(raised, ApiClientError)
    assert isinstance(raised.text, str)
    responses.replace(responses.PUT, PUT, body="", status=503)
    assert isinstance(put(client), requests.Response)


@responses.activate
def test_204_and_404_on_a_list_call(client: object) -> None:
    tags = f"{BASE}/lists/{LIST}/members/h/tags"
    responses.post(tags, status=204)
    got = outcome_of(lambda: client.lists.update_list_member_tags(LIST, "h", {"tags": []}))  # type: ignore[attr-defined]
    assert isinstance(got, requests.Response)
    assert classify(got).kind is AnswerClass.SUCCESS
    responses.post(
        f"{BASE}/lists/{LIST}",
        json=problem(404, "Resource Not Found"),
        status=404,
        content_type=PROBLEM,
    )
    got = outcome_of(lambda: client.lists.batch_list_members(LIST, {"members": []}))  # type: ignore[attr-defined]
    assert classify(got, scope="run").code == "unknown_list"
    assert classify(got, scope="run").kind is AnswerClass.FATAL


@responses.activate
def test_network_failures(client: object) -> None:
    responses.put(PUT, body=requests.ReadTimeout("read timed out"))
    answer = classify(put(client))
    assert (answer.kind, answer.code) == (AnswerClass.TRANSIENT, "timeout")
    responses.replace(responses.PUT, PUT, body=requests.ConnectionError("reset"))
    answer = classify(put(client))
    assert (answer.kind, answer.code) == (AnswerClass.TRANSIENT, "connection")
    assert classify(requests.ConnectTimeout()).code == "timeout"


def test_a_body_the_client_cannot_serialise_is_our_bug(client: object) -> None:
    from datetime import UTC, datetime

    got = outcome_of(
        lambda: client.lists.set_list_member(  # type: ignore[attr-defined]
            LIST, "h", {"at": datetime(2026, 1, 1, tzinfo=UTC)}
        )
    )
    assert classify(got).kind is AnswerClass.FATAL
    assert json_safe({"at": datetime(2026, 1, 1, tzinfo=UTC)}) == {
        "at": "2026-01-01T00:00:00+00:00"
    }
    with pytest.raises(TypeError):
        json_safe({"x": object()})


@pytest.mark.parametrize(
    ("entry", "kind", "code"),
    [
        (
            {
                "email_address": "a@x.io",
                "error": "a@x.io is already a list member, do you want to "
                "update? please provide update_existing:true in the request body",
                "error_code": "ERROR_CONTACT_EXISTS",
            },
            "permanent",
            "contact_exists",
        ),
        (
            {
                "email_address": "a@x.io",
                "error": "a@x.io is in a compliance state due to "
                "unsubscribe, bounce, or compliance review and cannot be subscribed.",
                "error_code": "ERROR_GENERIC",
            },
            "permanent",
            "compliance_state",
        ),
        (
            {
                "email_address": "a@x.io",
                "error": "a@x.io was permanently deleted and cannot be re-imported.",
                "error_code": "ERROR_GENERIC",
            },
            "permanent",
            "forgotten_email",
        ),
        (
            {
                "email_address": "a@x",
                "error": "a@x looks fake or invalid, please enter a real email address.",
                "error_code": "ERROR_GENERIC",
            },
            "permanent",
            "fake_email",
        ),
        (
            {
                "email_address": "a@x.io",
                "error": "a@x.io has signed up to a lot of lists very "
                "recently; we're not allowing more signups for now",
                "error_code": "ERROR_GENERIC",
            },
            "transient",
            "too_many_signups",
        ),
        (
            {
                "email_address": "a@x.io",
                "error": "Your merge fields were invalid.",
                "field": "SCORE",
                "field_message": "Please enter a number",
                "error_code": "ERROR_GENERIC",
            },
            "permanent",
            "invalid_value",
        ),
        (
            {
                "email_address": "a@x.io",
                "error": "Your merge fields were invalid.",
                "field": "NOPE",
                "field_message": "Merge field NOPE does not exist in this audience",
                "error_code": "ERROR_GENERIC",
            },
            "fatal",
            "unknown_merge_tag",
        ),
    ],
)
def test_batch_member_errors(entry: dict[str, str], kind: str, code: str) -> None:
    answer = classify(MemberError.from_json(entry))
    assert (answer.kind.value, answer.code) == (kind, code)


def test_batch_operation_results() -> None:
    assert classify(OperationResult("1", 200, '{"id": "h"}')).ok
    assert classify(OperationResult("1", 204, "")).ok
    gone = OperationResult("1", 400, json.dumps(problem(400, "Member In Compliance State")))
    assert classify(gone).code == "compliance_state"
    assert classify(OperationResult("1", 500, "oops")).kind is AnswerClass.TRANSIENT


def test_settings_key_from_env_or_file(tmp_path: Path) -> None:
    assert load_api_key({"MAILCHIMP_API_KEY": f" {KEY}\n"}) == KEY
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    assert load_api_key({"MAILCHIMP_API_KEY_FILE": str(secret)}) == KEY
    with pytest.raises(ConfigurationError, match="MAILCHIMP_API_KEY"):
        load_api_key({})
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_api_key({"MAILCHIMP_API_KEY_FILE": str(tmp_path / "missing")})
    assert datacenter_of(KEY) == "us21"
    with pytest.raises(ConfigurationError) as info:
        datacenter_of("nodatacenterkey0123")
    assert "nodatacenterkey0123" not in str(info.value)
    settings = MailchimpSettings.from_env(LIST, env={"MAILCHIMP_API_KEY": KEY})
    assert KEY not in repr(settings)


def test_client_configuration() -> None:
    client = make_client(MailchimpSettings(api_key=KEY, list_id=LIST, timeout=7))
    assert client.api_client.server == "us21"
    assert client.api_client.timeout == 7
    local = make_client(MailchimpSettings(KEY, LIST, host="http://my-server:8080/3.0/"))
    assert local.api_client.host == "http://my-server:8080/3.0"
    assert local.api_client.server == ""  # "my-server" must not be rewritten


@responses.activate
def test_caller_retries_transient_only_and_logs_each_retry(
    client: object, caplog: pytest.LogCaptureFixture
) -> None:
    responses.put(PUT, status=429, body="")
    responses.put(PUT, status=503, body="<html>busy</html>", content_type="text/html")
    responses.put(PUT, json={"id": "h"})
    caller = Caller(client, LIST, RetryPolicy(attempts=4, sleep=lambda _: None))
    with caplog.at_level(logging.WARNING):
        answer = caller.call("PUT member", lambda: client.lists.set_list_member(LIST, "h", {}))  # type: ignore[attr-defined]
    assert answer.ok
    assert dict(caller.calls) == {"transient": 2, "success": 1}
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2
    responses.replace(
        responses.PUT,
        PUT,
        json=problem(404, "Resource Not Found"),
        status=404,
        content_type=PROBLEM,
    )
    assert (
        caller.call("PUT", lambda: client.lists.set_list_member(LIST, "h", {})).code  # type: ignore[attr-defined]
        == "not_found"
    )
    assert len(responses.calls) == 4  # permanent: not retried
    responses.replace(
        responses.PUT, PUT, json=problem(401, "API Key Invalid"), status=401, content_type=PROBLEM
    )
    with pytest.raises(FatalError, match="401"):
        caller.call("PUT", lambda: client.lists.set_list_member(LIST, "h", {}))  # type: ignore[attr-defined]


@responses.activate
def test_caller_gives_up_after_the_last_attempt(client: object) -> None:
    responses.put(PUT, status=500, json=problem(500, "boom"), content_type=PROBLEM)
    caller = Caller(client, LIST, RetryPolicy(attempts=3, sleep=lambda _: None))
    answer = caller.call("PUT", lambda: client.lists.set_list_member(LIST, "h", {}))  # type: ignore[attr-defined]
    assert isinstance(answer, Answer)
    assert answer.kind is AnswerClass.TRANSIENT
    assert len(responses.calls) == 3


@responses.activate
def test_audience_checks_and_fix(client: object) -> None:
    responses.get(f"{BASE}/ping", json={"health_status": "Everything's Chimpy!"})
    responses.get(f"{BASE}/lists/{LIST}", json={"id": LIST})
    responses.get(
        f"{BASE}/lists/{LIST}/merge-fields",
        json={"merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "SCORE", "type": "date"}]},
    )
    responses.post(f"{BASE}/lists/{LIST}/merge-fields", json={"tag": "MMERGE25"})
    problems = check_audience(
        client, LIST, {"FNAME": "text", "MMERGE25": "text", "SCORE": "number"}
    )
    assert problems == [
        f"audience {LIST}: merge tag MMERGE25: does not exist (the rules push text values); "
        "`mailsync check --fix` creates it",
        f"audience {LIST}: merge tag SCORE: has type 'date', unsuitable for the number values "
        "the rules push; change its type in Mailchimp or the rules",
    ]
    assert fix_merge_fields(client, LIST, {"FNAME": "text", "MMERGE25": "text"}) == [
        f"audience {LIST}: created merge field MMERGE25 (text)"
    ]
    body = responses.calls[-1].request.body
    assert body is not None
    created = json.loads(body)
    assert created["tag"] == "MMERGE25"


@responses.activate
def test_audience_checks_report_bad_key_and_unknown_list(client: object) -> None:
    responses.get(
        f"{BASE}/ping",
        json=problem(401, "API Key Invalid", "Your API key may be invalid"),
        status=401,
        content_type=PROBLEM,
    )
    (only,) = check_audience(client, LIST, {})
    assert only.startswith("Mailchimp API key: HTTP 401")
    assert KEY not in only
    responses.replace(responses.GET, f"{BASE}/ping", json={"health_status": "ok"})
    responses.get(
        f"{BASE}/lists/{LIST}",
        json=problem(404, "Resource Not Found"),
        status=404,
        content_type=PROBLEM,
    )
    (only,) = check_audience(client, LIST, {})
    assert only.startswith(f"audience {LIST}: HTTP 404")


def test_the_key_is_redacted_from_every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    make_client(MailchimpSettings(api_key=KEY, list_id=LIST))
    other = logging.getLogger("urllib3.somewhere")
    with caplog.at_level(logging.DEBUG):
        other.debug("auth header for %s", KEY)
        try:
            raise RuntimeError(f"boom {KEY}")
        except RuntimeError:
            logging.getLogger("x").exception("failed")
    assert KEY not in caplog.text
    assert "***" in caplog.text
