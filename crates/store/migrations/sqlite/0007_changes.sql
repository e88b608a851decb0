-- agentvault schema, version 7 (SQLite): the change feed. Every mutating transaction takes the
-- next number of the `changes` counter and records what it changed, so that every server applies
-- every change to its read model, in order (see docs/architecture.md).

CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('changes', 0);

-- `workspace_id` is NULL when the change spans workspaces (or none): servers then reload
-- everything. `agent_id` is set when it concerns one agent; `actions` lists its audit actions;
-- `origin` names the server process that made it (which has applied it already).
CREATE TABLE changes (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    workspace_id  TEXT,
    agent_id      TEXT,
    actions       TEXT NOT NULL,
    origin        TEXT NOT NULL
);
