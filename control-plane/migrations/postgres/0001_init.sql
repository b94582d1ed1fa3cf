-- memtrace control plane, initial schema (PostgreSQL). Times are unix milliseconds.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Deleted orgs, so later consumers (etcd publication, workers) can tell
-- "deleted" from "never existed".
CREATE TABLE org_tombstones (
    org_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    deleted_at  BIGINT NOT NULL
);

-- One Arc binding per org. The Arc API key is stored only as an envelope
-- (see memtrace_common::envelope), bound to (org_id, id, "arc.api_key").
CREATE TABLE arc_bindings (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL UNIQUE REFERENCES orgs(id) ON DELETE CASCADE,
    url               TEXT NOT NULL,
    database_name     TEXT NOT NULL,
    measurement       TEXT NOT NULL,
    api_key_envelope  BYTEA,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Data-plane API keys, stored only as a SHA-256 hash of the whole key.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_hash      BYTEA NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id);

-- Admin tokens for the admin API, stored only as hashes.
CREATE TABLE admin_tokens (
    token_hash   BYTEA PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    label        TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
