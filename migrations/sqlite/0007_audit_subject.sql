-- The newest events about one name (its DNS records' state, shown to its owner by the API):
-- read by subject, newest first, without scanning the whole log.
CREATE INDEX audit_events_subject ON audit_events(subject, id);
