-- memtrace control plane: audit entries name one of three outcomes (SQLite).
--
-- Changes of orgs, API keys and Arc bindings append their audit entry in
-- their own transaction, so an entry the database refuses takes its change
-- with it.
CREATE TRIGGER audit_log_outcome BEFORE INSERT ON audit_log
WHEN NEW.outcome NOT IN ('ok', 'denied', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'audit_log.outcome must be ok, denied or failed');
END;
