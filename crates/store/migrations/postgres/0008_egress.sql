-- agentvault schema, version 8 (PostgreSQL): where each agent's functions may connect through the
-- egress proxy. No row means the default policy.

CREATE TABLE agent_egress (
    agent_id      TEXT PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- default | allowlist | none
    mode          TEXT NOT NULL,
    -- JSON array of host patterns (api.stripe.com, *.googleapis.com, host:port)
    hosts         TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Secrets that functions may use but never see: get_secret hands out a placeholder, and the egress
-- proxy swaps in the value in requests to these hosts only. No row means readable by functions.
CREATE TABLE secret_injection (
    secret_id     TEXT PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- JSON array of host patterns
    hosts         TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- agentvault's egress CA (one row): its certificate, and its private key sealed under the root
-- key like a secret value.
CREATE TABLE egress_ca (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    cert_pem      TEXT NOT NULL,
    root_key_id   TEXT NOT NULL,
    wrapped_dek   BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);
