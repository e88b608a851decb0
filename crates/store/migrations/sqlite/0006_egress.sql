-- agentvault schema, version 6 (SQLite): where each agent's functions may connect through the
-- egress proxy. No row means the default policy.

CREATE TABLE agent_egress (
    agent_id      TEXT PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- default | allowlist | none
    mode          TEXT NOT NULL,
    -- JSON array of host patterns (api.stripe.com, *.googleapis.com, host:port)
    hosts         TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
