-- memtrace control plane: the audit chain is keyed (SQLite).
--
-- Entries written from now on are version 2: hash = HMAC-SHA256 under a key
-- derived from the master key named by kek_id (see
-- control-plane/src/store/audit_chain.rs). Existing entries stay version 1
-- (plain SHA-256, kek_id NULL) and are verified with that weaker rule; the
-- chain continues across the boundary. Adding columns rewrites no row, so
-- the append-only triggers are not involved.
ALTER TABLE audit_log ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN kek_id TEXT;

-- The head is keyed too (MAC of seq and hash under kek_id's audit key), so
-- it cannot be moved back to an earlier entry to hide removed entries.
-- NULL while the last entry is unkeyed.
ALTER TABLE audit_head ADD COLUMN kek_id TEXT;
ALTER TABLE audit_head ADD COLUMN mac BLOB;
