-- The shopfloor schema, version 1: a metrics catalogue, a narrow samples
-- table, dead letters, and the public view shopfloor.readings (the query
-- contract of the crate README).
--
-- Two storage paths behind one query surface:
-- - TimescaleDB, when the extension can be created here (it needs
--   shared_preload_libraries = 'timescaledb' and the right to create it):
--   samples is a hypertable, chunked by day to start with (the ingest
--   applies its configured chunk interval, compression and retention);
-- - otherwise native range partitions by day, created ahead by the ingest.
-- A session can choose native with `SET shopfloor.timescaledb = 'off'`
-- before migrating (IngestConfig::timescaledb = false does it).
-- The choice is recorded in shopfloor.settings ('storage').

CREATE TABLE shopfloor.settings (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE shopfloor.metrics (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,
    name text NOT NULL,
    datatype text,
    unit text,
    properties jsonb,
    UNIQUE (source, name)
);

CREATE TABLE shopfloor.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    payload bytea NOT NULL,
    error text NOT NULL
);

DO $storage$
DECLARE
    timescale boolean := false;
BEGIN
    IF coalesce(current_setting('shopfloor.timescaledb', true), 'on') <> 'off'
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            timescale := true;
        EXCEPTION WHEN OTHERS THEN
            -- Not preloaded, or not ours to create: the native path.
            RAISE NOTICE 'shopfloor: timescaledb is installed but cannot be used (%); using native partitions', SQLERRM;
        END;
    END IF;

    -- No foreign key to metrics: rows arrive by COPY, and the catalogue
    -- entry is always written (and committed) before its first sample.
    -- quality: 0 good, 1 uncertain, 2 bad, 3 stale.
    IF timescale THEN
        CREATE TABLE shopfloor.samples (
            time timestamptz NOT NULL,
            metric_id integer NOT NULL,
            value double precision,
            value_text text,
            quality smallint NOT NULL,
            PRIMARY KEY (metric_id, time)
        );
        PERFORM create_hypertable('shopfloor.samples', 'time',
                                  chunk_time_interval => INTERVAL '1 day');
        INSERT INTO shopfloor.settings VALUES ('storage', 'timescaledb');
    ELSE
        CREATE TABLE shopfloor.samples (
            time timestamptz NOT NULL,
            metric_id integer NOT NULL,
            value double precision,
            value_text text,
            quality smallint NOT NULL,
            PRIMARY KEY (metric_id, time)
        ) PARTITION BY RANGE (time);
        -- The rollup maintenance reads by time range: a BRIN index is
        -- nearly free to keep on rows that arrive in time order.
        CREATE INDEX samples_time_brin ON shopfloor.samples USING brin (time);
        INSERT INTO shopfloor.settings VALUES ('storage', 'native');
    END IF;
END
$storage$;

CREATE VIEW shopfloor.readings AS
SELECT s.time,
       m.source,
       m.name AS metric,
       s.value,
       s.value_text,
       CASE s.quality
           WHEN 0 THEN 'good'
           WHEN 1 THEN 'uncertain'
           WHEN 2 THEN 'bad'
           ELSE 'stale'
       END AS quality
FROM shopfloor.samples s
JOIN shopfloor.metrics m ON m.id = s.metric_id;
