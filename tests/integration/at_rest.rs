//! Values are sealed at rest, and never reach a log.

use serde_json::json;

use crate::support::{DataDir, Options, contains_bytes, files_under};

#[test]
fn no_plaintext_value_reaches_the_disk_or_the_log() {
    if crate::support::backend::sqlite_only("the database and WAL files on disk") {
        return;
    }
    let data = DataDir::new();
    let (dir, token) = (&data.path, &data.token);
    let mut s = data.start_with(Options { log: "debug", ..data.opts() });
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    let markers = ["sk_live_PLAINTEXTMARKER_1", "PLAINTEXTMARKER_KV_SECRET", "sk_live_PLAINTEXTMARKER_2"];
    s.create_secret(&ws, "single", json!(markers[0]), &[&a]);
    s.create_secret(&ws, "pairs", json!({"client_id": "visible-id", "client_secret": markers[1]}), &[&a]);
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/single"), json!({"value": markers[2]})).expect(200);
    let (_, key) = s.create_key(&ws, json!("all"));
    for _ in 0..3 {
        s.read(&key, &a, "single").expect(200);
        s.read(&key, &a, "pairs").expect(200);
    }
    s.post(&format!("/api/v1/workspaces/{ws}/secrets/single/reveal"), json!({})).expect(200);
    // Provoke errors around values, too.
    s.post(&format!("/api/v1/workspaces/{ws}/secrets"), json!({"name": "single", "value": markers[0]})).expect(409);
    s.post(&format!("/api/v1/workspaces/{ws}/secrets"), json!({"name": "Bad Name", "value": markers[0]})).expect(400);

    let scan = |when: &str| {
        let files = files_under(dir);
        assert!(files.iter().any(|f| f.ends_with("agentvault.db-wal")) || when == "after stop", "{files:?}");
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            for m in markers {
                assert!(!contains_bytes(&bytes, m.as_bytes()), "{when}: {} contains a plaintext value", f.display());
            }
            assert!(!contains_bytes(&bytes, key.as_bytes()), "{when}: {} contains an API key token", f.display());
            assert!(!contains_bytes(&bytes, token.as_bytes()), "{when}: {} contains the admin token", f.display());
        }
    };
    scan("while running");
    s.stop(); // checkpoints the WAL into the database file
    scan("after stop");
    let log = s.stderr();
    assert!(log.contains("DEBUG") || log.contains("INFO"), "the log was captured: {log}");
    for m in markers.iter().chain([&key.as_str(), &token.as_str()]) {
        assert!(!log.contains(m), "the server log contains a secret: {m}");
    }
}
