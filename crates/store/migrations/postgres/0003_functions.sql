-- agentvault schema, version 3 (PostgreSQL): agents' Python functions.

CREATE TABLE functions (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    -- JSON array of {name, description, type}
    parameters    TEXT NOT NULL,
    code          TEXT NOT NULL,
    timeout_ms    BIGINT,
    version       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (agent_id, name)
);
