-- agentvault schema, version 1 (PostgreSQL).
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    current_version  BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

-- Immutable versions. The value is sealed under a per-version data key, which is wrapped by a
-- root key (root_key_id). `keys` lists the key names of a key/value value (JSON array).
CREATE TABLE secret_versions (
    secret_id    TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('single', 'kv')),
    keys         TEXT,
    root_key_id  TEXT NOT NULL,
    wrapped_dek  BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);

CREATE TABLE secret_access (
    secret_id   TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (secret_id, agent_id)
);
CREATE INDEX secret_access_by_agent ON secret_access (agent_id);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    BYTEA NOT NULL UNIQUE,
    all_agents    BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    created_by    TEXT NOT NULL
);

CREATE TABLE api_key_agents (
    key_id    TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    agent_id  TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, agent_id)
);

-- Append-only. Never holds a value. Not tied to other tables by foreign keys: the log outlives
-- what it describes. `seq` comes from the `audit` counter below, increasing across the whole log
-- and across replicas, and visible in its own order.
CREATE TABLE audit_log (
    workspace_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    at            BIGINT NOT NULL,
    actor_type    TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    action        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    secret_name   TEXT,
    agent_id      TEXT,
    target_id     TEXT,
    detail        TEXT,
    PRIMARY KEY (workspace_id, seq)
);

-- Numbers taken under the row's lock inside a transaction, so they become visible in commit
-- order: `changes` numbers every mutating transaction (taking it first also serializes writers,
-- as SQLite's single writer does), `audit` numbers audit records.
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('changes', 0), ('audit', 0);
