-- mailsync state store, version 9: what is wrong with the audience itself.
-- A merge tag the rules push that the audience does not have (deleted or
-- renamed by a marketer in Mailchimp): Mailchimp answers 200 and silently
-- drops its values, so nothing else would ever tell. One row per tag, kept
-- until the tag is seen in the audience again; `mailsync status` shows them.
CREATE TABLE audience_problem (
    tag           TEXT PRIMARY KEY,
    reason        TEXT NOT NULL,
    members       INTEGER NOT NULL,
    first_seen_at {{timestamp}} NOT NULL,
    last_seen_at  {{timestamp}} NOT NULL
);
