//! Health, readiness, metrics, the OpenAPI document, and unknown routes.

use serde_json::json;

use crate::support::Server;

#[test]
fn operations_endpoints_answer() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "k", json!("v"), &[&a]);
    let (_, key) = s.create_key(&ws, json!("all"));
    s.read(&key, &a, "k").expect(200);
    s.read(&key, &a, "nope").expect(404);

    let health = s.request("GET", "/healthz", None, None);
    assert_eq!((health.status, health.text.trim()), (200, "ok"));
    let ready = s.request("GET", "/readyz", None, None);
    assert_eq!((ready.status, ready.text.trim()), (200, "ready"));

    let metrics = s.request("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    for line in [
        "agentvault_secret_reads_total{outcome=\"allowed\"} 1",
        "agentvault_secret_reads_total{outcome=\"not_found\"} 1",
        "agentvault_secrets 1",
        "agentvault_agents 1",
    ] {
        assert!(metrics.text.contains(line), "missing {line} in\n{}", metrics.text);
    }
    assert!(metrics.text.contains("agentvault_audit_records_total"));
    assert!(
        metrics.text.contains("route=\"/api/v1/agents/{agent_id}/secrets/{name}\",status=\"200\""),
        "{}",
        metrics.text
    );

    let doc = s.request("GET", "/api/v1/openapi.json", None, None);
    let paths = doc.expect(200)["paths"].as_object().unwrap().clone();
    for (path, methods) in [
        ("/api/v1/workspaces", vec!["get", "post"]),
        ("/api/v1/workspaces/{ws}/agents", vec!["get", "post"]),
        ("/api/v1/workspaces/{ws}/agents/{agent_id}", vec!["get", "patch", "delete"]),
        ("/api/v1/workspaces/{ws}/agents/{agent_id}/secrets", vec!["get"]),
        ("/api/v1/workspaces/{ws}/secrets", vec!["get", "post"]),
        ("/api/v1/workspaces/{ws}/secrets/{name}", vec!["get", "patch", "delete"]),
        ("/api/v1/workspaces/{ws}/secrets/{name}/access", vec!["put"]),
        ("/api/v1/workspaces/{ws}/secrets/{name}/reveal", vec!["post"]),
        ("/api/v1/workspaces/{ws}/secrets/{name}/versions", vec!["get"]),
        ("/api/v1/workspaces/{ws}/api-keys", vec!["get", "post"]),
        ("/api/v1/workspaces/{ws}/api-keys/{key_id}", vec!["get", "delete"]),
        ("/api/v1/workspaces/{ws}/audit", vec!["get"]),
        ("/api/v1/agents/{agent_id}/secrets/{name}", vec!["get"]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
        for m in methods {
            assert!(item.get(m).is_some(), "{m} {path} is not documented");
        }
    }
    assert!(doc.text.contains("\"bearer\""), "the bearer scheme is documented");

    s.get("/api/v1/nothing-here").expect_error(404, "no_route");
    let r = s.request("PUT", "/api/v1/workspaces", Some(&s.admin), Some(&json!({})));
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "invalid_input");
}

#[test]
fn agent_secrets_listing_shows_metadata_and_snippets_only() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    let b = s.create_agent(&ws, "other");
    s.post(
        &format!("/api/v1/workspaces/{ws}/secrets"),
        json!({"name": "stripe_api_key", "description": "Stripe", "value": "sk_test_LISTING", "agents": [a],
            "values": {"live": "sk_live_LISTING"}, "protected": true}),
    )
    .expect(201);
    s.create_secret(&ws, "oauth", json!({"client_id": "i", "client_secret": "LISTINGKV"}), &[&a, &b]);
    s.create_secret(&ws, "not_granted", json!("x"), &[&b]);
    let r = s.get(&format!("/api/v1/workspaces/{ws}/agents/{a}/secrets"));
    assert_eq!(
        r.expect(200)["items"],
        json!([
            {"name": "oauth", "description": "", "type": "kv", "keys": ["client_id", "client_secret"], "snippet": "conv.utils.get_secret('oauth')", "injected_only": false, "hosts": [], "environments": [], "protected": false},
            {"name": "stripe_api_key", "description": "Stripe", "type": "single", "snippet": "conv.utils.get_secret('stripe_api_key')", "injected_only": false, "hosts": [], "environments": ["live"], "protected": true},
        ])
    );
    assert!(!r.text.contains("LISTING"));
}
