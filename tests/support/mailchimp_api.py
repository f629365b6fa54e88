"""Mailchimp's API as the official client shows it: the documented shape of a
batch job, the problem documents of its errors, and a member written by PUT.

Shared by the emulator's tests and its fidelity suite (``tests/fidelity``).
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from sync.addresses import subscriber_hash

#: The keys of a ``/batches`` job as Mailchimp answers it.
BATCH_KEYS = {
    "id",
    "status",
    "total_operations",
    "finished_operations",
    "errored_operations",
    "submitted_at",
    "completed_at",
    "response_body_url",
    "_links",
}
#: The ``type`` of Mailchimp's problem documents, as recorded in 2021
#: (grouparoo/grouparoo, plugins/@grouparoo/mailchimp/__tests__/fixtures).
ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"


def problem_of(exc: pytest.ExceptionInfo[ApiClientError]) -> dict[str, Any]:
    """The problem+json the client hands over as a string in ``.text``, never parsed."""
    assert isinstance(exc.value.text, str)
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


def results_archive(entries: list[dict[str, Any]]) -> bytes:
    """A ``/batches`` results archive holding ``entries`` (a gzipped tar of
    one JSON file), as ``responses`` plays Mailchimp's download."""
    payload = json.dumps(entries).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("results/part-1.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()
