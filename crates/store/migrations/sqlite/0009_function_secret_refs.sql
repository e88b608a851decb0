-- agentvault schema, version 9 (SQLite): the secrets each function names
-- (`get_secret('<literal>')` calls, found by the code check when the function is saved), so a
-- secret's page can list the functions that use it. Portable SQL: no SQLite-only syntax.

CREATE TABLE function_secret_refs (
    function_id   TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    secret_name   TEXT NOT NULL,
    line          INTEGER NOT NULL,
    PRIMARY KEY (function_id, secret_name, line)
);

CREATE INDEX function_secret_refs_by_secret ON function_secret_refs (workspace_id, secret_name);
