//! Agents and API keys over the management API.

use serde_json::json;

use crate::support::Server;

#[test]
fn agents_are_created_renamed_listed_and_deleted() {
    let s = Server::start();
    let ws = s.default_ws();
    let base = format!("/api/v1/workspaces/{ws}/agents");
    let a = s.post(&base, json!({"name": "  Support bot ", "description": "answers the phone"}));
    let id = a.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["name"], "Support bot");
    s.post(&base, json!({"name": "Support bot"})).expect_error(409, "agent_exists");
    s.post(&base, json!({"name": "   "})).expect_error(400, "invalid_input");
    s.post(&base, json!({"name": "x".repeat(101)})).expect_error(400, "invalid_input");
    s.post(&base, json!({"nom": "typo"})).expect_error(400, "invalid_input");
    let b = s.create_agent(&ws, "Billing bot");

    let renamed = s.patch(&format!("{base}/{id}"), json!({"name": "Front desk"}));
    assert_eq!(renamed.expect(200)["name"], "Front desk");
    assert_eq!(renamed.body["description"], "answers the phone");
    s.patch(&format!("{base}/{id}"), json!({"name": "Billing bot"})).expect_error(409, "agent_exists");
    s.patch(&format!("{base}/{id}"), json!({})).expect_error(400, "invalid_input");
    let names: Vec<_> =
        s.get(&base).expect(200)["items"].as_array().unwrap().iter().map(|a| a["name"].clone()).collect();
    assert_eq!(names, vec![json!("Billing bot"), json!("Front desk")]);
    assert_eq!(s.get(&format!("{base}/{id}")).expect(200)["name"], "Front desk");
    s.get(&format!("{base}/agt_00000000000000000000")).expect_error(404, "agent_not_found");
    s.get(&format!("{base}/garbage")).expect_error(404, "agent_not_found");

    // Deleting an agent removes its grants and its place in key scopes.
    s.create_secret(&ws, "shared", json!("v"), &[&id, &b]);
    let (_, key) = s.create_key(&ws, json!([id]));
    s.read(&key, &id, "shared").expect(200);
    s.delete(&format!("{base}/{id}")).expect(204);
    s.delete(&format!("{base}/{id}")).expect_error(404, "agent_not_found");
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/secrets/shared")).body["agents"], json!([b]));
    s.read(&key, &id, "shared").expect_error(403, "missing_access");
    let keys = s.get(&format!("/api/v1/workspaces/{ws}/api-keys"));
    assert_eq!(keys.expect(200)["items"][0]["agents"], json!([]));
}

#[test]
fn api_keys_are_shown_once_scoped_and_revocable() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "a");
    let base = format!("/api/v1/workspaces/{ws}/api-keys");
    let created = s.post(&base, json!({"name": "ci", "agents": [a], "expires_at": "2999-01-01T00:00:00Z"}));
    let c = created.expect(201).clone();
    let token = c["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("avk_") && token.len() > 40);
    assert!(token.starts_with(c["prefix"].as_str().unwrap()));
    assert_eq!(c["status"], "active");
    assert_eq!(c["expires_at"], "2999-01-01T00:00:00.000Z");
    let id = c["id"].as_str().unwrap();

    let list = s.get(&base);
    assert!(!list.text.contains(&token), "tokens are shown once");
    assert_eq!(list.expect(200)["items"][0]["last_used_at"], serde_json::Value::Null);
    s.create_secret(&ws, "k", json!("v"), &[&a]);
    s.read(&token, &a, "k").expect(200);
    let got = s.get(&format!("{base}/{id}"));
    assert!(got.expect(200)["last_used_at"].is_string(), "last use is recorded: {}", got.text);
    assert!(!got.text.contains(&token));

    for (body, field) in [
        (json!({"name": "x", "agents": []}), "agents"),
        (json!({"name": "x", "agents": "some"}), "agents"),
        (json!({"name": "x", "agents": ["bad"]}), "agents"),
        (json!({"name": "", "agents": "all"}), "name"),
        (json!({"name": "x", "agents": "all", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "x", "agents": "all", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let r = s.post(&base, body.clone());
        r.expect_error(400, "invalid_input");
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
    s.post(&base, json!({"name": "x", "agents": ["agt_00000000000000000000"]})).expect_error(422, "unknown_agent");
    assert_eq!(s.get(&base).body["items"].as_array().unwrap().len(), 1, "refused keys are not stored");

    let revoked = s.delete(&format!("{base}/{id}"));
    assert_eq!(revoked.expect(200)["status"], "revoked");
    s.read(&token, &a, "k").expect_error(401, "unauthenticated");
    s.delete(&format!("{base}/{id}")).expect(200);
    s.delete(&format!("{base}/key_00000000000000000000")).expect_error(404, "api_key_not_found");
    assert_eq!(s.audit(&ws, "action=api_key.revoke").len(), 2);
}
