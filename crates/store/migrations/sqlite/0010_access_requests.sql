-- agentvault schema, version 10 (SQLite): members' requests that an agent may read a secret,
-- approved or declined by an admin. Portable SQL: no SQLite-only syntax.

CREATE TABLE access_requests (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    secret_name   TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    -- pending | approved | declined
    status        TEXT NOT NULL,
    decided_by    TEXT,
    decided_at    INTEGER
);

CREATE INDEX access_requests_by_workspace ON access_requests (workspace_id, status);
