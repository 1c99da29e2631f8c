-- shopfloor.readings_1m: one row per source, metric and minute with min,
-- max, avg and the last value (by time). A view over the samples for now:
-- the same columns the rollup table (or TimescaleDB continuous aggregate)
-- that replaces it will have, so queries written against it keep working.
CREATE VIEW shopfloor.readings_1m AS
SELECT date_trunc('minute', s.time) AS bucket,
       m.source,
       m.name AS metric,
       min(s.value) AS min,
       max(s.value) AS max,
       avg(s.value) AS avg,
       (array_agg(s.value ORDER BY s.time DESC))[1] AS last
FROM shopfloor.samples s
JOIN shopfloor.metrics m ON m.id = s.metric_id
WHERE s.value IS NOT NULL
GROUP BY 1, 2, 3;
