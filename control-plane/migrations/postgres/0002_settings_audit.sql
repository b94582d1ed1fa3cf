-- memtrace control plane: runtime settings and the admin audit trail (PostgreSQL).
-- Times are unix milliseconds.

-- Runtime setting values that differ from the registry (memtrace_common::settings).
-- org_id is '' for the global value, else the org whose override this is.
CREATE TABLE settings (
    key         TEXT NOT NULL,
    org_id      TEXT NOT NULL DEFAULT '',
    value_json  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (key, org_id)
);

-- The admin audit trail: append-only and hash-chained. hash = SHA-256 of the
-- canonical encoding of (seq, at_ms, actor, action, target, outcome,
-- details_json, prev_hash); see control-plane/src/store/audit_chain.rs.
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    details_json  TEXT NOT NULL,
    prev_hash     BYTEA NOT NULL,
    hash          BYTEA NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target);

-- The head of the chain, one row. Appends take a transaction-scoped advisory
-- lock and then update this row before reading it, so appends from every
-- replica are serialised and the chain cannot fork.
CREATE TABLE audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    touched_at  BIGINT NOT NULL
);
INSERT INTO audit_head (id, seq, hash, touched_at)
VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea, 0);

-- Append-only: entries can be neither changed nor removed through SQL
-- without first dropping these triggers (and `memtracectl audit verify`
-- detects what such a change did).
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
