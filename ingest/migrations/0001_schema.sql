-- The shopfloor schema, version 1: a metrics catalogue, a narrow samples
-- table partitioned by time, dead letters, and the public view
-- shopfloor.readings (the query contract of the crate README).

CREATE TABLE shopfloor.metrics (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,
    name text NOT NULL,
    datatype text,
    unit text,
    properties jsonb,
    UNIQUE (source, name)
);

-- No foreign key to metrics: rows arrive by COPY, and the catalogue entry
-- is always written (and committed) before its first sample.
CREATE TABLE shopfloor.samples (
    time timestamptz NOT NULL,
    metric_id integer NOT NULL,
    value double precision,
    value_text text,
    -- 0 good, 1 uncertain, 2 bad, 3 stale
    quality smallint NOT NULL,
    PRIMARY KEY (metric_id, time)
) PARTITION BY RANGE (time);

CREATE TABLE shopfloor.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    payload bytea NOT NULL,
    error text NOT NULL
);

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
