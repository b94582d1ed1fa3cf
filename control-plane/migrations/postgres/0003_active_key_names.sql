-- memtrace control plane: at most one active (unrevoked) api key per name
-- in an org. The check in the create transaction alone let two concurrent
-- creates (PostgreSQL, read committed) both see none and both insert.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (org_id, name) WHERE revoked_at IS NULL;
