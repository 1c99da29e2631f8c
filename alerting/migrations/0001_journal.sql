-- The alarm journal, version 1: every transition and operator action
-- (shopfloor.alarm_journal, part of the query contract), and the state
-- that must survive a restart (shopfloor.alarm_state, internal).

CREATE TABLE shopfloor.alarm_journal (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time timestamptz NOT NULL,
    rule text NOT NULL,
    source text NOT NULL,
    metric text NOT NULL,
    instance bigint NOT NULL,
    -- raised, changed, returned_to_normal, acknowledged, bad_input, ...
    event text NOT NULL,
    -- HH, H, L, LL or ON for raised and changed
    condition text,
    priority integer,
    value double precision,
    -- false while shelved, suppressed or out of service
    annunciate boolean NOT NULL,
    user_name text,
    comment text,
    -- the event's other fields (reason, until, closed)
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alarm_journal_time ON shopfloor.alarm_journal (time);
CREATE INDEX alarm_journal_alarm ON shopfloor.alarm_journal (rule, source, metric, time);

CREATE TABLE shopfloor.alarm_state (
    rule text NOT NULL,
    source text NOT NULL,
    metric text NOT NULL,
    instance bigint NOT NULL,
    active text,
    unacknowledged boolean NOT NULL,
    shelved boolean NOT NULL,
    shelved_until bigint,
    out_of_service boolean NOT NULL,
    latched boolean NOT NULL,
    PRIMARY KEY (rule, source, metric)
);
