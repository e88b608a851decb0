-- agentvault schema, version 1 (SQLite).
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    current_version  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

-- Immutable versions. The value is sealed under a per-version data key, which is wrapped by a
-- root key (root_key_id). `keys` lists the key names of a key/value value (JSON array).
CREATE TABLE secret_versions (
    secret_id    TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('single', 'kv')),
    keys         TEXT,
    root_key_id  TEXT NOT NULL,
    wrapped_dek  BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
) WITHOUT ROWID;

CREATE TABLE secret_access (
    secret_id   TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (secret_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX secret_access_by_agent ON secret_access (agent_id);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,
    all_agents    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    created_by    TEXT NOT NULL
);

CREATE TABLE api_key_agents (
    key_id    TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    agent_id  TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, agent_id)
) WITHOUT ROWID;

-- Append-only. Never holds a value. Not tied to other tables by foreign keys: the log outlives
-- what it describes. Clustered by workspace (one B-tree, and each workspace's records are one
-- range); `seq` is assigned by agentvault, increasing across the whole log.
CREATE TABLE audit_log (
    workspace_id  TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    actor_type    TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    action        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    secret_name   TEXT,
    agent_id      TEXT,
    target_id     TEXT,
    detail        TEXT,
    PRIMARY KEY (workspace_id, seq)
) WITHOUT ROWID;
