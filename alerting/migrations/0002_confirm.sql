-- Version 2: the optional confirmation step (OPC UA Part 9 ConfirmedState).
-- An alarm whose rule asks for confirmation waits for it after its
-- acknowledgement; that wait survives a restart like the others.

ALTER TABLE shopfloor.alarm_state ADD COLUMN unconfirmed boolean NOT NULL DEFAULT false;
