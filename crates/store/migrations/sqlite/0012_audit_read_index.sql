-- agentvault schema, version 12 (SQLite): an index of agents' successful reads in the audit log,
-- so that "last read" (per secret, and per secret and agent) is a few index probes however long
-- the log is. Partial: only `secret.read` records with outcome `success` are in it, and queries
-- that use it name those two values as literals. Portable SQL: no SQLite-only syntax.

CREATE INDEX audit_log_reads ON audit_log (workspace_id, secret_name, agent_id, seq)
    WHERE action = 'secret.read' AND outcome = 'success';
