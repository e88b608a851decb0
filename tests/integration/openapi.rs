//! The OpenAPI document tells the truth: schemathesis generates requests from it (valid and
//! invalid ones) against a seeded server and checks every answer's status, content type and
//! schema against what the document promises.

use std::time::Instant;

use serde_json::json;

use crate::support::schemathesis::{self, Seeded};
use crate::support::{Server, define_with};

#[test]
fn the_document_matches_the_server() {
    assert!(
        schemathesis::installed(),
        "schemathesis is not installed: pip install schemathesis=={} (scripts/test does)",
        schemathesis::VERSION
    );
    let s = Server::start();
    assert!(s.base.starts_with("http://127.0.0.1:"), "schemathesis only runs against this machine");
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "support bot");
    s.create_agent(&ws, "billing bot");
    s.create_secret(&ws, "stripe_key", json!("sk_test_1"), &[&agent]);
    s.create_secret(&ws, "db", json!({"user": "app", "password": "pw"}), &[&agent]);
    let (key_id, _) = s.create_key(&ws, json!("all"));
    define_with(
        &s,
        &ws,
        &agent,
        json!({"name": "greet", "description": "greets someone", "code": "def greet(conv, who=''):\n    return 'hi ' + who\n",
            "parameters": [{"name": "who", "type": "string"}]}),
    );

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = schemathesis::run(
        dir.path(),
        &s.base,
        &s.admin,
        &Seeded { ws: &ws, agent: &agent, key_id: &key_id, secret: "stripe_key", function: "greet" },
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found the document and the server disagree:\n{stdout}\n{stderr}");
    eprintln!("schemathesis ran for {:.0} s", started.elapsed().as_secs_f64());
    // It did test the API, not an empty document.
    assert!(stdout.contains("/api/v1/workspaces/{ws}/secrets"), "{stdout}");
}
