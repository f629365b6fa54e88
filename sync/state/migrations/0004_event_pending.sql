-- mailsync state store, version 4: exactly-once events.
-- An event is recorded here BEFORE it is POSTed and removed when Mailchimp's
-- answer is known (accepted: it moves to event_sent; refused: gone). A row
-- left behind means the outcome is unknown (the process died, the answer was
-- lost): the sink then looks the event up in Mailchimp, by its signature
-- (name, instant to the second, properties), before sending it again.
CREATE TABLE event_pending (
    email           TEXT NOT NULL,
    event_key       TEXT NOT NULL,
    name            TEXT NOT NULL,
    occurred_at     {{timestamp}} NOT NULL,
    properties_json TEXT NOT NULL,
    signature       TEXT NOT NULL,
    attempted_at    {{timestamp}} NOT NULL,
    attempts        INTEGER NOT NULL,
    PRIMARY KEY (email, event_key)
);
-- The same signature for events sent, so that a reconciliation can tell an
-- unconfirmed event from a confirmed one that looks just like it. NULL for
-- events sent before version 4.
ALTER TABLE event_sent ADD COLUMN signature TEXT;
