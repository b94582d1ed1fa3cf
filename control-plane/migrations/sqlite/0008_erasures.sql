-- memtrace control plane: erasure jobs (sqlite). Times are unix milliseconds
-- unless named _micros. A job is adopted from an ErasureRecord on the state
-- bus (erasures/<org>/<id>) or created by an org's deletion, and runs
-- against the org's Arc until its rows are gone and verified. No foreign key
-- to orgs: a job outlives its org. pinned_*: the Arc binding the job runs
-- against when the org's binding row is gone (org deletion), with its API
-- key still sealed under the master key ring (bound to org and
-- pinned_binding_id); cleared once the job is done. target_json never holds
-- a credential.
CREATE TABLE erasures (
    id                     TEXT PRIMARY KEY,
    org_id                 TEXT NOT NULL,
    scope_json             TEXT NOT NULL,
    memory_predicate       TEXT NOT NULL,
    store                  TEXT NOT NULL,
    as_of_micros           BIGINT NOT NULL,
    requested_by           TEXT NOT NULL,
    requested_at_micros    BIGINT NOT NULL,
    state                  TEXT NOT NULL
        CHECK (state IN ('requested', 'running', 'blocked', 'done', 'failed')),
    detail                 TEXT NOT NULL,
    attempts               BIGINT NOT NULL,
    next_attempt_at        BIGINT NOT NULL,
    claimed_by             TEXT,
    claimed_until          BIGINT,
    target_json            TEXT,
    pinned_binding_id      TEXT,
    pinned_url             TEXT,
    pinned_database        TEXT,
    pinned_measurement     TEXT,
    pinned_key_envelope    BLOB,
    rows_removed_json      TEXT,
    verification_json      TEXT,
    receipt_json           TEXT,
    created_at             BIGINT NOT NULL,
    started_at             BIGINT,
    finished_at            BIGINT
);
CREATE INDEX erasures_due ON erasures (state, next_attempt_at);
CREATE INDEX erasures_org ON erasures (org_id, requested_at_micros);
