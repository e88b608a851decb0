-- agentvault schema, version 6 (PostgreSQL): settings of the whole installation. `root_key_id` names
-- the root key the data is sealed under; every server checks at start that its keyring holds it,
-- so a server given the wrong key (or a key of its own) refuses to start instead of failing reads.

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
