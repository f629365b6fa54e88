-- mailsync state store, version 1.
-- Placeholders {{...}} are filled per dialect by sync.state (SQLite / PostgreSQL);
-- everything else is portable SQL. Instants are stored in UTC.

-- One row per entity the engine evaluates.
CREATE TABLE entity_state (
    entity_type      TEXT NOT NULL,
    entity_id        TEXT NOT NULL,
    email            TEXT,
    status           TEXT,
    base_status      TEXT,
    base_entered_at  {{timestamp}},
    status_since     {{timestamp}},
    next_change_at   {{timestamp}},
    updated_at       {{timestamp}} NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);
CREATE INDEX entity_state_next_change_at ON entity_state (next_change_at);
CREATE INDEX entity_state_status ON entity_state (entity_type, status);

-- Re-initialisation baselines. Rows are written under a new generation and the
-- generation pointer in reinit_generation is flipped in one statement at the end,
-- so an interrupted re-initialisation leaves the previous baseline in force.
CREATE TABLE entity_baseline (
    entity_type  TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    entity_id    TEXT NOT NULL,
    status       TEXT NOT NULL,
    entered_at   {{timestamp}} NOT NULL,
    PRIMARY KEY (entity_type, generation, entity_id)
);
CREATE TABLE reinit_generation (
    entity_type  TEXT PRIMARY KEY,
    generation   INTEGER NOT NULL,
    reinit_at    {{timestamp}} NOT NULL,
    committed_at {{timestamp}} NOT NULL
);

-- What Mailchimp accepted, per member (lower-cased email).
CREATE TABLE member (
    email      TEXT PRIMARY KEY,
    pushed_at  {{timestamp}} NOT NULL
);
-- Last ACCEPTED value per merge tag, JSON-encoded so that 0, "0", False and ""
-- stay distinct.
CREATE TABLE member_field (
    email      TEXT NOT NULL,
    tag        TEXT NOT NULL,
    value_json TEXT NOT NULL,
    pushed_at  {{timestamp}} NOT NULL,
    PRIMARY KEY (email, tag)
);
-- Managed tags known to be active on the member.
CREATE TABLE member_tag (
    email      TEXT NOT NULL,
    tag        TEXT NOT NULL,
    pushed_at  {{timestamp}} NOT NULL,
    PRIMARY KEY (email, tag)
);

-- Pushes sent but not confirmed (state 'pending') or refused (state 'failed').
CREATE TABLE push (
    email          TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    permanent      BOOLEAN NOT NULL,
    fingerprint    TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    failed_at      {{timestamp}} NOT NULL,
    next_retry_at  {{timestamp}}
);
CREATE INDEX push_state ON push (state, permanent);

-- Events already sent: the idempotency keys.
CREATE TABLE event_sent (
    email    TEXT NOT NULL,
    event_key TEXT NOT NULL,
    name     TEXT NOT NULL,
    sent_at  {{timestamp}} NOT NULL,
    CONSTRAINT event_sent_email_key UNIQUE (email, event_key)
);

-- The daemon's cycles and watermarks.
CREATE TABLE cycle (
    id           {{id_pk}},
    started_at   {{timestamp}} NOT NULL,
    finished_at  {{timestamp}},
    ok           BOOLEAN,
    counts_json  TEXT
);
CREATE TABLE watermark (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL,
    updated_at {{timestamp}} NOT NULL
);
