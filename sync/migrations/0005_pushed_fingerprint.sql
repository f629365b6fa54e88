-- mailsync state store, version 5: the daemon diffs instead of tracking.
-- Each cycle derives every entity's desired member contribution (merge
-- fields and tags) and compares a digest of it with the digest of the last
-- contribution Mailchimp ACCEPTED, stored here: equal digests mean nothing to
-- push, so a full pass over an unchanged population sends and writes nothing.
-- NULL: never accepted (or accepted before version 5), so pushed once more.
ALTER TABLE entity_state ADD COLUMN pushed_fp TEXT;
