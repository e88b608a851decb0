-- agentvault schema, version 11 (PostgreSQL): environments (sandbox, pre-release, live).
-- A secret may have its own value per environment (each with its own immutable versions, sealed
-- like the default value's), and may be protected; a function keeps every saved version, and
-- pre-release and live run the version deployed to them; an API key reads for one environment
-- or (NULL) for all.

ALTER TABLE secrets ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE secret_env_versions (
    secret_id    TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    env          TEXT NOT NULL CHECK (env IN ('sandbox', 'pre-release', 'live')),
    version      BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('single', 'kv')),
    keys         TEXT,
    root_key_id  TEXT NOT NULL,
    wrapped_dek  BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (secret_id, env, version)
);

-- The environments that have their own value now, with its current version. Removing an
-- environment's value removes its row here (its versions stay, as the default's do).
CREATE TABLE secret_envs (
    secret_id        TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    env              TEXT NOT NULL CHECK (env IN ('sandbox', 'pre-release', 'live')),
    current_version  BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (secret_id, env)
);

CREATE TABLE function_versions (
    function_id  TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    description  TEXT NOT NULL,
    parameters   TEXT NOT NULL,
    code         TEXT NOT NULL,
    timeout_ms   BIGINT,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (function_id, version)
);

CREATE TABLE function_deployments (
    function_id  TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    env          TEXT NOT NULL CHECK (env IN ('pre-release', 'live')),
    version      BIGINT NOT NULL,
    deployed_by  TEXT NOT NULL,
    deployed_at  BIGINT NOT NULL,
    by_admin     BOOLEAN NOT NULL,
    PRIMARY KEY (function_id, env)
);

-- Functions saved before keep working: their current version is kept as a version, and runs in
-- pre-release and live, deployed by the system.
INSERT INTO function_versions (function_id, version, description, parameters, code, timeout_ms, created_at, created_by)
    SELECT id, version, description, parameters, code, timeout_ms, updated_at, 'system' FROM functions;
INSERT INTO function_deployments (function_id, env, version, deployed_by, deployed_at, by_admin)
    SELECT id, 'pre-release', version, 'system', updated_at, TRUE FROM functions;
INSERT INTO function_deployments (function_id, env, version, deployed_by, deployed_at, by_admin)
    SELECT id, 'live', version, 'system', updated_at, TRUE FROM functions;

ALTER TABLE api_keys ADD COLUMN env TEXT CHECK (env IN ('sandbox', 'pre-release', 'live'));
