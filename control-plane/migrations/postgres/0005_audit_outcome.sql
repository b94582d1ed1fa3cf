-- memtrace control plane: audit entries name one of three outcomes (PostgreSQL).
--
-- Changes of orgs, API keys and Arc bindings append their audit entry in
-- their own transaction, so an entry the database refuses takes its change
-- with it.
ALTER TABLE audit_log ADD CONSTRAINT audit_log_outcome
    CHECK (outcome IN ('ok', 'denied', 'failed'));
