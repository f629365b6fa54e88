-- mailsync state store, version 10: a full pass skips what did not change.
-- row_fp: digest of the compiled SQL's result row for this entity (computed
-- by PostgreSQL, with the rules' decoding tables mixed in), recorded once the
-- entity is settled: its evaluation stored, its contribution accepted by
-- Mailchimp. A later pass that gets the same digest, for an entity with no
-- due change, no retry and no event in the window, has nothing to compare
-- and leaves it alone without decoding its row. NULL: compared in full (the
-- first pass after this version records it).
ALTER TABLE entity_state ADD COLUMN row_fp TEXT;
