-- mailsync state store, version 12: a member's accepted merge values are one
-- JSON object on its row instead of a row per merge tag. Going live at 1M
-- users wrote 5M member_field rows (one per merge field), half the state
-- store's writes of the first cycle; now a member is one row. The object
-- maps each merge tag to the value Mailchimp last accepted, as JSON (so 0,
-- "0" and "" stay distinct); a push that sends some fields merges them into
-- it (json_patch on SQLite, jsonb || on PostgreSQL).
ALTER TABLE member ADD COLUMN fields_json TEXT NOT NULL DEFAULT '{}';
UPDATE member SET fields_json = COALESCE(
    (SELECT {{fields_object}} FROM member_field f WHERE f.email = member.email),
    '{}');
DROP TABLE member_field;
