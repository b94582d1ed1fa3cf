-- memtrace control plane: API keys imported from the Go memtrace
-- (`memtracectl import legacy`). Such a key is checked by its bcrypt hash
-- (legacy_bcrypt_hash, the Go server's, never the key) and found by its
-- lookup prefix (legacy_prefix: the first 16 hex characters of the key's
-- SHA-256; the key's id is key_<legacy_prefix>). Both are NULL for
-- memtrace's own keys, both set for an imported one. key_hash stays NOT
-- NULL UNIQUE: an imported key's is a hash of its bcrypt hash, which no
-- presented key of memtrace's format can match.
ALTER TABLE api_keys ADD COLUMN legacy_bcrypt_hash TEXT;
ALTER TABLE api_keys ADD COLUMN legacy_prefix TEXT;
