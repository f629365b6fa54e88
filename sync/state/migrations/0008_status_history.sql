-- mailsync state store, version 8: the compact history the dashboard draws.
-- Written by the daemon after each cycle (sync/history.py), read by
-- `mailsync dashboard`. Bounded: hourly points for 90 days, one point per day
-- before that (the last one of the day for counts, the day's sum for moves).

-- How many entities were in each status at the end of the last cycle of the
-- bucket. status '' stands for "no status".
CREATE TABLE status_history (
    entity_type  TEXT NOT NULL,
    resolution   TEXT NOT NULL,
    bucket       {{timestamp}} NOT NULL,
    status       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (entity_type, resolution, bucket, status)
);
-- How many entities moved from one status to another during the bucket
-- (from_status '' for entities seen for the first time). Summed over cycles.
CREATE TABLE transition_history (
    entity_type  TEXT NOT NULL,
    resolution   TEXT NOT NULL,
    bucket       {{timestamp}} NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (entity_type, resolution, bucket, from_status, to_status)
);
