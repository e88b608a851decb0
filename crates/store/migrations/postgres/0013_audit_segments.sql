-- agentvault schema, version 13 (PostgreSQL): audit segments. The records the audit writer
-- group-commits (agent reads, above all) are stored a batch at a time in one compact, columnar
-- block per workspace (see crates/store/src/audit_segment.rs) instead of a row per record;
-- mutations' records stay rows of `audit_log`, written in the mutation's own transaction. The
-- listing merges both by sequence number. Segments of one workspace never overlap in sequence
-- numbers, and small ones are merged into larger ones in the background.

CREATE TABLE audit_segments (
    first_seq     BIGINT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    last_seq      BIGINT NOT NULL,
    min_at        BIGINT NOT NULL,
    max_at        BIGINT NOT NULL,
    records       BIGINT NOT NULL,
    data          BYTEA NOT NULL
);
CREATE INDEX audit_segments_by_workspace ON audit_segments (workspace_id, first_seq, last_seq, min_at, max_at);
CREATE INDEX audit_segments_by_time ON audit_segments (max_at);

-- Which segments hold a record with a given agent, secret, actor, action or outcome: a filtered
-- listing opens only those.
CREATE TABLE audit_segment_keys (
    workspace_id  TEXT NOT NULL,
    key           TEXT NOT NULL,
    first_seq     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key, first_seq)
);
CREATE INDEX audit_segment_keys_by_segment ON audit_segment_keys (first_seq);

-- The export stream and retention walk the log in sequence and time order.
CREATE INDEX audit_log_by_seq ON audit_log (seq);
CREATE INDEX audit_log_by_time ON audit_log (at);
