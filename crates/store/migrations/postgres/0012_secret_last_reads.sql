-- agentvault schema, version 12 (PostgreSQL): when each agent last read each secret successfully
-- (the console's "last read"). One row per workspace, secret and agent, brought up to date with
-- every batch of audit records (one row per distinct reader in the batch, however many reads), so
-- the audit log itself needs no index for it. Filled from the log as it stands.

CREATE TABLE secret_last_reads (
    workspace_id TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, secret_name, agent_id)
);

INSERT INTO secret_last_reads (workspace_id, secret_name, agent_id, at)
SELECT workspace_id, secret_name, agent_id, MAX(at) FROM audit_log
 WHERE action = 'secret.read' AND outcome = 'success' AND secret_name IS NOT NULL AND agent_id IS NOT NULL
 GROUP BY workspace_id, secret_name, agent_id;
