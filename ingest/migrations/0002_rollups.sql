-- Rollups, version 2: per metric and minute (rollup_1m) and hour
-- (rollup_1h) the min, max, sum, count and last value of the numeric
-- samples, and the public views shopfloor.readings_1m and readings_1h over
-- them (bucket, source, metric, min, max, avg, last).
--
-- TimescaleDB: continuous aggregates, the hourly one on the minute one,
-- real-time (recent buckets computed at query time), refreshed by policies.
-- Native: tables the ingest maintains. Each COPY transaction adds, per
-- metric and minute, the aggregate of the rows it added to rollup_delta (in
-- the same transaction: a row is counted exactly when it is stored, a
-- redelivered row never); the maintenance task folds the deltas into the
-- minute and hour tables every few seconds. Late rows (a replay after an
-- outage) are counted as surely as live ones, and the work is proportional
-- to what arrived, not to the size of the buckets it touched.

DO $rollups$
BEGIN
    IF (SELECT value FROM shopfloor.settings WHERE key = 'storage') = 'timescaledb' THEN
        CREATE MATERIALIZED VIEW shopfloor.rollup_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT metric_id,
               time_bucket(INTERVAL '1 minute', time) AS bucket,
               min(value) AS min,
               max(value) AS max,
               sum(value) AS sum,
               count(value) AS count,
               last(value, time) AS last,
               max(time) AS last_time
        FROM shopfloor.samples
        WHERE value IS NOT NULL
        GROUP BY metric_id, time_bucket(INTERVAL '1 minute', time)
        WITH NO DATA;
        CREATE MATERIALIZED VIEW shopfloor.rollup_1h
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT metric_id,
               time_bucket(INTERVAL '1 hour', bucket) AS bucket,
               min(min) AS min,
               max(max) AS max,
               sum(sum) AS sum,
               sum(count)::bigint AS count,
               last(last, last_time) AS last,
               max(last_time) AS last_time
        FROM shopfloor.rollup_1m
        GROUP BY metric_id, time_bucket(INTERVAL '1 hour', bucket)
        WITH NO DATA;
        PERFORM add_continuous_aggregate_policy('shopfloor.rollup_1m',
            start_offset => NULL, end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '30 seconds');
        PERFORM add_continuous_aggregate_policy('shopfloor.rollup_1h',
            start_offset => NULL, end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '5 minutes');
    ELSE
        CREATE TABLE shopfloor.rollup_delta (
            metric_id integer NOT NULL,
            bucket timestamptz NOT NULL,
            min double precision NOT NULL,
            max double precision NOT NULL,
            sum double precision NOT NULL,
            count bigint NOT NULL,
            last double precision NOT NULL,
            last_time timestamptz NOT NULL
        );
        -- Updated in place, never by key: room on each page for HOT updates.
        CREATE TABLE shopfloor.rollup_1m (
            metric_id integer NOT NULL,
            bucket timestamptz NOT NULL,
            min double precision NOT NULL,
            max double precision NOT NULL,
            sum double precision NOT NULL,
            count bigint NOT NULL,
            last double precision NOT NULL,
            last_time timestamptz NOT NULL,
            PRIMARY KEY (metric_id, bucket)
        ) WITH (fillfactor = 70);
        CREATE INDEX rollup_1m_bucket ON shopfloor.rollup_1m (bucket);
        CREATE TABLE shopfloor.rollup_1h (LIKE shopfloor.rollup_1m INCLUDING ALL)
            WITH (fillfactor = 70);
    END IF;
END
$rollups$;

CREATE VIEW shopfloor.readings_1m AS
SELECT r.bucket,
       m.source,
       m.name AS metric,
       r.min,
       r.max,
       r.sum / r.count AS avg,
       r.last
FROM shopfloor.rollup_1m r
JOIN shopfloor.metrics m ON m.id = r.metric_id;

CREATE VIEW shopfloor.readings_1h AS
SELECT r.bucket,
       m.source,
       m.name AS metric,
       r.min,
       r.max,
       r.sum / r.count AS avg,
       r.last
FROM shopfloor.rollup_1h r
JOIN shopfloor.metrics m ON m.id = r.metric_id;
