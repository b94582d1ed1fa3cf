-- memtrace control plane: the Ed25519 keys that sign erasure receipts (SQLite).
-- One row per key version, its id rk_<version>. The public key is stored in
-- clear (receipts embed it; memtracectl erasure keys lists it); the private
-- seed only as an envelope under the master key, bound to the key id and the
-- purpose receipt.signing_key. The newest version signs; older ones are
-- retired but kept, so receipts they signed still verify. The version is the
-- primary key and every insert runs under the audit lock, so two replicas
-- creating "the first" key at once store one: the other re-reads it.
CREATE TABLE receipt_keys (
    version           BIGINT PRIMARY KEY CHECK (version >= 1),
    key_id            TEXT NOT NULL UNIQUE,
    public_key        BLOB NOT NULL UNIQUE,
    private_envelope  BLOB NOT NULL,
    created_at        BIGINT NOT NULL,
    retired_at        BIGINT
);
