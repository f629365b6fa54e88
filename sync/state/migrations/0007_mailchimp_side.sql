-- mailsync state store, version 7: what changed on Mailchimp's side.
-- Filled by the webhook receiver, the reconciliation poll and push answers
-- (sync/changes.py), read by the sink (never resubscribe, never bring back an
-- archived contact), `mailsync status`, `explain` and `unsubscribes`.

-- The member's latest known Mailchimp status, per lower-cased address. Only
-- members with something worth knowing get a row (a poll does not store
-- every subscribed member of the audience).
CREATE TABLE mailchimp_member (
    email        TEXT PRIMARY KEY,
    status       TEXT,
    reason       TEXT NOT NULL,
    status_at    {{timestamp}},
    merges_json  TEXT,
    source       TEXT NOT NULL,
    changed_at   {{timestamp}} NOT NULL,
    recorded_at  {{timestamp}} NOT NULL
);
CREATE INDEX mailchimp_member_status ON mailchimp_member (status, status_at);

-- Addresses changed in Mailchimp (upemail): pushes for the old address go
-- to the new one, so no duplicate contact is created.
CREATE TABLE mailchimp_alias (
    old_email  TEXT PRIMARY KEY,
    new_email  TEXT NOT NULL,
    moved_at   {{timestamp}} NOT NULL
);

-- Webhook deliveries applied, by a digest of their fields: a delivery
-- Mailchimp repeats is applied once. Also the history `explain` shows.
CREATE TABLE mailchimp_change (
    change_key   TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    email        TEXT NOT NULL,
    old_email    TEXT,
    status       TEXT,
    reason       TEXT NOT NULL,
    source       TEXT NOT NULL,
    fired_at     {{timestamp}} NOT NULL,
    recorded_at  {{timestamp}} NOT NULL
);
CREATE INDEX mailchimp_change_email ON mailchimp_change (email, fired_at);
