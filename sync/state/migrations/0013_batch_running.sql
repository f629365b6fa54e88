-- mailsync state store, version 13: /batches jobs left running.
-- Mailchimp runs an account's batch jobs one after the other and may take
-- minutes, or hours, to finish one. A cycle waits for a job only so long
-- (mailchimp.batch_wait); a job still running then is recorded here, one row
-- per operation with the member's plan, and a later cycle collects its
-- results and records what Mailchimp accepted. Members with a row here are
-- not pushed again until their job is collected.
CREATE TABLE batch_running (
    batch_id     TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    email        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    plan_json    TEXT NOT NULL,
    submitted_at {{timestamp}} NOT NULL,
    PRIMARY KEY (batch_id, operation_id)
);
CREATE INDEX batch_running_email ON batch_running (email);
