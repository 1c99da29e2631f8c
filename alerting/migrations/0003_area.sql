-- The alarm journal, version 3: each event's area (its rule's), for the
-- alarm-rate KPIs by area (ISA-18.2 counts floods per operator's area).
-- NULL for events journaled before.
ALTER TABLE shopfloor.alarm_journal ADD COLUMN area text;
CREATE INDEX alarm_journal_area ON shopfloor.alarm_journal (area, time);
