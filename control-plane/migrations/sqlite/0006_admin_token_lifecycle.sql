-- memtrace control plane: admin tokens get a lifecycle (SQLite).
-- Each token gets a public id (adm_<16 hex>), a name, a role (admin: every
-- call; reader: calls that change nothing), an optional expiry, the time it
-- was last used and when it was revoked. Tokens stored before ids existed
-- keep working: their id is derived from their hash, 'adm_' and the first
-- 8 bytes in hex (memtrace_common::credentials::legacy_admin_token_id), and
-- they keep the admin role they had. The old label becomes the name.
CREATE TABLE admin_tokens_v2 (
    id            TEXT PRIMARY KEY,
    token_hash    BLOB NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'reader')),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
INSERT INTO admin_tokens_v2 (id, token_hash, fingerprint, name, role, created_at)
SELECT 'adm_' || lower(hex(substr(token_hash, 1, 8))), token_hash, fingerprint, label, 'admin', created_at
FROM admin_tokens;
DROP TABLE admin_tokens;
ALTER TABLE admin_tokens_v2 RENAME TO admin_tokens;
