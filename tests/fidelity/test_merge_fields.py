"""``GET/POST/DELETE /lists/{list_id}/merge-fields``.

Sources: the merge fields of a real audience in grouparoo/grouparoo's
recorded answers (FNAME, LNAME, ADDRESS, PHONE, then the fields the account
added: four defaults, no BIRTHDAY) and Mailchimp's merge-field reference as
the official client documents it (mailchimp/mailchimp-marketing-python,
mailchimp_marketing/api/lists_api.py: ``get_list_merge_fields``,
``add_list_merge_field``, ``delete_list_merge_field``).
"""

from __future__ import annotations

from typing import Any

from sync.emulator import Emulator

FIELD_KEYS = {
    "merge_id",
    "tag",
    "name",
    "type",
    "required",
    "default_value",
    "public",
    "display_order",
    "options",
    "help_text",
    "list_id",
    "_links",
}


def test_a_new_audience_has_four_fields(
    mailchimp_emulator: Emulator, mailchimp_client: Any
) -> None:
    """Row 7: FNAME, LNAME, ADDRESS, PHONE."""
    page = mailchimp_client.lists.get_list_merge_fields(mailchimp_emulator.list_id, count=1000)
    assert {"merge_fields", "list_id", "total_items", "_links"} <= set(page)
    assert [f["tag"] for f in page["merge_fields"]] == ["FNAME", "LNAME", "ADDRESS", "PHONE"]
    assert page["total_items"] == 4
    assert all(set(f) == FIELD_KEYS for f in page["merge_fields"])


def test_create_then_delete(mailchimp_emulator: Emulator, mailchimp_client: Any) -> None:
    list_id = mailchimp_emulator.list_id
    created = mailchimp_client.lists.add_list_merge_field(
        list_id, {"tag": "score", "name": "Score", "type": "number", "required": False}
    )
    assert set(created) == FIELD_KEYS
    assert (created["tag"], created["type"]) == ("SCORE", "number")
    answer = mailchimp_client.lists.delete_list_merge_field(list_id, str(created["merge_id"]))
    assert answer.status_code == 204
    tags = [f["tag"] for f in mailchimp_client.lists.get_list_merge_fields(list_id)["merge_fields"]]
    assert "SCORE" not in tags
