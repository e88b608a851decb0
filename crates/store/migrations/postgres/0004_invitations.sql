-- agentvault schema, version 4 (PostgreSQL): invitations to join a workspace. The invitee chooses
-- their own password, or proves they hold the existing account; only the code's hash is stored.

CREATE TABLE invitations (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    code_hash     BYTEA NOT NULL UNIQUE,
    invited_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    accepted_at   BIGINT,
    accepted_by   TEXT
);
CREATE INDEX invitations_by_workspace ON invitations (workspace_id, email);
