-- Time-weighted averages and last-value-carried-forward, version 4.
--
-- Readings come by exception: a value is sent when it changes, and holds
-- until the next one. A plain mean over samples weighs a value that held
-- for 59 s like one that held for 1 s. shopfloor.twa() weighs each value
-- by how long it held inside the window: a good or uncertain value holds
-- until the metric's next sample (or the window's end, or now for a
-- window still open); a bad or stale sample (a death) ends what was known
-- and counts for nothing; the value at the window's start is the latest
-- sample before it, however old. readings_1m and readings_1h gain the
-- column `twa` (computed when queried, from the samples, so late rows
-- count as soon as they are stored), and shopfloor.locf() gives a trend of
-- a metric on a regular grid, each point the last value at that time.
-- Both work alike on native partitions and TimescaleDB.

CREATE FUNCTION shopfloor.twa(p_metric integer, p_from timestamptz, p_to timestamptz)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH points AS (
        -- The value at the window's start (first among equal times).
        (SELECT p_from AS t, 0 AS ord, value, quality
         FROM shopfloor.samples
         WHERE metric_id = p_metric AND time < p_from
         ORDER BY time DESC
         LIMIT 1)
        UNION ALL
        SELECT time, 1, value, quality
        FROM shopfloor.samples
        WHERE metric_id = p_metric AND time >= p_from AND time < p_to
    ),
    held AS (
        SELECT value,
               quality,
               extract(epoch FROM
                   least(coalesce(lead(t) OVER (ORDER BY t, ord), p_to), greatest(now(), t), p_to) - t
               ) AS seconds
        FROM points
    )
    SELECT sum(value * seconds) / nullif(sum(seconds), 0)
    FROM held
    WHERE value IS NOT NULL AND quality IN (0, 1) AND seconds > 0
$$;

COMMENT ON FUNCTION shopfloor.twa(integer, timestamptz, timestamptz) IS
    'Time-weighted average of a metric (catalogue id) over [from, to): each good or uncertain value weighted by how long it held; bad and stale samples end it.';

CREATE FUNCTION shopfloor.locf(
    p_source text, p_metric text, p_from timestamptz, p_to timestamptz, p_step interval)
RETURNS TABLE ("time" timestamptz, value double precision, value_text text, quality text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT g.t, s.value, s.value_text,
           CASE s.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' WHEN 2 THEN 'bad'
                          WHEN 3 THEN 'stale' END
    FROM shopfloor.metrics m
    CROSS JOIN generate_series(p_from, p_to, p_step) AS g(t)
    LEFT JOIN LATERAL (
        SELECT value, value_text, quality
        FROM shopfloor.samples
        WHERE metric_id = m.id AND samples.time <= g.t
        ORDER BY samples.time DESC
        LIMIT 1
    ) s ON true
    WHERE m.source = p_source AND m.name = p_metric
    ORDER BY g.t
$$;

COMMENT ON FUNCTION shopfloor.locf(text, text, timestamptz, timestamptz, interval) IS
    'A metric on a regular grid from..to every step: at each point the latest sample at or before it (last value carried forward; NULL before the first).';

CREATE OR REPLACE VIEW shopfloor.readings_1m AS
SELECT r.bucket,
       m.source,
       m.name AS metric,
       r.min,
       r.max,
       r.sum / r.count AS avg,
       r.last,
       shopfloor.twa(r.metric_id, r.bucket, r.bucket + INTERVAL '1 minute') AS twa
FROM shopfloor.rollup_1m r
JOIN shopfloor.metrics m ON m.id = r.metric_id;

CREATE OR REPLACE VIEW shopfloor.readings_1h AS
SELECT r.bucket,
       m.source,
       m.name AS metric,
       r.min,
       r.max,
       r.sum / r.count AS avg,
       r.last,
       shopfloor.twa(r.metric_id, r.bucket, r.bucket + INTERVAL '1 hour') AS twa
FROM shopfloor.rollup_1h r
JOIN shopfloor.metrics m ON m.id = r.metric_id;
