-- mailsync state store, version 3: the leader lease (SQLite; PostgreSQL uses an
-- advisory lock instead). One row per lock name; instants as ISO 8601 UTC text
-- so that the comparison in the acquiring statement is the same on both.
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
