//! The OpenAPI document tells the truth: schemathesis generates requests from it (valid and
//! invalid ones) against a seeded server and checks every answer's status, content type and
//! schema against what the document promises.

use std::time::Instant;

use serde_json::json;

use crate::support::schemathesis::{self, Seeded};
use crate::support::{Options, Server, define_with, with_admin};

#[test]
fn the_document_matches_the_server() {
    assert!(
        schemathesis::installed(),
        "schemathesis is not installed: pip install schemathesis=={} (scripts/test does)",
        schemathesis::VERSION
    );
    // A signed-up admin: its token (the bootstrap token, now its personal token) also reaches
    // the /me routes.
    let (s, _data) = with_admin(Options::default());
    assert!(s.base.starts_with("http://127.0.0.1:"), "schemathesis only runs against this machine");
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "support bot");
    s.create_agent(&ws, "billing bot");
    s.create_secret(&ws, "stripe_key", json!("sk_test_1"), &[&agent]);
    s.create_secret(&ws, "db", json!({"user": "app", "password": "pw"}), &[&agent]);
    let (key_id, key_token) = s.create_key(&ws, json!("all"));
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
        &Seeded {
            ws: &ws,
            agent: &agent,
            key_id: &key_id,
            key_token: &key_token,
            secret: "stripe_key",
            function: "greet",
        },
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found the document and the server disagree:\n{stdout}\n{stderr}");
    let summary: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("WARNINGS") && !l.contains("SUMMARY")).collect();
    eprintln!("schemathesis ran for {:.0} s\n{}", started.elapsed().as_secs_f64(), summary.join("\n"));
    // It did test the API, not an empty document: its summary counts the operations it tested
    // (which operations a run names elsewhere depends on what it generated).
    let tested: usize = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of tested operations in:\n{stdout}"));
    assert!(tested >= 40, "schemathesis tested only {tested} operations:\n{stdout}");
}

/// What a client reads in the document is what the server does.
#[test]
fn the_document_describes_values_filters_and_public_routes() {
    let s = Server::start();
    let doc = s.request("GET", "/api/v1/openapi.json", None, None).expect(200).clone();
    let schemas = &doc["components"]["schemas"];

    // A secret value is a string or an object of strings, not serde's {"Single": ...}.
    let value = &schemas["SecretValue"]["oneOf"];
    assert_eq!(value[0]["type"], "string", "{value}");
    assert_eq!(value[1]["type"], "object", "{value}");
    assert_eq!(value[1]["additionalProperties"]["type"], "string", "{value}");
    assert!(!doc.to_string().contains("\"Single\""), "the tagged form is gone");
    // ... and what a client sends after reading it is a single value.
    let ws = s.default_ws();
    let created = s.create_secret(&ws, "api_token", json!("x"), &[]);
    assert_eq!(created["type"], "single");

    // An invocation's result is a string, an object or null; a conversation's state may be null.
    assert_eq!(schemas["InvokeResult"]["type"], json!(["string", "object", "null"]));
    assert_eq!(schemas["ConversationIn"]["properties"]["state"]["type"], json!(["object", "null"]));
    assert!(schemas["ConversationIn"]["required"].is_null());
    assert_eq!(schemas["CreateFunction"]["properties"]["timeout_ms"]["minimum"], 100);
    assert_eq!(schemas["CreateFunction"]["properties"]["timeout_ms"]["maximum"], 60_000);
    assert_eq!(schemas["CreateSecret"]["properties"]["name"]["pattern"], "^[a-z][a-z0-9_]{0,63}$");

    // The audit filters are optional query parameters; limit is 1–500.
    let audit = &doc["paths"]["/api/v1/workspaces/{ws}/audit"]["get"];
    let params = audit["parameters"].as_array().unwrap();
    for name in ["action", "secret", "agent", "actor", "outcome", "since", "until", "cursor", "limit"] {
        let p = params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name} is not documented"));
        assert_eq!((p["in"].as_str(), p["required"].as_bool()), (Some("query"), Some(false)), "{p}");
    }
    let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!((limit["schema"]["minimum"].as_u64(), limit["schema"]["maximum"].as_u64()), (Some(1), Some(500)));

    // Operations need no token, or document the 401 of a missing one.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let public = op["security"] == json!([{}]);
            if ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"].contains(&path.as_str()) {
                assert!(public, "{method} {path} needs no token");
                continue;
            }
            if !public {
                assert!(op["responses"]["401"].is_object(), "{method} {path} does not document its 401");
                let r = s.request(&method.to_uppercase(), &path.replace("{ws}", &ws), None, None);
                assert_eq!(r.status, 401, "{method} {path} without a token: {}", r.text);
            }
            if path.starts_with("/api/v1/workspaces/{ws}") {
                assert!(op["responses"]["404"].is_object(), "{method} {path} does not document workspace_not_found");
            }
            if op["requestBody"].is_object() && path.starts_with("/api/") {
                for status in ["400", "413", "415"] {
                    assert!(op["responses"][status].is_object(), "{method} {path} does not document {status}");
                }
            }
        }
    }
}

/// A JSON body declared in another character set is refused, not misread as UTF-8.
#[test]
fn json_in_another_charset_is_refused_with_415() {
    let s = Server::start();
    let ws = s.default_ws();
    let path = format!("/api/v1/workspaces/{ws}/agents");
    let r = s.post_raw(&path, &[("Content-Type", "application/json; charset=utf-16")], r#"{"name": "bot"}"#);
    r.expect_error(415, "unsupported_media_type");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("UTF-8"), "{}", r.text);
    // Nothing was created; UTF-8, said or implied, is read.
    assert_eq!(s.get(&path).expect(200)["items"].as_array().unwrap().len(), 0);
    s.post_raw(&path, &[("Content-Type", "application/json; charset=UTF-8")], r#"{"name": "bot"}"#).expect(201);
    s.post_raw(&path, &[("Content-Type", "application/json")], r#"{"name": "bot 2"}"#).expect(201);
}

/// The first-run form answers a body it cannot read with its page, not a plain-text rejection.
#[test]
fn the_setup_form_answers_unreadable_bodies_with_its_page() {
    let s = Server::start();
    let form = "setup_code=x&email=a%40example.com&email=b%40example.com&password=p";
    let dup = s.post_raw("/setup", &[("Content-Type", "application/x-www-form-urlencoded")], form);
    assert_eq!(dup.status, 400, "{}", dup.text);
    assert!(dup.header("content-type").unwrap().starts_with("text/html"), "{:?}", dup.headers);
    assert!(dup.text.contains("could not be read"), "{}", dup.text);
    let json = s.post_raw("/setup", &[("Content-Type", "application/json")], r#"{"email": "a@example.com"}"#);
    assert_eq!(json.status, 415, "{}", json.text);
    assert!(json.header("content-type").unwrap().starts_with("text/html"), "{:?}", json.headers);
    assert!(!dup.text.contains("Failed to deserialize") && !json.text.contains("Form requests must have"));
}
