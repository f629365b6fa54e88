-- mailsync state store, version 2: which entities' facts depend on which others.
-- A Little World user's facts count its matches by status, so when a match is
-- re-evaluated its users must be too; this table answers "which users?"
-- without reading every user's relations. Rewritten for a dependent entity
-- each time that entity is read.
CREATE TABLE entity_link (
    dependent_type   TEXT NOT NULL,
    dependent_id     TEXT NOT NULL,
    dependency_type  TEXT NOT NULL,
    dependency_id    TEXT NOT NULL,
    PRIMARY KEY (dependent_type, dependent_id, dependency_type, dependency_id)
);
CREATE INDEX entity_link_dependency ON entity_link (dependency_type, dependency_id);
CREATE INDEX entity_state_email ON entity_state (email);
