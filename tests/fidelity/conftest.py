"""Helpers of the fidelity suite.

Every test here plays a documented request through the official client
(``mailchimp_marketing``) against the emulator and checks the answer against
what a public source shows Mailchimp doing. The source of each behaviour is
named next to the test and listed in ``docs/emulator.md`` (fidelity table).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash

#: The ``type`` of Mailchimp's problem documents, as recorded in 2021
#: (grouparoo/grouparoo, plugins/@grouparoo/mailchimp/__tests__/fixtures).
ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"


def problem_of(exc: pytest.ExceptionInfo[ApiClientError]) -> dict[str, Any]:
    """The problem+json the client hands over as a string in ``.text``."""
    body = json.loads(exc.value.text)
    assert isinstance(body, dict)
    return body


def put_member(client: Any, list_id: str, email: str, **body: Any) -> dict[str, Any]:
    """``lists.set_list_member`` with the address in the body, as the docs ask."""
    query = {k: body.pop(k) for k in ("skip_merge_validation",) if k in body}
    answer = client.lists.set_list_member(
        list_id, subscriber_hash(email), {"email_address": email, **body}, **query
    )
    assert isinstance(answer, dict)
    return answer
