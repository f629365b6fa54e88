-- mailsync state store, version 5: the daemon diffs instead of tracking.
-- Each cycle derives every entity's evaluation and desired member
-- contribution (merge fields and tags) and compares them with these two
-- digests, read as plain text: equal digests mean nothing to store and
-- nothing to push, so a full pass over an unchanged population sends and
-- writes nothing.
-- eval_fp: the stored evaluation (status, state, instants, address).
-- pushed_fp: the contribution Mailchimp last ACCEPTED from this entity;
-- NULL when never accepted (or accepted before version 5): pushed once more.
ALTER TABLE entity_state ADD COLUMN eval_fp TEXT;
ALTER TABLE entity_state ADD COLUMN pushed_fp TEXT;
