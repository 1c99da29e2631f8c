-- The latest Sparkplug birth of every edge node and device (internal, not
-- part of the query contract). Sparkplug DATA names its metrics by alias
-- only; a restarted ingest replays these births before reading its queued
-- messages, so DATA published while it was away can still be named.
CREATE TABLE shopfloor.sparkplug_births (
    topic text PRIMARY KEY,
    payload bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
