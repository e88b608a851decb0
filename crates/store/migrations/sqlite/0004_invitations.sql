-- agentvault schema, version 4 (SQLite): invitations to join a workspace. The invitee chooses
-- their own password, or proves they hold the existing account; only the code's hash is stored.

CREATE TABLE invitations (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    code_hash     BLOB NOT NULL UNIQUE,
    invited_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    accepted_at   INTEGER,
    accepted_by   TEXT
);
CREATE INDEX invitations_by_workspace ON invitations (workspace_id, email);
