-- memtrace control plane: the Ed25519 keys that sign agent tokens (PostgreSQL).
-- The shape of receipt_keys (0007), a separate family: one row per key
-- version, its id tk_<version>. The public key is stored in clear (published
-- to the workers, which verify tokens with it); the private seed only as an
-- envelope under the master key, bound to the key id and the purpose
-- token.signing_key. The newest version signs; older ones are retired but
-- kept (and published), so tokens they signed verify until they expire. Every
-- insert runs under the audit lock: two replicas creating "the first" key at
-- once store one.
CREATE TABLE token_keys (
    version           BIGINT PRIMARY KEY CHECK (version >= 1),
    key_id            TEXT NOT NULL UNIQUE,
    public_key        BYTEA NOT NULL UNIQUE,
    private_envelope  BYTEA NOT NULL,
    created_at        BIGINT NOT NULL,
    retired_at        BIGINT
);
