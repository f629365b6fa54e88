"""Error documents, ``GET /ping`` and ``GET /lists/{list_id}``.

Sources: Mailchimp's error glossary ("Marketing API: Errors": titles and
details such as "Resource Not Found" / "The requested resource could not be
found.", "JSON Parse Error"); problem documents recorded in
grouparoo/grouparoo's fixtures (``type``, ``title``, ``status``, ``detail``,
``instance``); answers without ``type`` recorded in other projects
("Member Exists", e.g. Vizzuality/trase#2251), which is why the sink must
classify on title and detail alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash
from sync.emulator import Emulator
from sync.mailchimp.answers import AnswerClass, classify
from tests.support.mailchimp_api import ERROR_TYPE, problem_of, put_member


def test_ping_and_the_audience(mailchimp_emulator: Emulator, mailchimp_client: Any) -> None:
    assert mailchimp_client.ping.get() == {"health_status": "Everything's Chimpy!"}
    audience = mailchimp_client.lists.get_list(mailchimp_emulator.list_id)
    assert audience["id"] == mailchimp_emulator.list_id
    assert {"member_count", "unsubscribe_count", "cleaned_count"} <= set(audience["stats"])


def test_not_found_is_a_problem_document(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    with pytest.raises(ApiClientError) as exc:
        mailchimp_client.lists.get_list_member(
            mailchimp_emulator.list_id, subscriber_hash("nobody@x.io")
        )
    assert exc.value.status_code == 404
    assert problem_of(exc) | {"instance": "?"} == {
        "type": ERROR_TYPE,
        "title": "Resource Not Found",
        "status": 404,
        "detail": "The requested resource could not be found.",
        "instance": "?",
    }


def test_member_errors_without_type_are_still_classified(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 7: some answers have no ``type``; the sink reads title and detail."""
    mailchimp_emulator.audience.seed_member("u@x.io", status="unsubscribed")
    with pytest.raises(ApiClientError) as exc:
        put_member(mailchimp_client, mailchimp_emulator.list_id, "u@x.io", status="subscribed")
    problem = problem_of(exc)
    assert "type" not in problem
    assert {"title", "status", "detail", "instance"} <= set(problem)
    answer = classify(exc.value)
    assert (answer.kind, answer.code) == (AnswerClass.PERMANENT, "compliance_state")
