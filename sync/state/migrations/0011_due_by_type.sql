-- mailsync state store, version 11: a tick finds one type's due entities
-- through an index. "next_change_at <= now AND entity_type = ?" used the
-- (entity_type, status) index on SQLite, reading every entity of the type
-- (1.3 s at 1M users, every tick); with (entity_type, next_change_at) it
-- reads only the due ones (3 ms).
CREATE INDEX entity_state_due ON entity_state (entity_type, next_change_at);
